package lock_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/lock"
)

// lineReads counts the transactions recorded that read the whole line.
func (k *txnRecorder) lineReads() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for _, ops := range k.ops {
		for _, op := range ops {
			if op.Verb == api.KVGetTree && strings.HasSuffix(op.Key, "/queue/") {
				n++
				break
			}
		}
	}
	return n
}

// line starts the Acquires of holders, one after the other in line (each joined before the
// next starts), on s; their slots arrive on the channels, in order.
func line(t *testing.T, s *lock.Semaphore, holders ...string) []<-chan *lock.Slot {
	t.Helper()
	var got []<-chan *lock.Slot
	for i, h := range holders {
		got = append(got, waitingFor(t, s, h))
		waitQueue(t, s, i+1)
	}
	return got
}

// slotWithin is the slot that arrives on got within 10s.
func slotWithin(t *testing.T, name string, got <-chan *lock.Slot) *lock.Slot {
	t.Helper()
	select {
	case slot := <-got:
		if slot == nil {
			t.Fatalf("%s: no slot", name)
		}
		return slot
	case <-time.After(10 * time.Second):
		t.Fatalf("%s was not handed a slot", name)
	}
	return nil
}

// waitingFor starts holder's Acquire, waiting up to 30s; its slot arrives on the channel.
func waitingFor(t *testing.T, s *lock.Semaphore, holder string) <-chan *lock.Slot {
	r := req(holder, "run-"+holder)
	r.WaitUntil = time.Now().Add(30 * time.Second)
	return acquiring(t, s, r)
}

// releaseNext releases the slot that arrives on got for name, which must be name's.
func releaseNext(t *testing.T, s *lock.Semaphore, name string, got <-chan *lock.Slot) {
	t.Helper()
	slot := slotWithin(t, name, got)
	if slot.Holder != name {
		t.Fatalf("%s's slot went to %s", name, slot.Holder)
	}
	if err := s.Release(testkit.Ctx(t), slot); err != nil {
		t.Fatal(err)
	}
}

// convergedLine has h0 take the only slot of s's tier and w1, w2 and w3, who last converged
// at 10:00, 10:01 and 10:02, wait for it in that order. It returns h0's slot and theirs.
func convergedLine(t *testing.T, s *lock.Semaphore) (*lock.Slot, []<-chan *lock.Slot) {
	t.Helper()
	first, err := s.Acquire(testkit.Ctx(t), req("h0", "run-h0"))
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	for i, h := range []string{"w1", "w2", "w3"} {
		put(t, "converged/"+h, fmt.Sprintf(`{"holder":%q,"converged_at":%q,"run_id":"old-%s"}`, h, base.Add(time.Duration(i)*time.Minute).Format(time.RFC3339), h))
	}
	return first, line(t, s, "w1", "w2", "w3")
}

// headedLine is convergedLine after h0's release, which served w1 and listed w2 and w3 in
// line_head: w1's slot, and the channels of w2's and w3's (got[1], got[2]).
func headedLine(t *testing.T, s *lock.Semaphore) (*lock.Slot, []<-chan *lock.Slot) {
	t.Helper()
	first, got := convergedLine(t, s)
	if err := s.Release(testkit.Ctx(t), first); err != nil {
		t.Fatal(err)
	}
	w1 := slotWithin(t, "w1", got[0])
	if _, ok := values(t)["line_head"]; !ok {
		t.Fatal("no line_head after a release that read a line of three")
	}
	return w1, got
}

// A release that reads the line lists its head in line_head, and the releases after it hand
// their slots over from there, reading neither the line nor anything that grows with it, in
// the line's order.
func TestReleasesServeFromTheHead(t *testing.T) {
	s := newSem(t, 1)
	first, err := s.Acquire(testkit.Ctx(t), req("h0", "run-h0"))
	if err != nil {
		t.Fatal(err)
	}
	rec := &txnRecorder{KV: agent.Client(t).KV()}
	ws := newSemOn(t, rec, 1)
	names := []string{"w1", "w2", "w3", "w4", "w5"}
	got := line(t, ws, names...)
	before := rec.lineReads()
	if err := s.Release(testkit.Ctx(t), first); err != nil { // reads the line, lists w2..w5
		t.Fatal(err)
	}
	if v := values(t)["line_head"]; !strings.Contains(v, `"holder":"w2"`) || !strings.Contains(v, `"holder":"w5"`) || strings.Contains(v, `"holder":"w1"`) {
		t.Errorf("line_head after the first release: %s", v)
	}
	for i, name := range names {
		slot := slotWithin(t, name, got[i])
		if slot.Holder != name {
			t.Fatalf("slot %d went to %s, want %s", i+1, slot.Holder, name)
		}
		if i == len(names)-1 {
			// w1 to w4 served from the head; w4's release used it up (and deleted it). w5's,
			// in an empty line, reads the line.
			if n := rec.lineReads() - before; n > 0 {
				t.Errorf("w1 to w4's releases read the whole line %d times, want 0", n)
			}
		}
		if err := ws.Release(testkit.Ctx(t), slot); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := values(t)["line_head"]; ok {
		t.Error("line_head left behind by an empty line")
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// In the converged order a newcomer that never converged ranks before hosts that did: joining
// after line_head was written, it deletes it, so the next release reads the line and serves
// the newcomer before the waiters the head listed.
func TestNewcomerBeforeTheBoundDropsTheHead(t *testing.T) {
	s := newSem(t, 1)
	w1, got := headedLine(t, s)
	newcomer := waitingFor(t, s, "n1")
	waitQueue(t, s, 3)
	if v, ok := values(t)["line_head"]; ok {
		t.Fatalf("line_head still there after a newcomer that ranks before its bound joined: %s", v)
	}
	if err := s.Release(testkit.Ctx(t), w1); err != nil {
		t.Fatal(err)
	}
	n1 := slotWithin(t, "n1", newcomer)
	if n1.Holder != "n1" {
		t.Fatalf("got %s's slot", n1.Holder)
	}
	select {
	case slot := <-got[1]:
		t.Fatalf("w2 was handed a slot (%v) before the newcomer, who never converged, released", slot != nil)
	case <-time.After(200 * time.Millisecond):
	}
	if err := s.Release(testkit.Ctx(t), n1); err != nil {
		t.Fatal(err)
	}
	releaseNext(t, s, "w2", got[1]) // then the line as it was
	releaseNext(t, s, "w3", got[2])
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// A waiter line_head lists that left the line since fails the release's grant (its entry is
// gone): the release then reads the line and serves the next, and lists the head anew.
func TestStaleHeadFallsBackToTheLine(t *testing.T) {
	s := newSem(t, 1)
	first, err := s.Acquire(testkit.Ctx(t), req("h0", "run-h0"))
	if err != nil {
		t.Fatal(err)
	}
	got := line(t, s, "w1")
	r := req("w2", "run-w2")
	r.WaitUntil = time.Now().Add(2 * time.Second)
	leaver := waiterReq(t, s, r)
	waitQueue(t, s, 2)
	third := waitingFor(t, s, "w3")
	waitQueue(t, s, 3)
	if err := s.Release(testkit.Ctx(t), first); err != nil { // w1 served; line_head lists w2, w3
		t.Fatal(err)
	}
	w1 := slotWithin(t, "w1", got[0])
	if err := <-leaver; !errors.Is(err, lock.ErrNoSlot) {
		t.Fatalf("w2's wait: %v, want ErrNoSlot", err)
	}
	if v := values(t)["line_head"]; !strings.Contains(v, `"holder":"w2"`) {
		t.Fatalf("line_head does not list w2, who left: %s", v)
	}
	if err := s.Release(testkit.Ctx(t), w1); err != nil {
		t.Fatal(err)
	}
	slotWithin(t, "w3", third)
	if v := values(t)["line_head"]; strings.Contains(v, `"holder":"w2"`) {
		t.Errorf("line_head still lists w2: %s", v)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// A newcomer that ranks before the bound and joins between a release's read of the line and
// its write of line_head is not listed, and its join found no head to delete: the release's
// write reads the line back and deletes the head it wrote.
func TestHeadWrittenPastANewcomerIsDeleted(t *testing.T) {
	s := newSem(t, 1)
	first, got := convergedLine(t, s)
	var newcomer <-chan *lock.Slot
	counted := &readCounter{KV: agent.Client(t).KV()}
	counted.before = func() {
		newcomer = waitingFor(t, s, "n1")
		waitQueue(t, s, 4)
	}
	if err := newSemOn(t, counted, 1).Release(testkit.Ctx(t), &lock.Slot{Record: first.Record}); err != nil {
		t.Fatal(err)
	}
	if counted.before != nil {
		t.Fatal("the newcomer did not join between the release's read and its write")
	}
	if v, ok := values(t)["line_head"]; ok {
		t.Fatalf("line_head left listing w2 and w3 ahead of a newcomer who never converged: %s", v)
	}
	releaseNext(t, s, "w1", got[0])
	releaseNext(t, s, "n1", newcomer) // the newcomer, who never converged, first
	releaseNext(t, s, "w2", got[1])
	releaseNext(t, s, "w3", got[2])
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// A tier of more than 16 slots serves from line_head too, but its releases leave the waiters
// they serve listed (releases ending together in such a tier would fight over the head): each
// checks which listed waiters still wait, in one read-only transaction, and serves the first
// of them, in the line's order, reading neither the line nor writing the head.
func TestWideTierServesFromTheHead(t *testing.T) {
	s := newSem(t, 17)
	var slots []*lock.Slot
	for i := range 17 {
		slot, err := s.Acquire(testkit.Ctx(t), req(fmt.Sprintf("h%02d", i), fmt.Sprintf("run-h%02d", i)))
		if err != nil {
			t.Fatal(err)
		}
		slots = append(slots, slot)
	}
	rec := &txnRecorder{KV: agent.Client(t).KV()}
	ws := newSemOn(t, rec, 17)
	var names []string
	for i := range 8 {
		names = append(names, fmt.Sprintf("w%02d", i+1))
	}
	got := line(t, ws, names...)
	if err := s.Release(testkit.Ctx(t), slots[0]); err != nil { // w01 served; the head lists w02..w08
		t.Fatal(err)
	}
	head := dump(t)["line_head"]
	if !strings.Contains(head, `"holder":"w02"`) || !strings.Contains(head, `"holder":"w08"`) {
		t.Fatalf("line_head after a release that read the line: %s", head)
	}
	before := rec.lineReads()
	for i, name := range names {
		slot := slotWithin(t, name, got[i])
		if slot.Holder != name {
			t.Fatalf("slot %d went to %s, want %s", i+1, slot.Holder, name)
		}
		if i == len(names)-1 {
			if now := dump(t)["line_head"]; now != head {
				t.Errorf("line_head rewritten by releases in a wide tier: %s, was %s", now, head)
			}
			// w04's release served w05, listed halfway, and read the line to top the head up
			// (nobody new: it wrote nothing).
			if n := rec.lineReads() - before; n != 1 {
				t.Errorf("w01 to w07's releases read the whole line %d times, want 1 (w04's refill)", n)
			}
		}
		if err := ws.Release(testkit.Ctx(t), slot); err != nil {
			t.Fatal(err)
		}
	}
	for _, slot := range slots[1:] {
		if err := s.Release(testkit.Ctx(t), slot); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := values(t)["line_head"]; ok {
		t.Error("line_head left behind by an empty line")
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// Releases that end together in a wide tier collide on the first waiter listed: the losers
// reach further down the head, and every waiter is served once.
func TestWideTierReleasesEndingTogether(t *testing.T) {
	const n = 20
	s := newSem(t, n)
	var first []*lock.Slot
	for i := range n {
		slot, err := s.Acquire(testkit.Ctx(t), req(fmt.Sprintf("h%02d", i), fmt.Sprintf("run-h%02d", i)))
		if err != nil {
			t.Fatal(err)
		}
		first = append(first, slot)
	}
	// v01..v20 are handed their slots from the line, so their releases serve from the head.
	var vs, ws []string
	for i := range n {
		vs = append(vs, fmt.Sprintf("v%02d", i+1))
	}
	for i := range n + 1 {
		ws = append(ws, fmt.Sprintf("w%02d", i+1))
	}
	gotV := line(t, s, vs...)
	for _, slot := range first {
		if err := s.Release(testkit.Ctx(t), slot); err != nil {
			t.Fatal(err)
		}
	}
	var held []*lock.Slot
	for i, name := range vs {
		held = append(held, slotWithin(t, name, gotV[i]))
	}
	gotW := line(t, s, ws...)
	if err := s.Release(testkit.Ctx(t), held[0]); err != nil { // w01 served; the head lists the rest
		t.Fatal(err)
	}
	errs := make(chan error, n)
	for _, slot := range append(held[1:], slotWithin(t, "w01", gotW[0])) {
		go func() { errs <- s.Release(testkit.Ctx(t), slot) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for i, name := range ws[1:] {
		if slot := slotWithin(t, name, gotW[i+1]); slot.Holder != name {
			t.Fatalf("%s's slot went to %s", name, slot.Holder)
		}
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// A release from line_head that leaves it half used up tops it up, after its own hand-over,
// from one read of the line: the releases after it keep serving from the head, and the line
// is read again only when the head is used up.
func TestReleaseTopsTheHeadUp(t *testing.T) {
	s := newSem(t, 1)
	first, err := s.Acquire(testkit.Ctx(t), req("h0", "run-h0"))
	if err != nil {
		t.Fatal(err)
	}
	rec := &txnRecorder{KV: agent.Client(t).KV()}
	ws := newSemOn(t, rec, 1)
	var names []string
	for i := range 20 {
		names = append(names, fmt.Sprintf("w%02d", i+1))
	}
	got := line(t, ws, names...)
	if err := s.Release(testkit.Ctx(t), first); err != nil { // w01 served; the head lists w02..w17
		t.Fatal(err)
	}
	before := rec.lineReads()
	for i, name := range names {
		slot := slotWithin(t, name, got[i])
		if slot.Holder != name {
			t.Fatalf("slot %d went to %s, want %s", i+1, slot.Holder, name)
		}
		if err := ws.Release(testkit.Ctx(t), slot); err != nil {
			t.Fatal(err)
		}
		if name == "w08" {
			// It served w09 and left w10..w17 listed: it topped the head up with w18..w20.
			if v := values(t)["line_head"]; !strings.Contains(v, `"holder":"w10"`) || !strings.Contains(v, `"holder":"w20"`) {
				t.Errorf("line_head after w08's release: %s", v)
			}
		}
	}
	// The line was read by w08's refill, by w11's (whose release left the head, topped up to
	// the end of the line, half used again; it found nobody new), and by w20's release, in an
	// empty line, which found no head (its read, and its write's read-back). No hand-over
	// waited for a read of the line.
	if n := rec.lineReads() - before; n != 4 {
		t.Errorf("the releases read the whole line %d times, want 4", n)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// A run's first look decides only whether to take or to join: it reads the slots and its own
// entry, not line_head (twice the slots long in a wide tier), which only releases serve from.
func TestFirstLookReadsNoHead(t *testing.T) {
	s := newSem(t, 1)
	w1, got := headedLine(t, s)
	rec := &txnRecorder{KV: agent.Client(t).KV()}
	late := waitingFor(t, newSemOn(t, rec, 1), "n1")
	waitQueue(t, s, 3)
	rec.mu.Lock()
	for _, op := range rec.ops[0] {
		if strings.HasSuffix(op.Key, "/line_head") {
			t.Errorf("the first look read %s", op.Key)
		}
	}
	rec.mu.Unlock()
	if err := s.Release(testkit.Ctx(t), w1); err != nil {
		t.Fatal(err)
	}
	releaseNext(t, s, "n1", late) // never converged: first in the converged order
	releaseNext(t, s, "w2", got[1])
	releaseNext(t, s, "w3", got[2])
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// A waiter woken with a slot free (a nudge) hands the free slots over from line_head, to the
// waiters it lists, on a look at the slots and the head, without reading the line: of a burst's
// waiters woken one after the other, none reads the line (bench/README.md, "A burst hands its
// free slots over from the head"). Here the limit is raised by hand, which wakes nobody, and
// the last in line is nudged: it serves the first in line as well as itself.
func TestNudgedWaiterServesFromTheHead(t *testing.T) {
	s := newSem(t, 1)
	rec := &txnRecorder{KV: agent.Client(t).KV()}
	h0, err := s.Acquire(testkit.Ctx(t), req("h0", "run-h0"))
	if err != nil {
		t.Fatal(err)
	}
	got := line(t, s, "w1", "w2")
	w3 := waitingFor(t, newSemOn(t, rec, 1), "w3")
	waitQueue(t, s, 3)
	if err := s.Release(testkit.Ctx(t), h0); err != nil {
		t.Fatal(err)
	}
	slotWithin(t, "w1", got[0])
	if _, ok := values(t)["line_head"]; !ok {
		t.Fatal("no line_head after a release that read a line of three")
	}
	put(t, "max_concurrent", "3") // by hand: nobody is woken
	before := rec.lineReads()

	kv := agent.Client(t).KV()
	key := testkit.Prefix(t) + "/" + tier + "/queue/w3"
	p, _, err := kv.Get(key, nil)
	if err != nil || p == nil {
		t.Fatalf("w3's entry: %v, %v", p, err)
	}
	if ok, _, err := kv.CAS(&api.KVPair{Key: key, Value: p.Value, ModifyIndex: p.ModifyIndex}, nil); err != nil || !ok {
		t.Fatalf("nudge w3: %v, %v", ok, err)
	}
	slotWithin(t, "w2", got[1]) // first in line: served by w3, its own net being a minute off
	slotWithin(t, "w3", w3)
	if n := rec.lineReads() - before; n != 0 {
		t.Errorf("the nudged waiter read the line %d times", n)
	}
	if v := values(t); v["current"] != "3" {
		t.Errorf("current = %s, want 3", v["current"])
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// writeHooks is a txnRecorder that runs its hooks, one each, ahead of the writes made through
// it, in order, and counts its blocking reads (watches).
type writeHooks struct {
	txnRecorder
	hooks   []func()
	watches atomic.Int32
}

func (k *writeHooks) Txn(ops api.KVTxnOps, q *api.QueryOptions) (bool, *api.KVTxnResponse, *api.QueryMeta, error) {
	var hook func()
	k.mu.Lock()
	if writes(ops) && len(k.hooks) > 0 {
		hook, k.hooks = k.hooks[0], k.hooks[1:]
	}
	k.mu.Unlock()
	if hook != nil {
		hook()
	}
	return k.txnRecorder.Txn(ops, q)
}

func (k *writeHooks) Get(key string, q *api.QueryOptions) (*api.KVPair, *api.QueryMeta, error) {
	if q != nil && q.WaitIndex > 0 {
		k.watches.Add(1)
	}
	return k.txnRecorder.Get(key, q)
}

// lineLooks counts the read-only transactions recorded that read the whole line.
func (k *writeHooks) lineLooks() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for _, ops := range k.ops {
		line := slices.ContainsFunc(ops, func(op *api.KVTxnOp) bool {
			return op.Verb == api.KVGetTree && strings.HasSuffix(op.Key, "/queue/")
		})
		if line && !writes(ops) {
			n++
		}
	}
	return n
}

// writes reports whether ops write anything (more than reads and checks).
func writes(ops api.KVTxnOps) bool {
	return slices.ContainsFunc(ops, func(op *api.KVTxnOp) bool {
		return op.Verb != api.KVGet && op.Verb != api.KVGetTree && op.Verb != api.KVCheckIndex && op.Verb != api.KVCheckNotExists
	})
}

// In a tier of at most 16 slots, a waiter that lost the race for a free slot and finds a slot
// still free after joining settles asleep, with no request: of a burst's waiters, the first to
// wake reads the line and hands the free slots over, and the others find them handed over. A
// slot handed to the sleeper meanwhile is found by its next look, without a read of the line
// or a watch. (Before, each such waiter read the line at once: at M=2,000 and 10 slots, one
// burst in two or three did so 500 to 1,600 times and degraded.)
func TestSettledWaiterFindsTheSlotHandedToItAsleep(t *testing.T) {
	s := newSem(t, 2)
	c := testkit.Ctx(t)
	h0, err := s.Acquire(c, req("h0", "run-h0")) // 1 of 2 slots held
	if err != nil {
		t.Fatal(err)
	}
	kv := &writeHooks{txnRecorder: txnRecorder{KV: agent.Client(t).KV()}}
	var x *lock.Slot
	kv.hooks = []func(){
		func() { // ahead of w1's take: x takes the free slot, so that w1 loses the race
			if x, err = s.Acquire(c, req("x", "run-x")); err != nil {
				t.Error(err)
			}
		},
		func() { // ahead of w1's join: x is done, and w1's join finds a slot free
			if err := s.Release(c, x); err != nil {
				t.Error(err)
			}
		},
	}
	w1 := newSemOn(t, kv, 2)
	lock.SetSettle(w1, 3*time.Second)
	got := waitingFor(t, w1, "w1")
	waitQueue(t, s, 1)
	if err := s.Release(c, h0); err != nil { // hands h0's slot to w1, asleep
		t.Fatal(err)
	}
	if v := values(t); !strings.Contains(v["running/w1"], "run-w1") {
		t.Fatalf("h0's release did not hand w1 its slot: %v", v)
	}
	slot := slotWithin(t, "w1", got)
	if slot.Holder != "w1" || slot.RunID != "run-w1" {
		t.Fatalf("w1 got %s's slot of run %s", slot.Holder, slot.RunID)
	}
	if n := kv.lineLooks(); n != 0 {
		t.Errorf("w1 read the line %d times", n) // its take's read-back aside
	}
	if n := kv.watches.Load(); n != 0 {
		t.Errorf("w1 watched its entry %d times while it settled", n)
	}
	if err := w1.Release(c, slot); err != nil {
		t.Fatal(err)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}
