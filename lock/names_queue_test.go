package lock

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/lock/schema"
)

// Queue holder names are checked when read, like slot holders: an invalid one is suspect,
// named by its key, never a waiter, and (the queue being only an order) stops no run.
func TestSnapshotQueueNames(t *testing.T) {
	base := "chef/prod/web/"
	for _, tc := range []struct {
		name, holder string
		valid        bool
	}{
		{"plain", "web-3.prod", true},
		{"escape", "q\x1b]0;owned\x07", false},
		{"perfdata", "q | evil=1;2;3", false},
		{"newline", "q\nTIERLOCK OK", false},
		{"slash", "a/b", false},
		{"dot", "..", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := newSnapshot("prod/web", 1, OrderConverged, api.KVPairs{
				{Key: base + "queue/" + tc.holder, Value: []byte(`{"holder":"x","run_id":"r"}`), Session: "s", CreateIndex: 5},
			}, base)
			if tc.valid {
				if len(snap.Queue) != 1 || snap.Queue[0].Holder != tc.holder || len(snap.Problems) != 0 {
					t.Errorf("queue %v, problems %v; want one waiter %q", snap.Queue, snap.Problems, tc.holder)
				}
				return
			}
			if len(snap.Queue) != 0 {
				t.Errorf("an invalid name is a waiter: %v", snap.Queue)
			}
			if len(snap.Problems) != 0 || len(snap.Suspect) != 1 || !strings.Contains(snap.Suspect[0].Error(), "queue holder") {
				t.Errorf("problems %v, suspect %v; want no problem and one suspect naming the queue holder", snap.Problems, snap.Suspect)
			}
		})
	}
}

// A queue entry of the wrong shape, though bound to a live session, ranks nowhere: ranked, it
// would stand first and never be handed a slot (a grant needs its run), so the tier would wait
// on it while its session lives. It is suspect, for check to report.
func TestSnapshotQueueShapes(t *testing.T) {
	base := "chef/prod/web/"
	for _, tc := range []struct {
		name, value string
		waiter      bool
		says        string
	}{
		{"tierlock's", `{"holder":"a","run_id":"r1"}`, true, ""},
		{"empty object", `{}`, false, "names no run_id"},
		{"null", `null`, false, "names no run_id"},
		{"empty value", ``, false, "not a tierlock waiter"},
		{"not JSON", `x`, false, "not a tierlock waiter"},
		{"array", `[1]`, false, "not a tierlock waiter"},
		{"run_id not a string", `{"run_id":7}`, false, "not a tierlock waiter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := newSnapshot("prod/web", 1, OrderConverged, api.KVPairs{
				{Key: base + "queue/a", Value: []byte(tc.value), Session: "s", CreateIndex: 5},
				{Key: base + "queue/b", Value: []byte(`{"holder":"b","run_id":"r2"}`), Session: "s", CreateIndex: 6},
			}, base)
			if tc.waiter {
				if len(snap.Queue) != 2 || len(snap.Suspect) != 0 {
					t.Errorf("queue %v, suspect %v; want both waiters", snap.Queue, snap.Suspect)
				}
				return
			}
			if len(snap.Queue) != 1 || snap.Queue[0].Holder != "b" {
				t.Errorf("queue %v; want b alone", snap.Queue)
			}
			if d := snap.Decide("b", ""); d != Take {
				t.Errorf("b decides %v with one free slot; want %v", d, Take)
			}
			if len(snap.Suspect) != 1 || !strings.Contains(snap.Suspect[0].Error(), tc.says) ||
				!strings.Contains(snap.Suspect[0].Error(), "queue/a") {
				t.Errorf("suspect %v; want one naming queue/a and saying %q", snap.Suspect, tc.says)
			}
		})
	}
}

// A waiter of a newer waiting protocol than this tierlock's is ranked as usual but never handed
// a slot nor nudged (its record would be written, and its entry re-encoded, by a host that does
// not know all it means); Newer names it, for the run's log. Protocol 2 and entries without a
// protocol (older versions) are handed slots as always.
func TestNewerProtocolIsNotHandedASlot(t *testing.T) {
	s, err := New(nil, Options{Tier: "prod/web"})
	if err != nil {
		t.Fatal(err)
	}
	entry := func(holder string, idx uint64, protocol int) *api.KVPair {
		return &api.KVPair{Key: s.base + "queue/" + holder, Session: "s", CreateIndex: idx, ModifyIndex: idx,
			Value: []byte(fmt.Sprintf(`{"holder":%q,"run_id":"r-%s","protocol":%d}`, holder, holder, protocol))}
	}
	snap := newSnapshot("prod/web", 1, OrderArrival, api.KVPairs{
		{Key: s.base + "max_concurrent", Value: []byte("3"), ModifyIndex: 1},
		entry("future", 5, schema.Protocol+1), entry("old", 6, 0), entry("today", 7, schema.Protocol),
	}, s.base)
	if len(snap.Queue) != 3 || snap.Queue[0].Holder != "future" {
		t.Fatalf("queue %v: want the newer waiter ranked first", snap.Queue)
	}
	ops, to, _, err := s.grants(snap, "", 0, 0, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if to["future"] || !to["old"] || !to["today"] || len(ops) != 2*opsPerGrant {
		t.Errorf("granted %v in %d ops: want old and today, never future", to, len(ops))
	}
	if op := s.nudge(snap, "", 0, map[string]bool{}); op == nil || !strings.HasSuffix(op.Key, "queue/old") {
		t.Errorf("nudge %v: want the entry of old, the first it may hand a slot to", op)
	}
	if got := snap.Newer(); len(got) != 1 || got[0] != fmt.Sprintf("queue/future (protocol %d)", schema.Protocol+1) {
		t.Errorf("Newer() = %q", got)
	}
}

// A mover's take that leaves slots free hands them to the waiters behind it, as any take
// does; the gate must count the taker itself, whom the snapshot does not show as a holder
// yet. (The history checker of reliability's TestRolloutUnderFaults found three movers in
// a step of two when it did not.)
func TestMoverTakeCountsItselfInItsGrants(t *testing.T) {
	s, err := New(nil, Options{Tier: "prod/web"})
	if err != nil {
		t.Fatal(err)
	}
	recent := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	snap := newSnapshot("prod/web", 5, OrderConverged, api.KVPairs{
		{Key: s.base + "rollout", Value: []byte(`{"revision":"B","state":"rolling","step":0}`), ModifyIndex: 3},
		{Key: s.base + "queue/w", Session: "s", CreateIndex: 5, ModifyIndex: 5,
			Value: []byte(`{"holder":"w","run_id":"rw","revision":"B","mover":true,"protocol":3,"converged_at":"` + recent + `"}`)},
	}, s.base)
	d, g, ro := snap.decide("x", "B")
	if d != Take || g != gateOpen || ro.Admitted != 1 {
		t.Fatalf("x, never converged, ranks ahead of w: %v %v %+v", d, g, ro)
	}
	step := ro.Step
	rec := &schema.Record{Holder: "x", RunID: "rx", State: schema.StateRunning, StartedAt: time.Now(), Revision: "B", Batch: &step}
	txn, err := s.acquireTxn(snap, "x", rec, &ro)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range txn.writes {
		if strings.HasSuffix(op.Key, "running/w") {
			t.Fatalf("the canary's take handed w a slot of the same step of 1: %v", op.Key)
		}
	}
}

// The canary's release opens the next step in its own transaction: the releasing mover no
// longer counts as in flight there, so the grants hand step 1's two places over at once,
// with no second write to admit them.
func TestCanaryReleaseHandsTheNextStepOver(t *testing.T) {
	s, err := New(nil, Options{Tier: "prod/web"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	entry := func(h string, idx uint64) *api.KVPair {
		return &api.KVPair{Key: s.base + "queue/" + h, Session: "s", CreateIndex: idx, ModifyIndex: idx,
			Value: []byte(`{"holder":"` + h + `","run_id":"r` + h + `","revision":"B","mover":true,"protocol":3}`)}
	}
	snap := newSnapshot("prod/web", 5, OrderArrival, api.KVPairs{
		{Key: s.base + "current", Value: []byte("1"), ModifyIndex: 2},
		{Key: s.base + "rollout", Value: []byte(`{"revision":"B","state":"rolling","step":0,"admitted":1}`), ModifyIndex: 3},
		{Key: s.base + "running/c", ModifyIndex: 4,
			Value: []byte(`{"holder":"c","run_id":"rc","state":"running","started_at":"` + now.Format(time.RFC3339) + `","attempts":1,"revision":"B","batch":0}`)},
		entry("w1", 5), entry("w2", 6), entry("w3", 7),
	}, s.base)
	snap.now = now
	txn, err := s.releaseTxn(snap, &Slot{Record: snap.Holders["c"]}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var granted []string
	for _, op := range txn.writes {
		if h, ok := strings.CutPrefix(op.Key, s.base+"running/"); ok && op.Verb == api.KVCAS {
			granted = append(granted, h)
		}
	}
	if strings.Join(granted, ",") != "w1,w2" {
		t.Errorf("the canary's release handed slots to %v, want w1 and w2 (step 1, two places)", granted)
	}
}
