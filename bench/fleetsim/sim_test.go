package main

import (
	"testing"
	"time"
)

// The day of the issue: 200 hosts, 10 slots, runs of 2-4 min, the packaged timer. Arrival order
// leaves hosts that never run; least-recently-converged first serves every host evenly.
func TestConvergedOrderServesEveryHost(t *testing.T) {
	p := Params{Hosts: 200, Slots: 10, RunMin: 2 * time.Minute, RunMax: 4 * time.Minute,
		Period: 15 * time.Minute, Spread: 10 * time.Minute, Wait: 10 * time.Minute, Span: 24 * time.Hour, Seed: 1}
	p.Order = "converged"
	c := Simulate(p)
	p.Order = "arrival"
	a := Simulate(p)
	t.Logf("converged %+v", c)
	t.Logf("arrival   %+v", a)
	if c.NeverRan != 0 || c.RunsMax-c.RunsMin > 3 || c.WorstBetween > 2*time.Hour {
		t.Errorf("converged order: %+v", c)
	}
	if a.NeverRan == 0 {
		t.Errorf("arrival order served every host; the model no longer shows the starvation: %+v", a)
	}
}

// A tier that can serve everyone in one cycle serves everyone in both orders.
func TestRoomyTierServesEveryone(t *testing.T) {
	for _, order := range []string{"converged", "arrival"} {
		r := Simulate(Params{Hosts: 20, Slots: 10, RunMin: time.Minute, RunMax: 2 * time.Minute,
			Period: 15 * time.Minute, Spread: 10 * time.Minute, Wait: 10 * time.Minute, Span: 6 * time.Hour, Seed: 7, Order: order})
		if r.NeverRan != 0 || r.RunsMin != 24 || r.Skipped != 0 {
			t.Errorf("%s: %+v", order, r)
		}
	}
}
