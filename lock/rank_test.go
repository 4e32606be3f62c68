package lock

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/lock/schema"
)

// The ranking is pure: data in, order out.
func TestRanking(t *testing.T) {
	base := "chef/prod/web/"
	at := func(h int) string {
		return time.Date(2026, 11, 21, h, 0, 0, 0, time.UTC).Format(time.RFC3339)
	}
	// entry is a queue entry created at index idx, converged at hour h (-1: never).
	entry := func(holder string, idx uint64, h int) *api.KVPair {
		conv := "null"
		if h >= 0 {
			conv = fmt.Sprintf("%q", at(h))
		}
		return &api.KVPair{Key: base + "queue/" + holder, Session: "s", CreateIndex: idx, ModifyIndex: idx,
			Value: []byte(fmt.Sprintf(`{"holder":%q,"run_id":"r","converged_at":%s}`, holder, conv))}
	}
	record := func(holder string, h int) *api.KVPair {
		return &api.KVPair{Key: base + "converged/" + holder, CreateIndex: 1, ModifyIndex: 1,
			Value: []byte(fmt.Sprintf(`{"holder":%q,"converged_at":%q,"run_id":"x"}`, holder, at(h)))}
	}
	for _, tc := range []struct {
		name      string
		order     QueueOrder
		pairs     api.KVPairs
		want      string // the queue as ranked
		newcomer  string // a holder not queued
		wantAhead int    // waiters ranked ahead of newcomer
	}{
		{"equal history keeps arrival", OrderConverged,
			api.KVPairs{entry("c", 30, -1), entry("a", 10, -1), entry("b", 20, -1)}, "a b c", "d", 3},
		{"equal convergence keeps arrival", OrderConverged,
			api.KVPairs{entry("c", 30, 5), entry("a", 10, 5), entry("b", 20, 5), record("d", 5)}, "a b c", "d", 3},
		{"never converged first", OrderConverged,
			api.KVPairs{entry("old", 10, 3), entry("never", 20, -1), entry("new", 5, 9)}, "never old new", "x", 1},
		{"oldest convergence first", OrderConverged,
			api.KVPairs{entry("h9", 10, 9), entry("h1", 20, 1), entry("h5", 30, 5)}, "h1 h5 h9", "x", 0},
		{"newcomer that never converged ranks ahead of the converged", OrderConverged,
			api.KVPairs{entry("h9", 10, 9), entry("never", 20, -1), entry("h5", 30, 5)}, "never h5 h9", "fresh", 1},
		{"newcomer ranks by its record", OrderConverged,
			api.KVPairs{entry("h9", 10, 9), entry("h1", 20, 1), record("mid", 5)}, "h1 h9", "mid", 1},
		{"newcomer ties go to those already queued", OrderConverged,
			api.KVPairs{entry("h5", 10, 5), record("mid", 5)}, "h5", "mid", 1},
		{"arrival ignores convergence", OrderArrival,
			api.KVPairs{entry("old", 10, 3), entry("never", 20, -1), entry("new", 5, 9)}, "new old never", "fresh", 3},
		{"empty queue", OrderConverged, nil, "", "x", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := newSnapshot("prod/web", 1, tc.order, tc.pairs, base)
			var got []string
			for i, w := range snap.Queue {
				got = append(got, w.Holder)
				if snap.Ahead(w.Holder) != i {
					t.Errorf("Ahead(%s) = %d, want %d", w.Holder, snap.Ahead(w.Holder), i)
				}
			}
			if strings.Join(got, " ") != tc.want {
				t.Errorf("ranked %v, want %s", got, tc.want)
			}
			if n := snap.Ahead(tc.newcomer); n != tc.wantAhead {
				t.Errorf("Ahead(%s) = %d, want %d", tc.newcomer, n, tc.wantAhead)
			}
		})
	}
}

func TestParseConvergence(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		ok          bool
	}{
		{"full", `{"holder":"web-1","converged_at":"2026-11-21T09:15:02Z","run_id":"r","duration_seconds":3.5,"instance_id":"i-1"}`, true},
		{"holder left out", `{"converged_at":"2026-11-21T09:15:02Z"}`, true},
		{"other holder", `{"holder":"web-2","converged_at":"2026-11-21T09:15:02Z"}`, false},
		{"no time", `{"holder":"web-1"}`, false},
		{"bad time", `{"holder":"web-1","converged_at":"yesterday"}`, false},
		{"not json", `2026-11-21T09:15:02Z`, false},
		{"empty", ``, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := schema.ParseConvergence("web-1", []byte(tc.value))
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok %v", err, tc.ok)
			}
			if tc.ok && c.Holder != "web-1" {
				t.Errorf("holder %q", c.Holder)
			}
		})
	}
}

func TestParseQueueOrder(t *testing.T) {
	for in, ok := range map[string]bool{"converged": true, "arrival": true, "": false, "fifo": false, "Arrival": false} {
		if _, err := ParseQueueOrder(in); (err == nil) != ok {
			t.Errorf("ParseQueueOrder(%q) = %v", in, err)
		}
	}
	if _, err := New(nil, Options{Tier: "a/b", QueueOrder: "lifo"}); err == nil || !strings.Contains(err.Error(), `"lifo"`) {
		t.Errorf("New with a bad order: %v", err)
	}
}

// The writes of this feature fit Consul's limit at any number of holders: the release that
// records a convergence, forget, and an eviction that removes converged/ records too.
func TestConvergedTxnsFit(t *testing.T) {
	s, err := New(nil, Options{Tier: "exists/exists"})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, 124, 125, 126, 127, 128, 600, 5000} {
		snap := tierWith(t, s, n, 2)
		for h := range n {
			holder := fmt.Sprintf("holder-%04d", h)
			snap.modify[convergedDir+holder] = 5
			snap.Converged[holder] = schema.Convergence{Holder: holder, ConvergedAt: time.Now()}
		}
		if n > 0 {
			tx, err := s.releaseTxn(snap, &Slot{Record: snap.Holders["holder-0000"]}, 0)
			if err != nil {
				t.Fatal(err)
			}
			ops, err := tx.ops()
			if err != nil {
				t.Fatal(err)
			}
			mandatory, guarded := 5, n-1 // check max, check and delete the slot, convergence, current
			if n-1 < 2 {
				// A slot free under max 2: handed to the waiter in the same write, which
				// leaves the number of holders as it was, so current is not touched.
				mandatory, guarded = mandatory+opsPerGrant-1, 0
			}
			if tx.mandatory() != mandatory || len(ops) != min(maxTxnOps, mandatory+guarded) {
				t.Errorf("release with %d holders: %d mandatory, %d ops", n, tx.mandatory(), len(ops))
			}
			if last := ops[len(ops)-1]; last.Verb != api.KVSet || last.Key != s.base+"converged/holder-0000" {
				t.Errorf("release with %d holders: last op %s %s, want the convergence", n, last.Verb, last.Key)
			}
			tx, _, ok := s.forgetTxn(snap, "holder-0000")
			if ops, err := tx.ops(); !ok || err != nil || len(ops) != 1 || ops[0].Verb != api.KVDeleteCAS {
				t.Errorf("forget with %d holders: %v %v %v", n, ok, ops, err)
			}
		}
		// Evicting every holder: slots, the waiter and the records, in batches within the limit.
		removed := 0
		for {
			ev, tx, more := s.evictTxn(snap, func(string, schema.Record) bool { return true })
			if tx == nil {
				break
			}
			ops, err := tx.ops()
			if err != nil || len(ops) > maxTxnOps {
				t.Fatalf("evict with %d holders: %d ops, %v", n, len(ops), err)
			}
			removed += len(ev.Slots) + len(ev.Waiters) + len(ev.Converged)
			if !more {
				break
			}
			// What this batch removed is gone from the next read.
			for _, r := range ev.Slots {
				delete(snap.modify, runningDir+r.Holder)
				delete(snap.Holders, r.Holder)
				snap.RunningKeys--
			}
			for _, c := range ev.Converged {
				delete(snap.modify, convergedDir+c.Holder)
			}
			snap.Queue = snap.Queue[len(ev.Waiters):]
		}
		if removed != 2*n+1 {
			t.Errorf("evict with %d holders removed %d keys, want %d", n, removed, 2*n+1)
		}
	}
}
