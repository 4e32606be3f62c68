package lock_test

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// byInstance matches the slots recorded with instance id, or held under that name.
func byInstance(id string) func(string, schema.Record) bool {
	return func(holder string, rec schema.Record) bool { return rec.InstanceID == id || holder == id }
}

func TestEvictFreesEveryMatchingSlotInOneWrite(t *testing.T) {
	s := newSem(t, -1)
	for _, h := range []struct{ holder, instance string }{
		{"web-1", "i-dead"}, {"web-2", "i-live"}, {"web-3", "i-dead"},
	} {
		r := req(h.holder, "r-"+h.holder)
		r.InstanceID = h.instance
		if _, err := s.Acquire(testkit.Ctx(t), r); err != nil {
			t.Fatal(err)
		}
	}
	// Older tooling wrote a key named after the instance, with a value we cannot read.
	put(t, "running/i-dead", "not a record")
	put(t, "current", "4")
	before := dump(t)

	freed, err := s.Evict(testkit.Ctx(t), byInstance("i-dead"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range freed.Slots {
		got = append(got, r.Holder+":"+r.InstanceID)
	}
	if want := []string{"i-dead:", "web-1:i-dead", "web-3:i-dead"}; !reflect.DeepEqual(got, want) {
		t.Errorf("freed %v, want %v", got, want)
	}
	after := dump(t)
	if after["running/web-2"] != before["running/web-2"] {
		t.Errorf("the live slot was rewritten: %s -> %s", before["running/web-2"], after["running/web-2"])
	}
	if v := values(t); v["current"] != "1" || len(v) != 2 {
		t.Errorf("after evict: %v", v)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))

	// A repeated eviction finds nothing and writes nothing.
	freed, err = s.Evict(testkit.Ctx(t), byInstance("i-dead"))
	if err != nil || len(freed.Slots)+len(freed.Waiters) != 0 {
		t.Errorf("repeated evict: %v, %v", freed, err)
	}
	if again := dump(t); !reflect.DeepEqual(again, after) {
		t.Errorf("repeated evict wrote:\n%v\n%v", after, again)
	}
}

// A host name reused by a new instance: the new run re-enters the slot between Evict's read
// and its write. The lost check-and-set makes Evict judge the new record, which is not dead.
func TestEvictJudgesAgainAfterALostRace(t *testing.T) {
	s := newSem(t, 2)
	old := req("web-1", "r-old")
	old.InstanceID = "i-old"
	if _, err := s.Acquire(testkit.Ctx(t), old); err != nil {
		t.Fatal(err)
	}
	asked := 0
	freed, err := s.Evict(testkit.Ctx(t), func(holder string, rec schema.Record) bool {
		asked++
		if asked == 1 {
			fresh := req("web-1", "r-new")
			fresh.InstanceID = "i-new"
			if _, err := s.Acquire(testkit.Ctx(t), fresh); err != nil {
				t.Errorf("re-entry by the new instance: %v", err)
			}
		}
		return rec.InstanceID == "i-old"
	})
	if err != nil || len(freed.Slots) != 0 {
		t.Fatalf("evict freed %v, %v; want nothing", freed, err)
	}
	if asked != 2 {
		t.Errorf("match asked %d times, want 2 (once per read)", asked)
	}
	snap, err := s.Read(testkit.Ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if rec := snap.Holders["web-1"]; rec.InstanceID != "i-new" || rec.Attempts != 2 {
		t.Errorf("the new instance's slot: %+v", rec)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// More slots than one transaction can delete are freed in several, each keeping the invariant.
func TestEvictManySlots(t *testing.T) {
	s := newSem(t, -1)
	const n = 140
	var ops api.KVTxnOps
	flush := func() {
		if ok, resp, _, err := agent.Client(t).KV().Txn(ops, nil); err != nil || !ok {
			t.Fatalf("seed: %v %+v", err, resp)
		}
		ops = nil
	}
	for i := range n {
		ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: testkit.Prefix(t) + "/" + tier + fmt.Sprintf("/running/h-%03d", i),
			Value: []byte(`{"state":"failed","started_at":"2026-01-01T00:00:00Z","instance_id":"i-x"}`)})
		if len(ops) == 64 {
			flush()
		}
	}
	ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: testkit.Prefix(t) + "/" + tier + "/current", Value: []byte(fmt.Sprint(n))})
	flush()

	freed, err := s.Evict(testkit.Ctx(t), byInstance("i-x"))
	if err != nil {
		t.Fatal(err)
	}
	if got := freed.Slots; len(got) != n || got[0].Holder != "h-000" || got[n-1].Holder != "h-139" {
		t.Errorf("freed %d slots (%v ... %v), want %d in order", len(got), got[0].Holder, got[len(got)-1].Holder, n)
	}
	if v := values(t); v["current"] != "0" || len(v) != 1 {
		t.Errorf("after evict: %d keys, current %q", len(v), v["current"])
	}
}

// A dead host may also wait in the queue of another tier (its session has not expired yet):
// its entry goes in the same transaction as its slot, and the waiter behind it moves up.
func TestEvictRemovesQueueEntries(t *testing.T) {
	s := newSem(t, 1)
	dead := req("web-3", "r-dead")
	dead.InstanceID = "i-dead"
	if _, err := s.Acquire(testkit.Ctx(t), dead); err != nil {
		t.Fatal(err)
	}
	// web-3 holds a slot here and, with another run, waits in prod/db behind db-1's slot;
	// web-4 waits behind it.
	again := req("web-3", "r-again")
	again.InstanceID, again.Node = "i-dead", "node-3"
	again.WaitUntil = time.Now().Add(time.Minute)
	stuck := make(chan error, 1)
	other, err := lock.New(agent.Client(t).KV(), lock.Options{Prefix: testkit.Prefix(t), Tier: "prod/db", DefaultMax: 1, Sessions: agent.Client(t).Session()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Acquire(testkit.Ctx(t), req("db-1", "r-db")); err != nil {
		t.Fatal(err)
	}
	go func() { _, err := other.Acquire(testkit.Ctx(t), again); stuck <- err }()
	waitQueue(t, other, 1)
	behind := waiter(t, other, "web-4", time.Minute)
	waitQueue(t, other, 2)

	snap, err := other.Read(testkit.Ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if w := snap.Queue[0]; w.Holder != "web-3" || w.InstanceID != "i-dead" || w.Node != "node-3" {
		t.Fatalf("the queue entry does not say whose it is: %+v", w)
	}
	ev, err := other.Evict(testkit.Ctx(t), byInstance("i-dead"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Slots) != 0 || len(ev.Waiters) != 1 || ev.Waiters[0].Holder != "web-3" {
		t.Errorf("evicted %+v, want web-3's queue entry", ev)
	}
	snap, err = other.Read(testkit.Ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Queue) != 1 || snap.Queue[0].Holder != "web-4" || snap.Current != 1 {
		t.Errorf("after: queue %+v, current %d", snap.Queue, snap.Current)
	}
	// In the first tier the slot goes, as before.
	if ev, err := s.Evict(testkit.Ctx(t), byInstance("i-dead")); err != nil || len(ev.Slots) != 1 {
		t.Errorf("slot: %+v, %v", ev, err)
	}
	// Freeing db-1's slot lets web-4, now at the head, in. (The evicted waiter, alive in this
	// test, queues again behind it.)
	if _, err := other.ForceRelease(testkit.Ctx(t), "db-1", "r-db"); err != nil {
		t.Fatal(err)
	}
	if err := <-behind; err != nil {
		t.Errorf("web-4: %v", err)
	}
	if _, err := other.ForceRelease(testkit.Ctx(t), "web-4", "run-web-4"); err != nil {
		t.Fatal(err)
	}
	if err := <-stuck; err != nil {
		t.Errorf("web-3, queued again: %v", err)
	}
}
