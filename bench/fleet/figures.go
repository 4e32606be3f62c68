package main

import (
	"math"
	"sort"
	"time"
)

// timing is what the runs' start and end times say, whatever the tool.
type timing struct {
	Runs           int     `json:"runs"` // commands that ran
	SpanSeconds    float64 `json:"span_seconds"`
	MaxConcurrency int     `json:"max_concurrency"`
	HandoffP50Ms   float64 `json:"handoff_p50_ms"`
	HandoffP99Ms   float64 `json:"handoff_p99_ms"`
	Handoffs       int     `json:"handoffs"`
	FIFO           float64 `json:"fifo"`
	Waiters        int     `json:"waiters"` // hosts that waited in line, FIFO's population
}

// simultaneous is how close two starts may be and still count as in order: a goroutine's
// wake-up jitters by about that much on a busy machine.
const simultaneous = 5 * time.Millisecond

// timingOf computes the timing figures of one workload's runs.
//
// A handoff is the time from a command's end to the next command's start while hosts are
// still waiting: ends queue up, and each start takes the oldest unmatched end. FIFO is the
// fraction of pairs of waiters that started in the order they entered the line (by the
// CreateIndex of their entry: Consul's commit order), two starts within simultaneous counting
// as in order.
func timingOf(recs []runRecord) timing {
	type event struct {
		at    time.Time
		start bool
	}
	var evs []event
	var t timing
	for _, r := range recs {
		if r.start.IsZero() {
			continue
		}
		t.Runs++
		evs = append(evs, event{r.start, true}, event{r.end, false})
	}
	if t.Runs == 0 {
		return t
	}
	sort.SliceStable(evs, func(i, j int) bool {
		if evs[i].at.Equal(evs[j].at) {
			return !evs[i].start // an end at the same instant as a start comes first
		}
		return evs[i].at.Before(evs[j].at)
	})
	running, started := 0, 0
	var ends []time.Time
	var handoffs []float64
	for _, e := range evs {
		if e.start {
			running++
			started++
			t.MaxConcurrency = max(t.MaxConcurrency, running)
			if len(ends) > 0 {
				handoffs = append(handoffs, float64(e.at.Sub(ends[0]))/float64(time.Millisecond))
				ends = ends[1:]
			}
			continue
		}
		running--
		if started < t.Runs { // someone still waits for this slot
			ends = append(ends, e.at)
		}
	}
	t.SpanSeconds = evs[len(evs)-1].at.Sub(evs[0].at).Seconds()
	t.Handoffs = len(handoffs)
	t.HandoffP50Ms, t.HandoffP99Ms = percentile(handoffs, 0.50), percentile(handoffs, 0.99)
	t.FIFO, t.Waiters = fifo(recs)
	return t
}

// percentile is the nearest-rank percentile p (0..1] of xs, 0 for none.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[max(0, min(len(s)-1, int(math.Ceil(p*float64(len(s))))-1))]
}

// fifo is the share of pairs of waiters that started in arrival order, and how many waiters
// there were; 1 when fewer than two waited.
func fifo(recs []runRecord) (float64, int) {
	type waiter struct {
		arrived uint64
		started time.Time
	}
	var ws []waiter
	for _, r := range recs {
		if r.arrived != 0 && !r.start.IsZero() {
			ws = append(ws, waiter{r.arrived, r.start})
		}
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i].started.Before(ws[j].started) })
	good, pairs := 0, 0
	for i := range ws {
		for j := i + 1; j < len(ws); j++ {
			pairs++
			if ws[i].arrived < ws[j].arrived || ws[j].started.Sub(ws[i].started) < simultaneous {
				good++
			}
		}
	}
	if pairs == 0 {
		return 1, len(ws)
	}
	return float64(good) / float64(pairs), len(ws)
}
