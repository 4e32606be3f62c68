package lock

import (
	"fmt"
	"testing"

	"github.com/hashicorp/consul/api"
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
		idx := uint64(10)
		pair := func(key, value string) *api.KVPair {
			idx++
			return &api.KVPair{Key: s.base + key, Value: []byte(value), ModifyIndex: idx, CreateIndex: idx}
		}
		pairs := api.KVPairs{pair(keyMax, "1"), pair(keyCurrent, "1"),
			pair(runningDir+"h0", `{"holder":"h0","run_id":"r0","state":"running","started_at":"2026-12-06T10:00:00Z"}`)}
		for i, c := range []string{"null", tc.converged} {
			w := pair(fmt.Sprintf("%sw%d", queueDir, i+1), fmt.Sprintf(`{"holder":"w%d","run_id":"rw%d","converged_at":%s}`, i+1, i+1, c))
			w.Session = "s"
			pairs = append(pairs, w)
		}
		snap := newSnapshot("prod/web", 1, tc.order, pairs, s.base)
		tx, err := s.releaseTxn(snap, &Slot{Record: snap.Holders["h0"]}, false)
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
