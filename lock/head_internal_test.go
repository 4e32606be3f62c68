package lock

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/lock/schema"
)

// A release that reads the line lists its head, and reads the line back in its write (to catch
// a newcomer ranking before the bound) only when a newcomer could: in the converged order, when
// the bound converged. A bound that never converged ranks after every newcomer, who arrived
// later with no convergence either, or converged.
func TestHeadCheckOnlyWhenANewcomerCouldPass(t *testing.T) {
	s, err := New(nil, Options{Tier: "prod/web"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		order     QueueOrder
		converged string // the last waiter's converged_at ("null": never)
		check     bool
	}{
		{OrderConverged, "null", false},
		{OrderConverged, `"2026-12-06T10:00:00Z"`, true},
		{OrderArrival, `"2026-12-06T10:00:00Z"`, false},
	} {
		pair := pairsOn(s)
		pairs := api.KVPairs{pair(keyMax, "1"), pair(keyCurrent, "1"),
			pair(runningDir+"h0", `{"holder":"h0","run_id":"r0","state":"running","started_at":"2026-12-06T10:00:00Z"}`)}
		for i, c := range []string{"null", tc.converged} {
			w := pair(fmt.Sprintf("%sw%d", queueDir, i+1), fmt.Sprintf(`{"holder":"w%d","run_id":"rw%d","converged_at":%s}`, i+1, i+1, c))
			w.Session = "s"
			pairs = append(pairs, w)
		}
		snap := newSnapshot("prod/web", 1, tc.order, pairs, s.base)
		tx, err := s.releaseTxn(snap, &Slot{Record: snap.Holders["h0"]}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.listHead(snap, tx, "h0"); err != nil {
			t.Fatal(err)
		}
		if snap.Queue[0].Holder != "w1" || !tx.served["w1"] {
			t.Fatalf("%s, bound %s: the release did not serve w1 first (line %v)", tc.order, tc.converged, snap.Queue)
		}
		if tx.headCheck != tc.check {
			t.Errorf("%s, bound converged %s: headCheck %v, want %v", tc.order, tc.converged, tx.headCheck, tc.check)
		}
	}
}

// A refill appends to the head the waiters after its bound that it does not list, in rank
// order, up to headLen, and moves the bound to the last of them; it adds nothing before the
// bound (such a newcomer drops the head instead) and nothing already listed, and drops the
// listed waiters no longer in line.
func TestTopUp(t *testing.T) {
	at := func(m int) *time.Time { c := time.Date(2026, 12, 6, 10, m, 0, 0, time.UTC); return &c }
	w := func(name string, idx uint64, conv *time.Time) schema.Waiter {
		return schema.Waiter{Holder: name, RunID: "r" + name, CreateIndex: idx, ModifyIndex: idx, Session: "s", ConvergedAt: conv}
	}
	listed := []schema.Waiter{w("a", 10, at(1)), w("b", 11, at(2))}
	h := &schema.LineHead{Order: string(OrderConverged), Bound: schema.HeadRank{Holder: "b", CreateIndex: 11, ConvergedAt: at(2)}}
	// x was listed and served since (it is not in the line): it is dropped.
	for _, l := range append([]schema.Waiter{w("x", 9, at(0))}, listed...) {
		h.Waiters = append(h.Waiters, schema.HeadWaiterOf(l))
	}
	// The line as read: a before the bound and listed, n1 before it and not listed (it joined
	// since and dropped the head; here only topUp's part is checked), c..z after it.
	line := append([]schema.Waiter{w("n1", 30, nil)}, listed...)
	for i := range 20 {
		line = append(line, w(fmt.Sprintf("c%02d", i), uint64(40+i), at(3+i)))
	}
	up := topUp(OrderConverged, h, line, headLen)
	if up == nil {
		t.Fatal("nothing added")
	}
	var names []string
	for _, l := range up.Waiters {
		names = append(names, l.Holder)
	}
	want := []string{"a", "b"}
	for i := range headLen - 2 {
		want = append(want, fmt.Sprintf("c%02d", i))
	}
	if !slices.Equal(names, want) {
		t.Errorf("topped up: %v, want %v", names, want)
	}
	if b := up.Bound; b.Holder != "c13" || b.CreateIndex != 53 || !b.ConvergedAt.Equal(*at(16)) {
		t.Errorf("bound %+v, want c13's rank", b)
	}
	if len(h.Waiters) != 3 || h.Bound.Holder != "b" {
		t.Errorf("the head read was changed: %+v", h)
	}
	if up := topUp(OrderConverged, h, append([]schema.Waiter{w("n1", 30, nil)}, listed...), headLen); up != nil {
		t.Errorf("topped up with nobody after the bound: %+v", up.Waiters)
	}
}

// A look that finds a slot free with the run in line and the line unread settles first (a
// random moment, then a look at the slots and the head) when the run lost a race
// for a slot or resumed a place an earlier call kept, once, in a tier of any width; otherwise
// it reads the line at once. Resumed retries come in numbers when a burst overloads Consul,
// and each that read the line at once fed the overload (bench/README.md, "What a burst that
// degrades does, second by second").
func TestResumedPlaceSettlesBeforeReadingTheLine(t *testing.T) {
	for _, tc := range []struct {
		name           string
		max            int
		resumed, raced bool
		settled        bool // settled once already
		settle         bool // the look settles (a snapshot and thenSettle); else it reads the line
	}{
		{"resumed, wide tier", 20, true, false, false, true},
		{"lost a race, wide tier", 20, false, true, false, true},
		{"neither, wide tier", 20, false, false, false, false},
		{"resumed, settled already", 20, true, false, true, false},
		{"resumed, narrow tier", headLen, true, false, false, true},
		{"lost a race, narrow tier", headLen, false, true, false, true},
		{"neither, narrow tier", headLen, false, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(nil, Options{Tier: "prod/web", DefaultMax: tc.max})
			if err != nil {
				t.Fatal(err)
			}
			pair := pairsOn(s)
			pairs := api.KVPairs{pair(keyMax, fmt.Sprint(tc.max)), pair(keyCurrent, fmt.Sprint(tc.max-1))}
			for i := range tc.max - 1 {
				h := fmt.Sprintf("h%02d", i)
				pairs = append(pairs, pair(runningDir+h, fmt.Sprintf(`{"holder":%q,"run_id":"r%s","state":"running","started_at":"2026-12-06T10:00:00Z"}`, h, h)))
			}
			own := pair(queueDir+"w1", `{"holder":"w1","run_id":"rw1"}`)
			own.Session = "s1"
			snap := newSnapshot("prod/web", tc.max, OrderArrival, append(pairs, own), s.base)
			snap.partialQueue = true // a look at the slots and the run's own entry only
			a := &acquisition{s: s, req: Request{Record: schema.Record{Holder: "w1", RunID: "rw1"}, WaitUntil: time.Now().Add(time.Minute)},
				q: &queue{session: "s1"}, next: snap, resumed: tc.resumed, settled: tc.settled}
			if tc.raced {
				a.races = 1
			}
			got, decision, _, err := a.look(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if settles := got != nil && a.then == thenSettle; settles != tc.settle {
				t.Errorf("settles %v (snapshot %v, then %v, decision %v), want %v", settles, got != nil, a.then, decision, tc.settle)
			}
			if !tc.settle && got != nil {
				t.Errorf("decided on a look without the line (decision %v): want a read of the line", decision)
			}
		})
	}
}
