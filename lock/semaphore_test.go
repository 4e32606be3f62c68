package lock_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

func TestAcquireRelease(t *testing.T) {
	s := newSem(t, 1)
	slot, err := s.Acquire(testkit.Ctx(t), req("web-1", "r1"))
	if err != nil {
		t.Fatal(err)
	}
	if slot.Attempts != 1 || slot.Reentered || slot.State != schema.StateRunning {
		t.Errorf("slot = %+v, want a fresh running slot", slot)
	}
	snap, err := s.Read(testkit.Ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if snap.Current != 1 || snap.Holders["web-1"].RunID != "r1" || snap.MaxSet || snap.Max != 1 {
		t.Errorf("after acquire: %+v", snap)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
	if err := s.Release(testkit.Ctx(t), slot); err != nil {
		t.Fatal(err)
	}
	if got := values(t); len(got) != 2 || got["current"] != "0" || got["converged/web-1"] == "" {
		t.Errorf("after release: %v, want current=0 and converged/web-1", got)
	}
	// A second release (say, a retry whose first answer was lost) finds its own convergence
	// record where the slot was: done, and nothing more is written.
	before := dump(t)
	if err := s.Release(testkit.Ctx(t), slot); err != nil {
		t.Errorf("second release: %v, want nil (released by this run)", err)
	}
	if after := dump(t); !maps.Equal(before, after) {
		t.Errorf("second release wrote: %v -> %v", before, after)
	}
}

// TestReleaseFreedByOthers: a slot freed by someone else (an operator, the reaper) is not a
// release of this run: ErrNotHeld, and nothing is written, even after the host converged before.
func TestReleaseFreedByOthers(t *testing.T) {
	s := newSem(t, 1)
	first, err := s.Acquire(testkit.Ctx(t), req("web-1", "r1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release(testkit.Ctx(t), first); err != nil {
		t.Fatal(err)
	}
	slot, err := s.Acquire(testkit.Ctx(t), req("web-1", "r2"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ForceRelease(testkit.Ctx(t), "web-1", "r2"); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(testkit.Ctx(t), slot); !errors.Is(err, lock.ErrNotHeld) {
		t.Errorf("release of a slot an operator freed: %v, want ErrNotHeld", err)
	}
	if got := values(t)["converged/web-1"]; !strings.Contains(got, `"run_id":"r1"`) {
		t.Errorf("converged/web-1 = %s, want r1's record untouched", got)
	}
}

// TestAbandon: a fresh slot is freed with no convergence record (nothing ran); a re-entered
// one is marked interrupted; another run's slot, or none, is left alone, so it can be repeated.
func TestAbandon(t *testing.T) {
	s := newSem(t, 2)
	if _, err := s.Acquire(testkit.Ctx(t), req("web-1", "r1")); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.Abandon(testkit.Ctx(t), "web-1", "r1"); err != nil {
			t.Fatal(err)
		}
	}
	if got := values(t); len(got) != 1 || got["current"] != "0" {
		t.Errorf("after abandoning a fresh slot: %v, want only current=0 (no converged/ record)", got)
	}

	failed, err := s.Acquire(testkit.Ctx(t), req("web-2", "r2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.MarkFailed(testkit.Ctx(t), failed, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Acquire(testkit.Ctx(t), req("web-2", "r3")); err != nil {
		t.Fatal(err)
	}
	if err := s.Abandon(testkit.Ctx(t), "web-2", "r2"); err != nil { // an older run: not its slot
		t.Fatal(err)
	}
	if err := s.Abandon(testkit.Ctx(t), "web-2", "r3"); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Read(testkit.Ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if rec := snap.Holders["web-2"]; rec.RunID != "r3" || rec.State != schema.StateInterrupted || rec.Attempts != 2 || snap.Current != 1 {
		t.Errorf("after abandoning a re-entered slot: %+v, current %d; want r3 interrupted, attempt 2, still held", rec, snap.Current)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
	if err := s.Abandon(testkit.Ctx(t), "web 2", "r3"); !errors.Is(err, schema.ErrInvalidName) {
		t.Errorf("abandon with a bad holder name: %v, want ErrInvalidName", err)
	}
}

// TestAbandonWithoutASlotReadsNoLine: a run that gave up waiting holds no slot, and its
// Abandon looks at the slots alone, not at the line (runs give up in numbers when Consul is
// overloaded, and the line is then as long as the burst); a run handed a slot before it
// abandons still hands that slot on to the next in line.
func TestAbandonWithoutASlotReadsNoLine(t *testing.T) {
	s := newSem(t, 1)
	held, err := s.Acquire(testkit.Ctx(t), req("web-0", "r0"))
	if err != nil {
		t.Fatal(err)
	}
	first := waiter(t, s, "web-1", 30*time.Second)
	waitQueue(t, s, 1)
	rec := &txnRecorder{KV: agent.Client(t).KV()}
	quitter := newSemOn(t, rec, 1)
	ctx, cancel := context.WithCancel(testkit.Ctx(t))
	r := req("web-2", "r2")
	r.WaitUntil = time.Now().Add(30 * time.Second)
	gave := make(chan error, 1)
	go func() { _, err := quitter.Acquire(ctx, r); gave <- err }()
	waitQueue(t, s, 2)
	cancel()
	if err := <-gave; !errors.Is(err, context.Canceled) {
		t.Fatalf("the cancelled Acquire: %v, want context.Canceled", err)
	}
	before := rec.lineReads()
	if err := quitter.Abandon(testkit.Ctx(t), "web-2", "r2"); err != nil {
		t.Fatal(err)
	}
	if n := rec.lineReads() - before; n != 0 {
		t.Errorf("Abandon of a run that holds no slot read the line %d times", n)
	}
	waitQueue(t, s, 1)

	// web-1 is handed web-0's slot, and abandons it: the slot goes on, to nobody waiting.
	if err := s.Release(testkit.Ctx(t), held); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-first:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("web-1 was not handed the slot")
	}
	next := waiter(t, s, "web-3", 30*time.Second)
	waitQueue(t, s, 1)
	if err := s.Abandon(testkit.Ctx(t), "web-1", "run-web-1"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-next:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the slot web-1 abandoned was not handed to web-3")
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

func TestAcquireIsIdempotentPerRun(t *testing.T) {
	s := newSem(t, 2)
	a, err := s.Acquire(testkit.Ctx(t), req("web-1", "r1"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Acquire(testkit.Ctx(t), req("web-1", "r1"))
	if err != nil {
		t.Fatal(err)
	}
	if a.StartedAt != b.StartedAt || b.Attempts != 1 {
		t.Errorf("repeat acquire changed the slot: %+v then %+v", a, b)
	}
	if v := values(t); v["current"] != "1" {
		t.Errorf("repeat acquire took a second slot: %v", v)
	}
}

func TestFullTierWaitsThenNoSlot(t *testing.T) {
	s := newSem(t, 1)
	if _, err := s.Acquire(testkit.Ctx(t), req("web-1", "r1")); err != nil {
		t.Fatal(err)
	}
	before := dump(t)
	r := req("web-2", "r2")
	r.WaitUntil = time.Now().Add(700 * time.Millisecond)
	waited := 0
	r.Waiting = func(*lock.Snapshot) { waited++ }
	start := time.Now()
	_, err := s.Acquire(testkit.Ctx(t), r)
	if !errors.Is(err, lock.ErrNoSlot) {
		t.Fatalf("acquire on a full tier: %v, want ErrNoSlot", err)
	}
	if d := time.Since(start); d < 600*time.Millisecond {
		t.Errorf("gave up after %v, before the wait ended", d)
	}
	if waited == 0 {
		t.Error("Waiting was never called")
	}
	if after := dump(t); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("a waiter that gave up wrote to Consul:\nbefore %v\nafter  %v", before, after)
	}
}

func TestWaiterGetsSlotWhenReleased(t *testing.T) {
	s := newSem(t, 1)
	first, err := s.Acquire(testkit.Ctx(t), req("web-1", "r1"))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		r := req("web-2", "r2")
		r.WaitUntil = time.Now().Add(20 * time.Second)
		_, err := s.Acquire(testkit.Ctx(t), r)
		got <- err
	}()
	// Release once web-2 waits in line (its entry is there), not after a guessed sleep.
	testkit.Eventually(t, "web-2 to join the queue", func() bool {
		snap, err := s.Read(testkit.Ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		return len(snap.Queue) == 1 && snap.Queue[0].Holder == "web-2"
	})
	if err := s.Release(testkit.Ctx(t), first); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter not admitted after release")
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

func TestDisabledWritesNothing(t *testing.T) {
	s := newSem(t, 1)
	put(t, "max_concurrent", "0")
	before := dump(t)
	if _, err := s.Acquire(testkit.Ctx(t), req("web-1", "r1")); !errors.Is(err, lock.ErrDisabled) {
		t.Fatalf("acquire on a disabled tier: %v", err)
	}
	if after := dump(t); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("wrote to a disabled tier: %v -> %v", before, after)
	}
}

func TestDefaultMaxZeroDisables(t *testing.T) {
	s := newSem(t, 0)
	if _, err := s.Acquire(testkit.Ctx(t), req("web-1", "r1")); !errors.Is(err, lock.ErrDisabled) {
		t.Fatalf("acquire with default max 0: %v", err)
	}
}

func TestDisabledWinsOverReentry(t *testing.T) {
	s := newSem(t, 1)
	slot, err := s.Acquire(testkit.Ctx(t), req("web-1", "r1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.MarkFailed(testkit.Ctx(t), slot, 1); err != nil {
		t.Fatal(err)
	}
	put(t, "max_concurrent", "0")
	if _, err := s.Acquire(testkit.Ctx(t), req("web-1", "r2")); !errors.Is(err, lock.ErrDisabled) {
		t.Fatalf("re-entry into a disabled tier: %v", err)
	}
}

func TestUnlimited(t *testing.T) {
	s := newSem(t, 1)
	put(t, "max_concurrent", "-1")
	for i := range 20 {
		if _, err := s.Acquire(testkit.Ctx(t), req(fmt.Sprintf("web-%d", i), "r")); err != nil {
			t.Fatal(err)
		}
	}
	if v := values(t); v["current"] != "20" {
		t.Errorf("current = %q, want 20", v["current"])
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

func TestFailedHoldsAndReentryReleases(t *testing.T) {
	s := newSem(t, 1)
	slot, err := s.Acquire(testkit.Ctx(t), req("web-1", "r1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.MarkFailed(testkit.Ctx(t), slot, 3); err != nil {
		t.Fatal(err)
	}
	snap, _ := s.Read(testkit.Ctx(t))
	rec := snap.Holders["web-1"]
	if rec.State != schema.StateFailed || rec.ExitCode == nil || *rec.ExitCode != 3 || snap.Current != 1 {
		t.Fatalf("after failure: %+v current=%d", rec, snap.Current)
	}
	// Another host cannot get in: the failed slot is held.
	r := req("web-2", "r2")
	if _, err := s.Acquire(testkit.Ctx(t), r); !errors.Is(err, lock.ErrNoSlot) {
		t.Errorf("another holder got in past a failed slot: %v", err)
	}
	again, err := s.Acquire(testkit.Ctx(t), req("web-1", "r3"))
	if err != nil {
		t.Fatal(err)
	}
	if !again.Reentered || again.Attempts != 2 || again.State != schema.StateRunning || again.ExitCode != nil {
		t.Errorf("re-entry = %+v", again)
	}
	if v := values(t); v["current"] != "1" {
		t.Errorf("re-entry took a second slot: %v", v)
	}
	// The old run can no longer touch the slot.
	if err := s.Release(testkit.Ctx(t), slot); !errors.Is(err, lock.ErrNotHeld) {
		t.Errorf("stale run released the re-entered slot: %v", err)
	}
	if err := s.Release(testkit.Ctx(t), again); err != nil {
		t.Fatal(err)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

func TestInterruptedHolds(t *testing.T) {
	s := newSem(t, 1)
	slot, err := s.Acquire(testkit.Ctx(t), req("web-1", "r1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.MarkInterrupted(testkit.Ctx(t), slot, nil); err != nil {
		t.Fatal(err)
	}
	snap, _ := s.Read(testkit.Ctx(t))
	if rec := snap.Holders["web-1"]; rec.State != schema.StateInterrupted || rec.ExitCode != nil {
		t.Errorf("after interrupt: %+v", rec)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

func TestReenterBareTimestamp(t *testing.T) {
	s := newSem(t, 1)
	put(t, "current", "1")
	put(t, "running/web-1", "1700000000")
	slot, err := s.Acquire(testkit.Ctx(t), req("web-1", "r1"))
	if err != nil {
		t.Fatal(err)
	}
	if !slot.Reentered || slot.Attempts != 2 {
		t.Errorf("re-entry of a bare timestamp: %+v", slot)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

func TestInvalidStoredValuesWriteNothing(t *testing.T) {
	cases := map[string]map[string]string{
		"max abc":          {"max_concurrent": "abc"},
		"max 1.5":          {"max_concurrent": "1.5"},
		"max -2":           {"max_concurrent": "-2"},
		"max empty":        {"max_concurrent": ""},
		"max 20 digits":    {"max_concurrent": "12345678901234567890"},
		"current x":        {"current": "x"},
		"current -1":       {"current": "-1"},
		"running garbage":  {"current": "1", "running/web-9": "garbage"},
		"running state":    {"current": "1", "running/web-9": `{"state":"sleeping","started_at":"2026-01-02T03:04:05Z"}`},
		"running no start": {"current": "1", "running/web-9": `{"state":"running"}`},
		"running holder":   {"current": "1", "running/web-9": `{"holder":"web-8","state":"running","started_at":"2026-01-02T03:04:05Z"}`},
		"running bad name": {"current": "1", "running/web 9": "1700000000"},
		"running nested":   {"current": "1", "running/a/b": "1700000000"},
	}
	for name, kvs := range cases {
		t.Run(name, func(t *testing.T) {
			for k, v := range kvs {
				put(t, k, v)
			}
			s := newSem(t, 1)
			before := dump(t)
			_, err := s.Acquire(testkit.Ctx(t), req("web-1", "r1"))
			if !errors.Is(err, lock.ErrInvalidConfig) {
				t.Fatalf("acquire: %v, want ErrInvalidConfig", err)
			}
			if after := dump(t); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("wrote despite invalid values: %v -> %v", before, after)
			}
		})
	}
}

func TestBadNames(t *testing.T) {
	for _, tc := range []struct{ prefix, tier string }{
		{"chef", "prod"}, {"chef", "prod/web/x"}, {"chef", "../web"}, {"chef", "prod/"},
		{"chef", "prod/we b"}, {"ch ef", "prod/web"}, {"a//b", "prod/web"},
	} {
		if _, err := lock.New(agent.Client(t).KV(), lock.Options{Prefix: tc.prefix, Tier: tc.tier}); !errors.Is(err, schema.ErrInvalidName) {
			t.Errorf("New(prefix %q, tier %q): %v, want ErrInvalidName", tc.prefix, tc.tier, err)
		}
	}
	s := newSem(t, 1)
	for _, h := range []string{"", "..", "a/b", "web 1", "web\x00", "wéb"} {
		if _, err := s.Acquire(testkit.Ctx(t), req(h, "r")); !errors.Is(err, schema.ErrInvalidName) {
			t.Errorf("acquire for holder %q: %v, want ErrInvalidName", h, err)
		}
	}
	if v := values(t); len(v) != 0 {
		t.Errorf("bad names wrote %v", v)
	}
}

func TestForceReleaseAndRepair(t *testing.T) {
	s := newSem(t, 3)
	put(t, "running/old-box", "garbage from old tooling")
	put(t, "current", "5")
	snap, err := s.Repair(testkit.Ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if snap.Current != 5 {
		t.Errorf("repair reported before=%d, want 5", snap.Current)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
	again, err := s.Repair(testkit.Ctx(t))
	if err != nil || again.Drift() {
		t.Errorf("second repair: %v drift=%v", err, again.Drift())
	}
	if _, err := s.ForceRelease(testkit.Ctx(t), "old-box", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ForceRelease(testkit.Ctx(t), "old-box", ""); !errors.Is(err, lock.ErrNotHeld) {
		t.Errorf("second force release: %v, want ErrNotHeld", err)
	}
	if v := values(t); v["current"] != "0" || len(v) != 1 {
		t.Errorf("after force release: %v", v)
	}
}

func TestDriftNeverAdmitsMoreThanMax(t *testing.T) {
	s := newSem(t, 2)
	// current says 0 but two holders have keys (older tooling): the tier is full.
	put(t, "running/a", "1700000000")
	put(t, "running/b", "1700000000")
	if _, err := s.Acquire(testkit.Ctx(t), req("web-1", "r1")); !errors.Is(err, lock.ErrNoSlot) {
		t.Fatalf("acquire on a drifted full tier: %v", err)
	}
	// A write heals the counter: b's release leaves current = 1 = running keys.
	if _, err := s.ForceRelease(testkit.Ctx(t), "b", ""); err != nil {
		t.Fatal(err)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

func TestConcurrentAcquirersNeverExceedMax(t *testing.T) {
	const max, hosts = 3, 24
	s := newSem(t, max)
	var running, peak atomic.Int32
	var wg sync.WaitGroup
	for i := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := req(fmt.Sprintf("web-%d", i), fmt.Sprintf("r%d", i))
			r.WaitUntil = time.Now().Add(60 * time.Second)
			slot, err := s.Acquire(testkit.Ctx(t), r)
			if err != nil {
				t.Errorf("host %d: %v", i, err)
				return
			}
			n := running.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(20 * time.Millisecond)
			running.Add(-1)
			if err := s.Release(testkit.Ctx(t), slot); err != nil {
				t.Errorf("host %d release: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if p := peak.Load(); p > max || p < 2 {
		t.Errorf("peak concurrency %d, want 2..%d", p, max)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

func TestReadAll(t *testing.T) {
	for _, tr := range []string{"prod/web", "prod/db", "stage/web"} {
		s, err := lock.New(agent.Client(t).KV(), lock.Options{Prefix: testkit.Prefix(t), Tier: tr, DefaultMax: 1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Acquire(testkit.Ctx(t), req("host-"+strings.ReplaceAll(tr, "/", "-"), "r")); err != nil {
			t.Fatal(err)
		}
	}
	// Keys outside any tier's layout are ignored.
	put(t, "notes/readme", "x")
	if _, err := agent.Client(t).KV().Put(&api.KVPair{Key: testkit.Prefix(t) + "/stray", Value: []byte("x")}, nil); err != nil {
		t.Fatal(err)
	}
	snaps, err := lock.ReadAll(testkit.Ctx(t), agent.Client(t).KV(), lock.Options{Prefix: testkit.Prefix(t), DefaultMax: 1})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range snaps {
		got = append(got, fmt.Sprintf("%s:%d:%d", s.Tier, s.Current, len(s.Holders)))
	}
	if want := "prod/db:1:1 prod/web:1:1 stage/web:1:1"; strings.Join(got, " ") != want {
		t.Errorf("ReadAll = %v, want %s", got, want)
	}
}

// A force release names the run it saw: sent again after its answer was lost, it must not
// free the fresh slot a new run of the holder took in between.
func TestForceReleaseIsPinnedToTheRun(t *testing.T) {
	s := newSem(t, 3)
	if _, err := s.Acquire(testkit.Ctx(t), req("web-3", "r1")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ForceRelease(testkit.Ctx(t), "web-3", "r1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Acquire(testkit.Ctx(t), req("web-3", "r2")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ForceRelease(testkit.Ctx(t), "web-3", "r1"); !errors.Is(err, lock.ErrNotHeld) {
		t.Errorf("release of run r1 again, with r2 holding: %v, want ErrNotHeld", err)
	}
	if v := values(t); v["current"] != "1" || v["running/web-3"] == "" {
		t.Errorf("r2's slot was freed: %v", v)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}
