package lock_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

func TestParseSchedule(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string // FormatSchedule of the result, or "" for an error
	}{
		{"", "double"}, {"double", "double"}, {"1", "1"}, {"1,2,5,max", "1,2,5,max"}, {" 1 , 3 ", "1,3"},
		{"max", "max"}, {"0", ""}, {"-1", ""}, {"1,max,2", ""}, {"1,,2", ""}, {"a", ""}, {"+1", ""},
		{"1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33", ""},
	} {
		got, err := schema.ParseSchedule(tt.in)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("ParseSchedule(%q) = %v, want an error", tt.in, got)
		case tt.want != "" && err != nil:
			t.Errorf("ParseSchedule(%q): %v", tt.in, err)
		case tt.want != "" && schema.FormatSchedule(got) != tt.want:
			t.Errorf("ParseSchedule(%q) = %s, want %s", tt.in, schema.FormatSchedule(got), tt.want)
		}
	}
}

func TestPolicySizeAndJSON(t *testing.T) {
	sched, _ := schema.ParseSchedule("1,2,5,max")
	p := schema.Policy{Schedule: sched, Bake: 15 * time.Minute, Failures: 2, After: "staging/web"}
	for step, want := range []int{1, 2, 5, -1, -1} {
		if got := p.Size(step); got != want {
			t.Errorf("step %d: size %d, want %d", step, got, want)
		}
	}
	for step, want := range []int{1, 2, 4, 8} {
		if got := schema.DefaultPolicy.Size(step); got != want {
			t.Errorf("doubling step %d: size %d, want %d", step, got, want)
		}
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"schedule":"1,2,5,max","bake":"15m0s","failures":2,"after":"staging/web"}` {
		t.Errorf("stored as %s", b)
	}
	var back schema.Policy
	if err := json.Unmarshal(b, &back); err != nil || back.Bake != p.Bake || back.Failures != 2 || schema.FormatSchedule(back.Schedule) != "1,2,5,max" {
		t.Errorf("read back %+v, %v", back, err)
	}
	for _, bad := range []string{`{"schedule":"0","failures":1}`, `{"schedule":"1","failures":0}`, `{"schedule":"1","failures":1,"bake":"soon"}`, `{"schedule":"1","failures":1,"after":"web"}`} {
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Errorf("%s: read as %+v, want an error", bad, back)
		}
	}
}

// mover takes a slot for holder as a mover to rev, or says why not.
func mover(t *testing.T, s *lock.Semaphore, holder, run, rev string, wait time.Duration) (*lock.Slot, error) {
	t.Helper()
	r := req(holder, run)
	r.Revision = rev
	if wait > 0 {
		r.WaitUntil = time.Now().Add(wait)
	}
	return s.Acquire(testkit.Ctx(t), r)
}

func rollout(t *testing.T, s *lock.Semaphore) schema.Rollout {
	t.Helper()
	snap, err := s.Read(testkit.Ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	return snap.Rollout
}

// TestRolloutCanaryBatchesHalt walks one revision through the default schedule against a
// real Consul: the canary alone, then two, a failure that halts it, the exits that follow,
// re-entry, resume at the canary, and a newer revision that supersedes it.
func TestRolloutCanaryBatchesHalt(t *testing.T) {
	s := newSem(t, 10)
	canary, err := mover(t, s, "web-1", "r1", "B", 0)
	if err != nil || canary.Batch == nil || *canary.Batch != 0 {
		t.Fatalf("canary: %+v, %v", canary, err)
	}
	if _, err := mover(t, s, "web-2", "r2", "B", 0); !errors.Is(err, lock.ErrHeldBack) {
		t.Fatalf("second mover during the canary: %v, want ErrHeldBack", err)
	}
	// A run without a revision is not limited by the rollout.
	if _, err := s.Acquire(testkit.Ctx(t), req("web-9", "r9")); err != nil {
		t.Fatalf("run without revision: %v", err)
	}
	if err := s.Release(testkit.Ctx(t), canary); err != nil {
		t.Fatal(err)
	}
	if r := rollout(t, s); r.Revision != "B" || r.Successes != 1 || r.Succeeded != 1 || r.Step != 0 {
		t.Fatalf("after the canary: %+v", r)
	}
	// Step 1 admits two.
	a, err := mover(t, s, "web-2", "r2b", "B", 0)
	if err != nil || *a.Batch != 1 {
		t.Fatalf("web-2: %+v, %v", a, err)
	}
	b, err := mover(t, s, "web-3", "r3", "B", 0)
	if err != nil || *b.Batch != 1 {
		t.Fatalf("web-3: %+v, %v", b, err)
	}
	if _, err := mover(t, s, "web-4", "r4", "B", 0); !errors.Is(err, lock.ErrHeldBack) {
		t.Fatalf("third mover of step 1: %v, want ErrHeldBack", err)
	}
	// web-1 is on B: its re-runs need only a slot.
	again, err := mover(t, s, "web-1", "r1b", "B", 0)
	if err != nil || again.Batch != nil {
		t.Fatalf("web-1 re-run on B: %+v, %v", again, err)
	}
	if err := s.Release(testkit.Ctx(t), again); err != nil {
		t.Fatal(err)
	}
	// A failure halts B (limit 1).
	if err := s.MarkFailed(testkit.Ctx(t), b, 3); err != nil {
		t.Fatal(err)
	}
	r := rollout(t, s)
	if !r.Halted() || r.Failures != 1 || len(r.Failed) != 1 || r.Failed[0].Holder != "web-3" || *r.Failed[0].ExitCode != 3 {
		t.Fatalf("after the failure: %+v", r)
	}
	_, err = mover(t, s, "web-4", "r4b", "B", 0)
	if !errors.Is(err, lock.ErrHalted) || !strings.Contains(err.Error(), "web-3 failed it with exit 3") {
		t.Fatalf("mover after the halt: %v, want ErrHalted naming web-3 and exit 3", err)
	}
	// The failed host may re-enter, with any revision.
	re, err := mover(t, s, "web-3", "r3b", "B", 0)
	if err != nil || !re.Reentered {
		t.Fatalf("re-entry of the failed host: %+v, %v", re, err)
	}
	// web-2 of step 1 still succeeds; B stays halted.
	if err := s.Release(testkit.Ctx(t), a); err != nil {
		t.Fatal(err)
	}
	if r := rollout(t, s); !r.Halted() || r.Successes != 2 {
		t.Fatalf("halted B after web-2's success: %+v", r)
	}
	// Resume: the schedule starts again at the canary.
	if _, err := s.Steer(testkit.Ctx(t), lock.SteerResume, "B"); err != nil {
		t.Fatal(err)
	}
	c2, err := mover(t, s, "web-4", "r4c", "B", 0)
	if err != nil || *c2.Batch != 0 {
		t.Fatalf("canary after resume: %+v, %v", c2, err)
	}
	if _, err := mover(t, s, "web-5", "r5", "B", 0); !errors.Is(err, lock.ErrHeldBack) {
		t.Fatalf("second mover after resume: %v, want ErrHeldBack", err)
	}
	// A newer revision supersedes B and starts at its own canary.
	c, err := mover(t, s, "web-6", "r6", "C", 0)
	if err != nil || *c.Batch != 0 {
		t.Fatalf("canary of C: %+v, %v", c, err)
	}
	r = rollout(t, s)
	if r.Revision != "C" || len(r.Past) != 1 || r.Past[0].Revision != "B" || r.Past[0].Completed {
		t.Fatalf("after C: %+v", r)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// TestRolloutWaitersAreHandedTheNextStep: movers held back by the canary wait in line; the
// canary's release hands the slots of step 1 to two of them in its own transaction, and a
// host already on the revision is not queued behind the others.
func TestRolloutWaitersAreHandedTheNextStep(t *testing.T) {
	s := newSem(t, 10)
	canary := canaryOf(t, s)
	type got struct {
		slot *lock.Slot
		err  error
	}
	done := make(chan got, 3)
	for _, h := range []string{"web-2", "web-3", "web-4"} {
		go func() {
			slot, err := mover(t, s, h, "r-"+h, "B", 20*time.Second)
			done <- got{slot, err}
		}()
	}
	waitQueue(t, s, 3)
	if err := s.Release(testkit.Ctx(t), canary); err != nil {
		t.Fatal(err)
	}
	var admitted []*lock.Slot
	for range 2 {
		select {
		case g := <-done:
			if g.err != nil {
				t.Fatal(g.err)
			}
			admitted = append(admitted, g.slot)
		case <-time.After(15 * time.Second):
			t.Fatal("step 1 not handed over")
		}
	}
	for _, a := range admitted {
		if a.Batch == nil || *a.Batch != 1 {
			t.Errorf("%s: batch %v, want 1", a.Holder, a.Batch)
		}
	}
	// The third waits for step 2; web-1, on B, goes ahead of it.
	again, err := mover(t, s, "web-1", "r1b", "B", 0)
	if err != nil {
		t.Fatalf("web-1 on B behind a held-back mover: %v", err)
	}
	for _, slot := range append(admitted, again) {
		if err := s.Release(testkit.Ctx(t), slot); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case g := <-done:
		if g.err != nil || *g.slot.Batch != 2 {
			t.Fatalf("the third mover: %+v, %v", g.slot, g.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("step 2 not handed over")
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// canaryOf is web-1's slot as the canary of revision B in s's tier.
func canaryOf(t *testing.T, s *lock.Semaphore) *lock.Slot {
	t.Helper()
	canary, err := mover(t, s, "web-1", "r1", "B", 0)
	if err != nil {
		t.Fatal(err)
	}
	return canary
}

// canaryDone returns a semaphore of a tier under policy p where web-1, the canary of B, has
// just succeeded: B's next step bakes for p.Bake.
func canaryDone(t *testing.T, p schema.Policy) *lock.Semaphore {
	t.Helper()
	s := newSem(t, 10)
	if _, err := s.SetPolicy(testkit.Ctx(t), p); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(testkit.Ctx(t), canaryOf(t, s)); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRolloutPolicyBakeAndPromote: a stored schedule and bake; promote opens the next step
// at once, promote --full ends the schedule.
func TestRolloutPolicyBakeAndPromote(t *testing.T) {
	s := canaryDone(t, schema.Policy{Schedule: []int{1, 3, 0}, Bake: time.Hour, Failures: 2})
	if _, err := mover(t, s, "web-2", "r2", "B", 0); !errors.Is(err, lock.ErrHeldBack) || !strings.Contains(err.Error(), "bakes until") {
		t.Fatalf("during the bake: %v, want ErrHeldBack saying it bakes", err)
	}
	if _, err := s.Steer(testkit.Ctx(t), lock.SteerPromote, "B"); err != nil {
		t.Fatal(err)
	}
	var held []*lock.Slot
	for _, h := range []string{"web-2", "web-3", "web-4"} {
		slot, err := mover(t, s, h, "r-"+h, "B", 0)
		if err != nil || *slot.Batch != 1 {
			t.Fatalf("%s in step 1 (3 hosts): %+v, %v", h, slot, err)
		}
		held = append(held, slot)
	}
	if _, err := mover(t, s, "web-5", "r5", "B", 0); !errors.Is(err, lock.ErrHeldBack) {
		t.Fatalf("fourth mover of step 1: %v", err)
	}
	// One failure of two allowed: not halted, and its place goes to another mover.
	if err := s.MarkFailed(testkit.Ctx(t), held[0], 1); err != nil {
		t.Fatal(err)
	}
	if r := rollout(t, s); r.Halted() || r.Failures != 1 {
		t.Fatalf("after one failure of two: %+v", r)
	}
	if _, err := mover(t, s, "web-5", "r5b", "B", 0); err != nil {
		t.Fatalf("the failed mover's place: %v", err)
	}
	if _, err := s.Steer(testkit.Ctx(t), lock.SteerPromoteFull, "B"); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"web-6", "web-7"} {
		if _, err := mover(t, s, h, "r-"+h, "B", 0); err != nil {
			t.Fatalf("%s after promote --full: %v", h, err)
		}
	}
	if _, err := s.Steer(testkit.Ctx(t), lock.SteerResume, "B"); !errors.Is(err, lock.ErrSteer) {
		t.Errorf("resume of a revision that is not halted: %v, want ErrSteer", err)
	}
	// Halted by hand after a failure: the movers are told it was an operator.
	if _, err := s.Steer(testkit.Ctx(t), lock.SteerHalt, "B"); err != nil {
		t.Fatal(err)
	}
	if _, err := mover(t, s, "web-8", "r8", "B", 0); !errors.Is(err, lock.ErrHalted) || !strings.Contains(err.Error(), "by an operator") {
		t.Fatalf("after rollout halt: %v, want ErrHalted by an operator", err)
	}
	// Forgotten, B starts afresh at its canary (the record stays readable).
	if _, err := s.Steer(testkit.Ctx(t), lock.SteerForget, "B"); err != nil {
		t.Fatal(err)
	}
	if r := rollout(t, s); r.Revision != "" {
		t.Fatalf("after forget: %+v", r)
	}
	if c, err := mover(t, s, "web-8", "r8b", "B", 0); err != nil || *c.Batch != 0 {
		t.Fatalf("B after forget: %+v, %v", c, err)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// TestRolloutBakeEndAdmitsTheWaitingMover: a mover the bake holds back, waiting in line, takes
// its slot when the bake ends, not at its watch's safety net a minute later (nobody writes
// when a bake ends).
func TestRolloutBakeEndAdmitsTheWaitingMover(t *testing.T) {
	const bake = 2 * time.Second
	s := canaryDone(t, schema.Policy{Schedule: []int{1, 0}, Bake: bake, Failures: 1})
	baked := time.Now().Add(bake)
	slot, err := mover(t, s, "web-2", "r2", "B", 30*time.Second)
	if err != nil {
		t.Fatalf("the mover that waited out the bake: %v", err)
	}
	if late := time.Since(baked); late > 5*time.Second {
		t.Errorf("the mover took its slot %s after the bake ended, want within moments", late.Round(time.Millisecond))
	}
	if slot.Batch == nil || *slot.Batch != 1 {
		t.Errorf("the mover's step: %v, want 1", slot.Batch)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// TestRolloutAfterAnotherTier: with after: staging/web, a revision starts in prod/web only
// once it has completed in staging/web; the first prod mover records that, so the others
// need not look again.
func TestRolloutAfterAnotherTier(t *testing.T) {
	newTier := func(name string) *lock.Semaphore {
		s, err := lock.New(agent.Client(t).KV(), lock.Options{Prefix: testkit.Prefix(t), Tier: name, DefaultMax: 10, Sessions: agent.Client(t).Session()})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	staging, prod := newTier("staging/web"), newTier("prod/web")
	if _, err := prod.SetPolicy(testkit.Ctx(t), schema.Policy{Failures: 1, After: "staging/web"}); err != nil {
		t.Fatal(err)
	}
	if _, err := mover(t, prod, "prod-1", "p1", "B", 0); !errors.Is(err, lock.ErrHeldBack) || !strings.Contains(err.Error(), "has not completed in staging/web") {
		t.Fatalf("prod before staging: %v, want ErrHeldBack naming staging/web", err)
	}
	s1, err := mover(t, staging, "stg-1", "s1", "B", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mover(t, prod, "prod-1", "p1b", "B", 0); !errors.Is(err, lock.ErrHeldBack) {
		t.Fatalf("prod while staging's canary runs: %v", err)
	}
	if err := staging.Release(testkit.Ctx(t), s1); err != nil {
		t.Fatal(err)
	}
	p1, err := mover(t, prod, "prod-1", "p1c", "B", 0)
	if err != nil || *p1.Batch != 0 {
		t.Fatalf("prod after staging completed: %+v, %v", p1, err)
	}
	if r := rollout(t, prod); !r.AfterOK {
		t.Errorf("prod's record does not remember that staging completed B: %+v", r)
	}
}

// TestRolloutHaltWakesWaitingMovers: movers waiting for the canary's step exit at once when
// the canary fails, not at the end of their wait.
func TestRolloutHaltWakesWaitingMovers(t *testing.T) {
	s := newSem(t, 10)
	canary := canaryOf(t, s)
	done := make(chan error, 1)
	go func() {
		_, err := mover(t, s, "web-2", "r2", "B", time.Minute)
		done <- err
	}()
	waitQueue(t, s, 1)
	if err := s.MarkFailed(testkit.Ctx(t), canary, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, lock.ErrHalted) {
			t.Fatalf("waiting mover: %v, want ErrHalted", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting mover was not woken by the halt")
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// A halt wakes every mover of its revision waiting in line, however many: those its own
// transaction has no room for are deleted right after it, not left to their safety nets.
func TestRolloutHaltWakesEveryWaitingMover(t *testing.T) {
	s := newSem(t, 10)
	canary := canaryOf(t, s)
	const n = 150
	base := queueEntries(t, n, `,"revision":"B","mover":true`)
	waitQueue(t, s, n)
	if err := s.MarkFailed(testkit.Ctx(t), canary, 1); err != nil {
		t.Fatal(err)
	}
	if keys := keysUnder(t, base); len(keys) != 0 {
		t.Errorf("%d of %d waiting movers not woken by the halt (first %s)", len(keys), n, keys[0])
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// TestRolloutHaltWakesAMoverThatJoinedMeanwhile: a mover that joins the queue between the
// canary's read and its halting write is not among the movers that write wakes; the write
// reads the tier back and wakes it too, so it exits at once rather than after its watch's
// safety net (a minute). The demo met this: a host waited 63 s for a halt it joined beside.
func TestRolloutHaltWakesAMoverThatJoinedMeanwhile(t *testing.T) {
	s := newSem(t, 10)
	canary := canaryOf(t, s)
	counted := &readCounter{KV: agent.Client(t).KV()}
	sc := newSemOn(t, counted, 10)
	done := make(chan error, 1)
	counted.before = func() {
		go func() {
			_, err := mover(t, s, "web-2", "r2", "B", time.Minute)
			done <- err
		}()
		waitQueue(t, s, 1)
	}
	start := time.Now()
	if err := sc.MarkFailed(testkit.Ctx(t), canary, 1); err != nil {
		t.Fatal(err)
	}
	if counted.before != nil {
		t.Fatal("the mover did not join between the canary's read and its write")
	}
	select {
	case err := <-done:
		if !errors.Is(err, lock.ErrHalted) {
			t.Fatalf("the mover: %v, want ErrHalted", err)
		}
		t.Logf("the mover learnt of the halt %s after it was written", time.Since(start).Round(time.Millisecond))
	case <-time.After(20 * time.Second):
		t.Fatal("the mover that joined during the halting write was not woken by it")
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// TestRolloutRollbackIsNamed: a mover asking for a revision that a newer one superseded
// restarts its rollout (without the canary if it had completed) and is remembered by name,
// for check to report: a rollback, or a host whose checkout is stale.
func TestRolloutRollbackIsNamed(t *testing.T) {
	s := newSem(t, 10)
	a, err := mover(t, s, "web-1", "r1", "A", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release(testkit.Ctx(t), a); err != nil {
		t.Fatal(err)
	}
	b, err := mover(t, s, "web-1", "r2", "B", 0) // A completed: web-1 was the tier's only host
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release(testkit.Ctx(t), b); err != nil {
		t.Fatal(err)
	}
	// web-2, never converged, still on A: a full rollout of A (it had completed), not a canary.
	if _, err := mover(t, s, "web-2", "r3", "A", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := mover(t, s, "web-3", "r4", "A", 0); err != nil {
		t.Fatalf("a second mover of A after the rollback: %v (A had completed: no canary)", err)
	}
	r := rollout(t, s)
	if r.Revision != "A" || !r.Full || len(r.Rollbacks) != 1 || r.Rollbacks[0].Holder != "web-2" || r.Rollbacks[0].From != "B" {
		t.Fatalf("after the rollback: %+v", r)
	}
}

// TestRolloutNewRevisionWaitingIsWoken: a mover to a new revision that finds the tier full
// waits; the release that frees a slot wakes it (a nudge: the hand-over cannot admit it
// without the whole tier), and it supersedes the rollout and takes the slot at once, not at
// its watch's minute.
func TestRolloutNewRevisionWaitingIsWoken(t *testing.T) {
	s := newSem(t, 1)
	c, err := mover(t, s, "web-1", "r1", "A", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release(testkit.Ctx(t), c); err != nil {
		t.Fatal(err)
	}
	h, err := mover(t, s, "web-9", "r9", "A", 0) // A's step 1: fills the tier
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		slot, err := mover(t, s, "web-2", "r2", "B", 30*time.Second)
		if err == nil && (slot.Batch == nil || *slot.Batch != 0) {
			err = errors.New("web-2 is not B's canary")
		}
		done <- err
	}()
	waitQueue(t, s, 1)
	start := time.Now()
	if err := s.Release(testkit.Ctx(t), h); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("web-2 was not woken when the slot was freed")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("web-2 took the slot %s after it was freed", d)
	}
	if r := rollout(t, s); r.Revision != "B" || len(r.Past) != 1 || !r.Past[0].Completed {
		t.Errorf("rollout %+v: want B, with A remembered as completed", r)
	}
}
