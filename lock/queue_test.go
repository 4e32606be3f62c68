package lock_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/consulclient"
	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/internal/testkit/faultproxy"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// waitQueue waits until the tier has n waiters.
func waitQueue(t *testing.T, s *lock.Semaphore, n int) {
	t.Helper()
	had := -1
	if !testkit.Poll(testkit.Wait, func() bool {
		snap, err := s.Read(testkit.Ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		had = len(snap.Queue)
		return had == n
	}) {
		t.Fatalf("queue has %d waiters, want %d", had, n)
	}
}

// waiter starts an Acquire in the background; its result arrives on the channel.
func waiter(t *testing.T, s *lock.Semaphore, holder string, wait time.Duration) <-chan error {
	r := req(holder, "run-"+holder)
	r.WaitUntil = time.Now().Add(wait)
	return waiterReq(t, s, r)
}

func TestQueueKeepsArrivalOrder(t *testing.T) {
	s := newSem(t, 1)
	first, err := s.Acquire(testkit.Ctx(t), req("holder", "r0"))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []string
	g := testkit.NewGroup(t)
	for i := range 6 {
		h := fmt.Sprintf("w%d", i)
		g.Go(func(ctx context.Context) {
			r := req(h, "run-"+h)
			r.WaitUntil = time.Now().Add(30 * time.Second)
			slot, err := s.Acquire(ctx, r)
			if err != nil {
				t.Errorf("%s: %v", h, err)
				return
			}
			mu.Lock()
			order = append(order, h)
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
			if err := s.Release(ctx, slot); err != nil {
				t.Errorf("%s release: %v", h, err)
			}
		})
		waitQueue(t, s, i+1) // started one by one: each is queued before the next starts
	}
	if err := s.Release(testkit.Ctx(t), first); err != nil {
		t.Fatal(err)
	}
	g.Wait()
	if got := strings.Join(order, " "); got != "w0 w1 w2 w3 w4 w5" {
		t.Errorf("slots went in order %s, want arrival order", got)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

func TestQueueTimeoutLeavesNoTrace(t *testing.T) {
	s := newSem(t, 1)
	if _, err := s.Acquire(testkit.Ctx(t), req("holder", "r0")); err != nil {
		t.Fatal(err)
	}
	before := dump(t)
	// Only sessions created from here on are this waiter's: tests before it that lose a
	// session's destruction on purpose leave sessions of a w1 too, until their TTL.
	_, meta, err := agent.Client(t).Session().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-waiter(t, s, "w1", 500*time.Millisecond); !errors.Is(err, lock.ErrNoSlot) {
		t.Fatalf("waiter: %v, want ErrNoSlot", err)
	}
	if after := dump(t); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("a waiter that gave up left a trace:\nbefore %v\nafter  %v", before, after)
	}
	sessions, _, err := agent.Client(t).Session().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, se := range sessions {
		if se.CreateIndex > meta.LastIndex && strings.Contains(se.Name, "w1") {
			t.Errorf("session %s (%s) left behind", se.ID, se.Name)
		}
	}
}

func TestQueueRaiseAdmitsAtOnce(t *testing.T) {
	s := newSem(t, 1)
	if _, err := s.Acquire(testkit.Ctx(t), req("holder", "r0")); err != nil {
		t.Fatal(err)
	}
	var got []<-chan error
	for i := range 3 {
		got = append(got, waiter(t, s, fmt.Sprintf("w%d", i), 30*time.Second))
		waitQueue(t, s, i+1)
	}
	start := time.Now()
	if _, err := s.SetMax(testkit.Ctx(t), 4); err != nil {
		t.Fatal(err)
	}
	for i, c := range got {
		select {
		case err := <-c:
			if err != nil {
				t.Errorf("w%d: %v", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("w%d not admitted after max_concurrent was raised", i)
		}
	}
	t.Logf("3 waiters admitted %v after set-max", time.Since(start))
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

func TestQueueLoweredAdmitsNobodyUntilBelow(t *testing.T) {
	s := newSem(t, 3)
	var held []*lock.Slot
	for i := range 3 {
		slot, err := s.Acquire(testkit.Ctx(t), req(fmt.Sprintf("h%d", i), "r"))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, slot)
	}
	w := waiter(t, s, "w", 30*time.Second)
	waitQueue(t, s, 1)
	if _, err := s.SetMax(testkit.Ctx(t), 1); err != nil {
		t.Fatal(err)
	}
	for i, slot := range held {
		if err := s.Release(testkit.Ctx(t), slot); err != nil {
			t.Fatal(err)
		}
		if i < 2 {
			// Still 2, then 1 held: not below max_concurrent 1.
			select {
			case err := <-w:
				t.Fatalf("admitted with %d of 1 slots held: %v", 2-i, err)
			case <-time.After(300 * time.Millisecond):
			}
		}
	}
	select {
	case err := <-w:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not admitted once the tier emptied")
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

func TestQueueDisableSendsEveryoneAway(t *testing.T) {
	s := newSem(t, 1)
	if _, err := s.Acquire(testkit.Ctx(t), req("holder", "r0")); err != nil {
		t.Fatal(err)
	}
	var got []<-chan error
	for i := range 5 {
		got = append(got, waiter(t, s, fmt.Sprintf("w%d", i), 60*time.Second))
	}
	waitQueue(t, s, 5)
	start := time.Now()
	if _, err := s.Disable(testkit.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	for i, c := range got {
		select {
		case err := <-c:
			if !errors.Is(err, lock.ErrDisabled) {
				t.Errorf("w%d: %v, want ErrDisabled", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("w%d still waiting after the tier was disabled", i)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("waiters took %v to leave a disabled tier", d)
	}
	waitQueue(t, s, 0)
}

func TestNewcomerDoesNotOvertakeQueue(t *testing.T) {
	s := newSem(t, 1)
	first, err := s.Acquire(testkit.Ctx(t), req("holder", "r0"))
	if err != nil {
		t.Fatal(err)
	}
	w := waiter(t, s, "w0", 30*time.Second)
	waitQueue(t, s, 1)
	// Free the slot and race a newcomer against the queued waiter: the newcomer must queue.
	if err := s.Release(testkit.Ctx(t), first); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Acquire(testkit.Ctx(t), req("newcomer", "r9")); err == nil {
		snap, _ := s.Read(testkit.Ctx(t))
		if _, ok := snap.Holders["w0"]; !ok {
			t.Error("a newcomer took the slot ahead of a queued waiter")
		}
	}
	if err := <-w; err != nil {
		t.Fatal(err)
	}
}

// A release with waiters hands the slot to the head of the queue in the same transaction:
// the head's entry is rewritten with the slot (the news its watch answers with), its record
// (from what its entry carried) is written, current stays, and the head's Acquire finds the
// slot held for it: a fresh slot, not a re-entry; its entry goes with its session.
func TestReleaseHandsTheSlotToTheHead(t *testing.T) {
	s := newSem(t, 1)
	first, err := s.Acquire(testkit.Ctx(t), req("holder", "r0"))
	if err != nil {
		t.Fatal(err)
	}
	r := req("w0", "run-w0")
	r.WaitUntil = time.Now().Add(20 * time.Second)
	got := acquiring(t, s, r)
	waitQueue(t, s, 1)
	// The slot as a release that reads first has it (first itself, taken alone, would release
	// on what its take read back, then hand the slot over in a second write: see
	// TestReleaseAloneThenHandsOver).
	if err := s.Release(testkit.Ctx(t), &lock.Slot{Record: first.Record}); err != nil {
		t.Fatal(err)
	}
	after := dump(t)
	rec, conv := after["running/w0"], after["converged/holder"]
	if rec == "" || conv == "" || rec[strings.LastIndex(rec, "@"):] != conv[strings.LastIndex(conv, "@"):] {
		t.Fatalf("after the release: %v, want running/w0 written by the release itself", after)
	}
	// w0 may have read the news and left the line already.
	if e, ok := after["queue/w0"]; (ok && (!strings.Contains(e, `"granted":{"holder":"w0"`) || e[strings.LastIndex(e, "@"):] != conv[strings.LastIndex(conv, "@"):])) || !strings.HasPrefix(after["current"], "1@") {
		t.Errorf("after the release: %v, want w0's entry carrying its slot (or gone with its session) and current 1", after)
	}
	for _, want := range []string{`"run_id":"run-w0"`, `"hostname":"w0.test"`, `"command":"true"`, `"attempts":1`, `"state":"running"`} {
		if !strings.Contains(rec, want) {
			t.Errorf("running/w0 = %s, want %s in it", rec, want)
		}
	}
	select {
	case slot := <-got:
		if slot == nil || slot.RunID != "run-w0" || slot.Reentered || slot.Attempts != 1 {
			t.Errorf("w0 got %+v, want its fresh slot", slot)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("w0 did not see the slot it was handed")
	}
	if e, ok := dump(t)["queue/w0"]; ok {
		t.Errorf("queue/w0 = %s after w0's Acquire returned, want it gone with its session", e)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
	waitQueue(t, s, 0)
}

// A holder alone in the tier when it took its slot releases on what the take read back, without
// reading first; a host that joined the queue meanwhile is not left asleep: the release reads
// the tier back in its own transaction, and hands the slot over in the next.
func TestReleaseAloneThenHandsOver(t *testing.T) {
	s := newSem(t, 1)
	first, err := s.Acquire(testkit.Ctx(t), req("holder", "r0"))
	if err != nil {
		t.Fatal(err)
	}
	w := waiter(t, s, "w0", 20*time.Second)
	waitQueue(t, s, 1)
	if err := s.Release(testkit.Ctx(t), first); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-w:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("w0 was left waiting for a free slot")
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// A Consul error while a host waits ends its Acquire (the caller's retry policy decides what
// next), but keeps its place in line for the retry of the same run: it is not sent to the back
// behind the hosts that came after it. Abandon gives the place up.
func TestRetriedAcquireKeepsItsPlace(t *testing.T) {
	proxy, w1 := proxiedSem(t)
	s := newSem(t, 1)
	first, err := s.Acquire(testkit.Ctx(t), req("holder", "r0"))
	if err != nil {
		t.Fatal(err)
	}
	// w1's watch of its own entry fails with a 500 (once), as a Consul in trouble answers.
	var failed atomic.Bool
	proxy.SetRule(func(r *http.Request) int {
		if strings.Contains(r.URL.Path, "/queue/w1") && r.URL.Query().Get("index") != "" && failed.CompareAndSwap(false, true) {
			return http.StatusInternalServerError
		}
		return faultproxy.Pass
	})
	r1 := req("w1", "run-w1")
	r1.WaitUntil = time.Now().Add(20 * time.Second)
	if _, err := w1.Acquire(testkit.Ctx(t), r1); err == nil || errors.Is(err, lock.ErrNoSlot) {
		t.Fatalf("w1's first Acquire: %v, want the Consul error", err)
	}
	waitQueue(t, s, 1) // w1 is still in line
	w2 := waiter(t, s, "w2", 20*time.Second)
	waitQueue(t, s, 2)
	got := waiterReq(t, w1, r1) // the retry of the same run
	if err := s.Release(testkit.Ctx(t), &lock.Slot{Record: first.Record}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("w1's retry: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("w1 was not first after its retry")
	}
	select {
	case err := <-w2:
		t.Fatalf("w2 went before w1 let go: %v", err)
	default:
	}
	// Abandon gives a kept place up.
	r3 := req("w3", "run-w3")
	r3.WaitUntil = time.Now().Add(20 * time.Second)
	failed.Store(false)
	proxy.SetRule(func(r *http.Request) int {
		if strings.Contains(r.URL.Path, "/queue/w3") && r.URL.Query().Get("index") != "" && failed.CompareAndSwap(false, true) {
			return http.StatusInternalServerError
		}
		return faultproxy.Pass
	})
	if _, err := w1.Acquire(testkit.Ctx(t), r3); err == nil {
		t.Fatal("w3's Acquire: want the Consul error")
	}
	if err := w1.Abandon(testkit.Ctx(t), "w3", "run-w3"); err != nil {
		t.Fatal(err)
	}
	if _, queued := values(t)["queue/w3"]; queued {
		t.Error("an abandoned run kept its place in line")
	}
	proxy.SetRule(nil)
	if err := w1.Release(testkit.Ctx(t), &lock.Slot{Record: schema.Record{Holder: "w1", RunID: "run-w1"}}); err != nil {
		t.Fatal(err)
	}
	if err := <-w2; err != nil {
		t.Fatal(err)
	}
}

// A waiter whose --wait runs out leaves the line by destroying its session; should that
// request be lost on its way, the entry would live on for the session's TTL, and a release in
// that time would hand it a slot nobody will use. The waiter sees its entry still there in its
// last look and deletes it: the release that follows hands nothing to it.
func TestGivingUpLeavesTheLineThoughTheSessionLives(t *testing.T) {
	proxy, w1 := proxiedSem(t)
	proxy.SetRule(func(r *http.Request) int {
		if strings.HasPrefix(r.URL.Path, "/v1/session/destroy/") {
			return faultproxy.Reset
		}
		return faultproxy.Pass
	})
	s := newSem(t, 1)
	first, err := s.Acquire(testkit.Ctx(t), req("holder", "r0"))
	if err != nil {
		t.Fatal(err)
	}
	r1 := req("w1", "run-w1")
	r1.WaitUntil = time.Now().Add(time.Second)
	if _, err := w1.Acquire(testkit.Ctx(t), r1); !errors.Is(err, lock.ErrNoSlot) {
		t.Fatalf("w1: %v, want ErrNoSlot", err)
	}
	if err := s.Release(testkit.Ctx(t), first); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Read(testkit.Ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if rec, ok := snap.Holders["w1"]; ok {
		t.Errorf("a slot was handed to the waiter that gave up: %+v", rec)
	}
	if len(snap.Queue) != 0 {
		t.Errorf("left in line: %+v", snap.Queue)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// proxiedSem is the test tier's semaphore (max 1) reached through a fault proxy in front of
// the agent, with the proxy.
func proxiedSem(t *testing.T) (*faultproxy.Proxy, *lock.Semaphore) {
	t.Helper()
	a, _ := agent.Get(t)
	proxy := faultproxy.New(a.Addr)
	t.Cleanup(proxy.Close)
	cfg := api.DefaultConfig()
	cfg.Address = proxy.Addr
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := lock.New(c.KV(), lock.Options{Prefix: testkit.Prefix(t), Tier: tier, DefaultMax: 1, Sessions: c.Session(),
		Retryable: consulclient.Retryable})
	if err != nil {
		t.Fatal(err)
	}
	return proxy, s
}

// readCounter counts the read-only transactions (reads of the tier) made through it and, armed,
// runs before once ahead of the first write after a read.
type readCounter struct {
	lock.KV
	mu     sync.Mutex
	reads  int
	armed  bool
	before func()
}

func (k *readCounter) Txn(ops api.KVTxnOps, q *api.QueryOptions) (bool, *api.KVTxnResponse, *api.QueryMeta, error) {
	k.mu.Lock()
	read := true
	for _, op := range ops {
		read = read && (op.Verb == api.KVGet || op.Verb == api.KVGetTree)
	}
	var before func()
	if read {
		k.reads++
		k.armed = true
	} else if k.armed && k.before != nil {
		before, k.before = k.before, nil
	}
	k.mu.Unlock()
	if before != nil {
		before()
	}
	return k.KV.Txn(ops, q)
}

// Two releases that end together both reach for the head of the line: the one that loses it
// hands its slot to the next waiter, decided on the read it made, without reading the whole
// line again.
func TestLostHandOverDecidesAgainWithoutReading(t *testing.T) {
	s := newSem(t, 2)
	c := testkit.Ctx(t)
	a, err := s.Acquire(c, req("a", "ra"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Acquire(c, req("b", "rb"))
	if err != nil {
		t.Fatal(err)
	}
	w1 := waiter(t, s, "w1", 20*time.Second)
	waitQueue(t, s, 1)
	w2 := waiter(t, s, "w2", 20*time.Second)
	waitQueue(t, s, 2)
	counted := &readCounter{KV: agent.Client(t).KV()}
	sa := newSemOn(t, counted, 2)
	// b releases between a's read and a's write: it hands its slot to w1, the head.
	counted.before = func() {
		if err := s.Release(c, &lock.Slot{Record: b.Record}); err != nil {
			t.Error(err)
		}
	}
	if err := sa.Release(c, &lock.Slot{Record: a.Record}); err != nil {
		t.Fatal(err)
	}
	if counted.before != nil || counted.reads != 1 {
		t.Errorf("a's release: b released meanwhile: %v, reads %d, want 1", counted.before == nil, counted.reads)
	}
	for name, w := range map[string]<-chan error{"w1": w1, "w2": w2} {
		select {
		case err := <-w:
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s was not handed a slot", name)
		}
	}
	v := values(t)
	if !strings.Contains(v["running/w1"], `"run_id":"run-w1"`) || !strings.Contains(v["running/w2"], `"run_id":"run-w2"`) || v["current"] != "2" {
		t.Errorf("after both releases: %v, want w1 and w2 holding the slots", v)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// A limit raised by hand (consul kv put, which wakes nobody) is found by whichever waiter's
// safety net looks first, and that waiter hands the slot to the first in line, whose own net
// has not come round: in a long line each waiter looks seldom, but the line as a whole often.
func TestNetLookHandsARaisedLimitToTheHead(t *testing.T) {
	head := newSem(t, 1) // the first in line: its net is a minute, as by default
	behind := newSem(t, 1)
	lock.SetNetLeast(behind, 300*time.Millisecond)
	if _, err := head.Acquire(testkit.Ctx(t), req("holder", "r0")); err != nil {
		t.Fatal(err)
	}
	first := waiter(t, head, "w1", 30*time.Second)
	waitQueue(t, head, 1)
	second := waiter(t, behind, "w2", 30*time.Second)
	waitQueue(t, head, 2)
	start := time.Now()
	put(t, "max_concurrent", "2")
	select {
	case err := <-first:
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("the first in line took the raised slot %v after the hand edit", time.Since(start))
	case <-time.After(10 * time.Second):
		t.Fatal("the first in line was not handed the slot raised by hand within 10s (its own net is a minute)")
	}
	select {
	case err := <-second:
		t.Fatalf("the second in line went too, with 2 of 2 slots held: %v", err)
	case <-time.After(time.Second):
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
	// The second goes once a slot is free, not after the test (in a cancelled context).
	put(t, "max_concurrent", "3")
	if err := <-second; err != nil {
		t.Fatal(err)
	}
}

// Disabling a tier wakes every waiter, however long the line: the entries that do not fit in
// the disabling transaction are deleted right after it, not left to each waiter's safety net.
func TestDisableWakesALineLongerThanATransaction(t *testing.T) {
	s := newSem(t, 1)
	if _, err := s.Acquire(testkit.Ctx(t), req("holder", "r0")); err != nil {
		t.Fatal(err)
	}
	const n = 300 // more than one transaction's 128 operations, twice over
	base := queueEntries(t, n, "")
	waitQueue(t, s, n)
	if _, err := s.Disable(testkit.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	if keys := keysUnder(t, base); len(keys) != 0 {
		t.Errorf("%d of %d queue entries left after disable (first %s): their waiters sleep until their safety net", len(keys), n, keys[0])
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// keysUnder lists, consistently, the keys under prefix.
func keysUnder(t *testing.T, prefix string) []string {
	t.Helper()
	keys, _, err := agent.Client(t).KV().Keys(prefix, "", &api.QueryOptions{RequireConsistent: true})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// queueEntries writes n waiters' entries (w000 …) straight into the test tier's queue, bound to
// one session, each carrying extra (JSON fields, each with a comma before it), as if n hosts
// waited; it returns the queue's prefix.
func queueEntries(t *testing.T, n int, extra string) string {
	t.Helper()
	c := agent.Client(t)
	id, _, err := c.Session().Create(&api.SessionEntry{TTL: "60s", Behavior: api.SessionBehaviorDelete}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = c.Session().Destroy(id, nil) })
	base := testkit.Prefix(t) + "/" + tier + "/queue/"
	for i := range n {
		h := fmt.Sprintf("w%03d", i)
		v := fmt.Sprintf(`{"holder":%q,"run_id":"run-%s","since":"2026-12-06T09:00:00Z","converged_at":null,"protocol":2%s}`, h, h, extra)
		if ok, _, err := c.KV().Acquire(&api.KVPair{Key: base + h, Value: []byte(v), Session: id}, nil); err != nil || !ok {
			t.Fatalf("queue %s: %v %v", h, ok, err)
		}
	}
	return base
}

// watchCounter counts blocking queries (the waiter's watches of its own entry).
type watchCounter struct {
	lock.KV
	n atomic.Int32
}

func (k *watchCounter) Get(key string, q *api.QueryOptions) (*api.KVPair, *api.QueryMeta, error) {
	if q != nil && q.WaitIndex > 0 {
		k.n.Add(1)
	}
	return k.KV.Get(key, q)
}

// A waiter's safety net backs off: each look that finds nothing new doubles its period, so a
// long line at rest costs Consul ever less (periods 100, 200, 400 and 800 ms here: 4 watches in
// 1.6 s, where a fixed period makes 16).
func TestSafetyNetBacksOff(t *testing.T) {
	s := newSem(t, 1)
	if _, err := s.Acquire(testkit.Ctx(t), req("holder", "r0")); err != nil {
		t.Fatal(err)
	}
	counted := &watchCounter{KV: agent.Client(t).KV()}
	w := newSemOn(t, counted, 1)
	lock.SetNetLeast(w, 100*time.Millisecond)
	if err := <-waiter(t, w, "w1", 1600*time.Millisecond); !errors.Is(err, lock.ErrNoSlot) {
		t.Fatalf("waiter: %v, want ErrNoSlot", err)
	}
	if n := counted.n.Load(); n < 3 || n > 7 {
		t.Errorf("%d watches in 1.6 s with a safety net of 100 ms that doubles, want 4 or so", n)
	}
}

// A waiter handed a slot learns it from its watch's answer, its entry rewritten with the
// record: no look at its running/ key, nor at the tier, after the watch (before the entry
// carried the slot, every handed-over run made one more request).
func TestHandedSlotIsInTheWatchsAnswer(t *testing.T) {
	s := newSem(t, 1)
	first, err := s.Acquire(testkit.Ctx(t), req("holder", "r0"))
	if err != nil {
		t.Fatal(err)
	}
	counted := &txnRecorder{KV: agent.Client(t).KV()}
	got := waiter(t, newSemOn(t, counted, 1), "w0", 20*time.Second)
	waitQueue(t, s, 1)
	gets, txns := counted.gets.Load(), counted.txns()
	if err := s.Release(testkit.Ctx(t), &lock.Slot{Record: first.Record}); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if g, x := counted.gets.Load()-gets, counted.txns()-txns; g != 0 || x != 0 {
		t.Errorf("after its watch woke, the waiter made %d gets and %d transactions, want none", g, x)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// lostDestroys is Consul's sessions, but a destruction never arrives.
type lostDestroys struct{ lock.Sessions }

func (lostDestroys) Destroy(string, *api.WriteOptions) (*api.WriteMeta, error) {
	return nil, errors.New("lost on its way")
}

// A waiter's entry that carries the slot it was handed, left behind because its session's
// destruction was lost, is no place in line: it is not ranked, it stops no newcomer, and its
// holder's release deletes it, so that a host that predates the news (and would take it for a
// waiter once the slot is free) never hands it another slot.
func TestLeftoverGrantIsNoWaiter(t *testing.T) {
	s := newSem(t, 1)
	first, err := s.Acquire(testkit.Ctx(t), req("holder", "r0"))
	if err != nil {
		t.Fatal(err)
	}
	lossy, err := lock.New(agent.Client(t).KV(), lock.Options{Prefix: testkit.Prefix(t), Tier: tier, DefaultMax: 1,
		Sessions: lostDestroys{agent.Client(t).Session()}})
	if err != nil {
		t.Fatal(err)
	}
	r := req("w0", "run-w0")
	r.WaitUntil = time.Now().Add(20 * time.Second)
	handed := acquiring(t, lossy, r)
	waitQueue(t, s, 1)
	if err := s.Release(testkit.Ctx(t), &lock.Slot{Record: first.Record}); err != nil {
		t.Fatal(err)
	}
	slot := <-handed
	if slot == nil {
		t.Fatal("w0 got no slot")
	}
	if _, ok := values(t)["queue/w0"]; !ok {
		t.Fatal("w0's entry went, want it left behind (its session's destruction lost)")
	}
	snap, err := s.Read(testkit.Ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Queue) != 0 {
		t.Errorf("queue %+v, want w0's leftover entry not ranked", snap.Queue)
	}
	w1 := waiter(t, s, "w1", 20*time.Second)
	waitQueue(t, s, 1)
	if err := s.Release(testkit.Ctx(t), slot); err != nil {
		t.Fatal(err)
	}
	if err := <-w1; err != nil {
		t.Fatal(err)
	}
	after := values(t)
	if e, ok := after["queue/w0"]; ok {
		t.Errorf("queue/w0 = %s after w0's release, want it deleted", e)
	}
	if _, ok := after["running/w0"]; ok {
		t.Error("w0 holds a slot again")
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// txnRecorder keeps the operations of every transaction, and counts the single-key gets that
// do not block (looks, not watches).
type txnRecorder struct {
	lock.KV
	mu   sync.Mutex
	ops  []api.KVTxnOps
	gets atomic.Int32
}

func (k *txnRecorder) Get(key string, q *api.QueryOptions) (*api.KVPair, *api.QueryMeta, error) {
	if q == nil || q.WaitIndex == 0 {
		k.gets.Add(1)
	}
	return k.KV.Get(key, q)
}

// txns is the number of transactions so far.
func (k *txnRecorder) txns() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.ops)
}

func (k *txnRecorder) Txn(ops api.KVTxnOps, q *api.QueryOptions) (bool, *api.KVTxnResponse, *api.QueryMeta, error) {
	k.mu.Lock()
	k.ops = append(k.ops, ops)
	k.mu.Unlock()
	return k.KV.Txn(ops, q)
}

// readsBack reports whether the transaction that wrote running/<holder> also read the tier.
func (k *txnRecorder) readsBack(t *testing.T, holder string) bool {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, ops := range k.ops {
		writes, reads := false, false
		for _, op := range ops {
			writes = writes || (op.Verb == api.KVCAS && strings.HasSuffix(op.Key, "/running/"+holder))
			reads = reads || op.Verb == api.KVGetTree
		}
		if writes {
			return reads
		}
	}
	t.Fatalf("no transaction wrote running/%s", holder)
	return false
}

// A run's first look is at its own entry and the slots, not at the line: a run that finds the
// tier full joins without reading the line, and one handed its slot never reads it at all. In
// a burst, the whole-line looks of M hosts were O(M²).
func TestFirstLookDoesNotReadTheLine(t *testing.T) {
	s := newSem(t, 1)
	first, err := s.Acquire(testkit.Ctx(t), req("holder", "r0"))
	if err != nil {
		t.Fatal(err)
	}
	r1 := req("w1", "run-w1")
	r1.WaitUntil = time.Now().Add(30 * time.Second)
	ahead := acquiring(t, s, r1)
	waitQueue(t, s, 1)
	rec := &txnRecorder{KV: agent.Client(t).KV()}
	late := newSemOn(t, rec, 1)
	r := req("w2", "run-w2")
	r.WaitUntil = time.Now().Add(30 * time.Second)
	got := waiterReq(t, late, r)
	waitQueue(t, s, 2)
	if err := s.Release(testkit.Ctx(t), first); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(testkit.Ctx(t), <-ahead); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.ops) == 0 {
		t.Fatal("w2 made no transaction")
	}
	for i, ops := range rec.ops {
		for _, op := range ops {
			if op.Verb == api.KVGetTree && strings.HasSuffix(op.Key, "/queue/") {
				t.Errorf("w2's transaction %d of %d read the whole line (%s)", i+1, len(rec.ops), op.Key)
			}
		}
	}
}

// A newcomer that finds a slot free takes it without reading the line, and reads the line back
// in the take: alone in the tier (for its Release to go without a read), and beside others too.
// A slot is free with someone in line only for a moment, or after a hand edit, as here: the
// limit raised with a plain write, which hands nothing over. The newcomer's take then passed
// the first in line, so it hands the slot to it at once and is turned away (it did not wait).
func TestBlindTakeGivesBackWhatItPassed(t *testing.T) {
	rec := &txnRecorder{KV: agent.Client(t).KV()}
	s := newSemOn(t, rec, 1)
	if _, err := s.Acquire(testkit.Ctx(t), req("h0", "run-h0")); err != nil {
		t.Fatal(err)
	}
	if !rec.readsBack(t, "h0") {
		t.Error("h0, alone in the tier, took its slot without reading the tier back")
	}
	other := newSem(t, 1)
	lock.SetNetLeast(other, time.Hour) // only a hand-over wakes it
	head := waiter(t, other, "w1", 30*time.Second)
	waitQueue(t, s, 1)
	put(t, "max_concurrent", "2")
	_, err := s.Acquire(testkit.Ctx(t), req("n1", "run-n1"))
	if !errors.Is(err, lock.ErrNoSlot) {
		t.Fatalf("the newcomer: %v, want ErrNoSlot (its take passed w1, and gave the slot to it)", err)
	}
	if !rec.readsBack(t, "n1") {
		t.Error("the newcomer took its slot without reading the line back")
	}
	select {
	case err := <-head:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("w1 was not handed the slot the newcomer took past it")
	}
	snap, err := s.Read(testkit.Ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := snap.Holders["n1"]; ok || len(snap.Holders) != 2 {
		t.Errorf("holders %v, want h0 and w1", snap.Holders)
	}
	if _, ok := snap.Converged["n1"]; ok {
		t.Error("the slot given back wrote a convergence for a run that never ran")
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// flakyWatch fails the first watch of holder's entry with a 500, as a Consul in trouble
// answers, and keeps the operations of every transaction.
type flakyWatch struct {
	txnRecorder
	holder string
	failed atomic.Bool
}

func (k *flakyWatch) Get(key string, q *api.QueryOptions) (*api.KVPair, *api.QueryMeta, error) {
	if q != nil && q.WaitIndex > 0 && strings.HasSuffix(key, "/queue/"+k.holder) && k.failed.CompareAndSwap(false, true) {
		return nil, nil, api.StatusError{Code: http.StatusInternalServerError, Body: "injected"}
	}
	return k.txnRecorder.Get(key, q)
}

// The retry of a run that kept its place in line looks at its own entry and the slots first,
// not at the whole line: when Consul is overloaded such retries come in numbers, and in a long
// line a look at the whole of it is what overloads Consul.
func TestRetriedAcquireLooksAtItsOwnPlaceFirst(t *testing.T) {
	s := newSem(t, 1)
	first, err := s.Acquire(testkit.Ctx(t), req("holder", "r0"))
	if err != nil {
		t.Fatal(err)
	}
	kv := &flakyWatch{txnRecorder: txnRecorder{KV: agent.Client(t).KV()}, holder: "w1"}
	w1, err := lock.New(kv, lock.Options{Prefix: testkit.Prefix(t), Tier: tier, DefaultMax: 1, Sessions: agent.Client(t).Session(),
		Retryable: consulclient.Retryable})
	if err != nil {
		t.Fatal(err)
	}
	r1 := req("w1", "run-w1")
	r1.WaitUntil = time.Now().Add(20 * time.Second)
	if _, err := w1.Acquire(testkit.Ctx(t), r1); err == nil {
		t.Fatal("w1's first Acquire: want the injected error")
	}
	before := kv.txns()
	got := waiterReq(t, w1, r1)
	waitQueue(t, s, 1)
	if err := s.Release(testkit.Ctx(t), &lock.Slot{Record: first.Record}); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("w1's retry: %v", err)
	}
	kv.mu.Lock()
	defer kv.mu.Unlock()
	if len(kv.ops) == before {
		t.Fatal("w1's retry made no transaction")
	}
	for _, op := range kv.ops[before] {
		if op.Verb == api.KVGetTree && strings.HasSuffix(op.Key, "/queue/") {
			t.Errorf("w1's retry first read the whole line (%s)", op.Key)
		}
	}
}

// acquiring starts an Acquire of r in the background; the slot it got (nil on an error, which
// fails the test) arrives on the channel. A test that fails before it takes the slot waits for
// the Acquire to end (testkit.Group).
func acquiring(t *testing.T, s *lock.Semaphore, r lock.Request) <-chan *lock.Slot {
	got := make(chan *lock.Slot, 1)
	testkit.NewGroup(t).Go(func(ctx context.Context) {
		slot, err := s.Acquire(ctx, r)
		if err != nil {
			t.Error(err)
		}
		got <- slot
	})
	return got
}

// waiterReq is waiter for a request of the test's making: the error of Acquire, or of a slot
// that is not the request's run's.
func waiterReq(t *testing.T, s *lock.Semaphore, r lock.Request) <-chan error {
	got := make(chan error, 1)
	go func() {
		slot, err := s.Acquire(testkit.Ctx(t), r)
		if err == nil && (slot.Holder != r.Holder || slot.RunID != r.RunID) {
			err = fmt.Errorf("got %s's slot of run %s", slot.Holder, slot.RunID)
		}
		got <- err
	}()
	return got
}
