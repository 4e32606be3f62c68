package lock_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// The release of a successful run writes converged/<holder> in the same transaction: the record
// and the deletion of running/ and the write of current share one ModifyIndex, so the record
// costs no extra request.
func TestReleaseWritesConvergedInSameTxn(t *testing.T) {
	now := time.Date(2026, 11, 21, 9, 15, 2, 0, time.UTC)
	clock := now
	s, err := lock.New(agent.Client(t).KV(), lock.Options{Prefix: testkit.Prefix(t), Tier: tier, DefaultMax: 1, Sessions: agent.Client(t).Session(),
		Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	r := req("web-1", "r1")
	r.InstanceID, r.Node = "i-0abc", "node-1"
	slot, err := s.Acquire(testkit.Ctx(t), r)
	if err != nil {
		t.Fatal(err)
	}
	clock = now.Add(90 * time.Second)
	if err := s.Release(testkit.Ctx(t), slot); err != nil {
		t.Fatal(err)
	}
	base := testkit.Prefix(t) + "/" + tier + "/"
	conv, _, err := agent.Client(t).KV().Get(base+"converged/web-1", &api.QueryOptions{RequireConsistent: true})
	if err != nil || conv == nil {
		t.Fatalf("converged/web-1: %v %v", conv, err)
	}
	cur, _, err := agent.Client(t).KV().Get(base+"current", &api.QueryOptions{RequireConsistent: true})
	if err != nil || cur == nil {
		t.Fatalf("current: %v %v", cur, err)
	}
	if conv.ModifyIndex != cur.ModifyIndex {
		t.Errorf("converged/ written at index %d, the release at %d: not one transaction", conv.ModifyIndex, cur.ModifyIndex)
	}
	var c map[string]any
	if err := json.Unmarshal(conv.Value, &c); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"holder": "web-1", "converged_at": "2026-11-21T09:16:32Z", "run_id": "r1",
		"duration_seconds": 90.0, "instance_id": "i-0abc", "node": "node-1"}
	for k, v := range want {
		if c[k] != v {
			t.Errorf("%s = %v, want %v (record %s)", k, c[k], v, conv.Value)
		}
	}
	snap, err := s.Read(testkit.Ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := snap.Converged["web-1"]; !got.ConvergedAt.Equal(clock) || got.RunID != "r1" {
		t.Errorf("snapshot convergence %+v", got)
	}
	// A failed run keeps its slot and writes no convergence.
	slot2, err := s.Acquire(testkit.Ctx(t), req("web-2", "r2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.MarkFailed(testkit.Ctx(t), slot2, 1); err != nil {
		t.Fatal(err)
	}
	if got := values(t); got["converged/web-2"] != "" {
		t.Errorf("a failed run wrote converged/web-2: %v", got)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}

// orderSem is a semaphore of the test's tier with one slot, in order o.
func orderSem(t *testing.T, o lock.QueueOrder) *lock.Semaphore {
	t.Helper()
	s, err := lock.New(agent.Client(t).KV(), lock.Options{Prefix: testkit.Prefix(t), Tier: tier, DefaultMax: 1, Sessions: agent.Client(t).Session(), QueueOrder: o})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// converge writes holder's convergence at ago before now, as a release would have.
func converge(t *testing.T, holder string, ago time.Duration) {
	t.Helper()
	v, _ := json.Marshal(schema.Convergence{Holder: holder, ConvergedAt: time.Now().Add(-ago).UTC(), RunID: "old"})
	put(t, "converged/"+holder, string(v))
}

// admitted runs waiters one by one (each queued before the next starts) while "blocker"
// holds the only slot, then releases it and returns the order in which they got the slot.
func admitted(t *testing.T, s *lock.Semaphore, holders []string) []string {
	t.Helper()
	first, err := s.Acquire(testkit.Ctx(t), req("blocker", "r0"))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, len(holders))
	// g lets the test wait for every release: the last one is still in flight when its
	// holder's name arrives, and a test that returned then would cancel it and check the
	// invariant half way.
	g := testkit.NewGroup(t)
	for i, h := range holders {
		g.Go(func(ctx context.Context) {
			r := req(h, "run-"+h)
			r.WaitUntil = time.Now().Add(30 * time.Second)
			slot, err := s.Acquire(ctx, r)
			if err != nil {
				t.Errorf("%s: %v", h, err)
				got <- "error"
				return
			}
			got <- h
			time.Sleep(20 * time.Millisecond)
			if err := s.Release(ctx, slot); err != nil {
				t.Errorf("%s release: %v", h, err)
			}
		})
		waitQueue(t, s, i+1)
	}
	if err := s.Release(testkit.Ctx(t), first); err != nil {
		t.Fatal(err)
	}
	var order []string
	for range holders {
		order = append(order, <-got)
	}
	g.Wait()
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
	return order
}

// Mixed histories: never converged first (in arrival order), then the longest unconverged.
// In arrival order, the same arrivals are served as they came.
func TestQueueOrderMixedHistories(t *testing.T) {
	arrivals := []string{"fresh-recent", "stale-3h", "never-a", "stale-1h", "never-b"}
	for _, tc := range []struct {
		order lock.QueueOrder
		want  []string
	}{
		{lock.OrderConverged, []string{"never-a", "never-b", "stale-3h", "stale-1h", "fresh-recent"}},
		{lock.OrderArrival, arrivals},
	} {
		t.Run(string(tc.order), func(t *testing.T) {
			converge(t, "fresh-recent", time.Minute)
			converge(t, "stale-3h", 3*time.Hour)
			converge(t, "stale-1h", time.Hour)
			got := admitted(t, orderSem(t, tc.order), arrivals)
			if len(got) != len(tc.want) {
				t.Fatalf("admitted %v", got)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("admitted in order %v, want %v", got, tc.want)
				}
			}
		})
	}
}

// A newcomer that ranks ahead of every waiter goes ahead: with a slot free and waiters that
// converged recently still queued, a host that never converged takes the slot at once.
// In arrival order it waits behind them.
func TestQueueNewcomerRanksAhead(t *testing.T) {
	for _, o := range []lock.QueueOrder{lock.OrderConverged, lock.OrderArrival} {
		t.Run(string(o), func(t *testing.T) {
			s := orderSem(t, o)
			converge(t, "w1", time.Minute)
			blocker, err := s.Acquire(testkit.Ctx(t), req("blocker", "r0"))
			if err != nil {
				t.Fatal(err)
			}
			w1 := waiter(t, s, "w1", 20*time.Second)
			waitQueue(t, s, 1)
			snap, err := s.Read(testkit.Ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			ahead := snap.Ahead("newcomer")
			if want := map[lock.QueueOrder]int{lock.OrderConverged: 0, lock.OrderArrival: 1}[o]; ahead != want {
				t.Errorf("newcomer has %d ahead, want %d", ahead, want)
			}
			if q := snap.Queue[0]; q.ConvergedAt == nil {
				t.Errorf("w1's queue entry carries no converged_at: %+v", q)
			}
			// The newcomer joins the queue too; the blocker's release lets exactly one in.
			nc := waiter(t, s, "newcomer", 20*time.Second)
			waitQueue(t, s, 2)
			if err := s.Release(testkit.Ctx(t), blocker); err != nil {
				t.Fatal(err)
			}
			first, second := w1, nc
			if o == lock.OrderConverged {
				first, second = nc, w1
			}
			if err := <-first; err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-second:
				t.Fatalf("the one ranked behind got a slot too (%v)", err)
			case <-time.After(200 * time.Millisecond):
			}
			snap, err = s.Read(testkit.Ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			for h := range snap.Holders {
				slot := &lock.Slot{Record: snap.Holders[h]}
				if err := s.Release(testkit.Ctx(t), slot); err != nil {
					t.Fatal(err)
				}
			}
			if err := <-second; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Forget removes the converged/ record and nothing else; forgetting again finds nothing.
func TestForget(t *testing.T) {
	s := newSem(t, 1)
	converge(t, "moved", time.Hour)
	converge(t, "stays", time.Hour)
	if _, err := s.Acquire(testkit.Ctx(t), req("moved", "r1")); err != nil { // a held slot is not forgotten
		t.Fatal(err)
	}
	before := dump(t)
	c, found, err := s.Forget(testkit.Ctx(t), "moved")
	if err != nil || !found || c.Holder != "moved" || c.RunID != "old" {
		t.Fatalf("Forget = %+v %v %v", c, found, err)
	}
	after := dump(t)
	delete(before, "converged/moved")
	if len(after) != len(before) {
		t.Errorf("after forget %v, want %v", after, before)
	}
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s changed: %s -> %s", k, v, after[k])
		}
	}
	if _, found, err := s.Forget(testkit.Ctx(t), "moved"); err != nil || found {
		t.Errorf("second forget: found %v, %v", found, err)
	}
	if _, _, err := s.Forget(testkit.Ctx(t), "bad\nname"); !errors.Is(err, schema.ErrInvalidName) {
		t.Errorf("bad name: %v", err)
	}
}

// Evict removes the matching hosts' converged/ records with their slots and queue entries.
func TestEvictRemovesConverged(t *testing.T) {
	s := newSem(t, 1)
	converge(t, "dead", time.Hour)
	converge(t, "alive", time.Hour)
	ev, err := s.Evict(testkit.Ctx(t), func(h string, _ schema.Record) bool { return h == "dead" })
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Converged) != 1 || ev.Converged[0].Holder != "dead" {
		t.Errorf("evicted %+v", ev)
	}
	got := values(t)
	if _, ok := got["converged/dead"]; ok {
		t.Errorf("converged/dead still there: %v", got)
	}
	if _, ok := got["converged/alive"]; !ok {
		t.Errorf("converged/alive gone: %v", got)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
}
