// Command fleetsim simulates a tier of hosts running tierlock from the packaged timer for a
// day, in the two queue orders, and prints how evenly the hosts converge. It is a model of the
// timer, the queue and the slots (no Consul, no processes): a discrete-event simulation with a
// seeded random source, so its figures are the same on every machine. `make fleet` shows the
// same comparison with real processes and a real Consul in compressed time.
package main

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"time"
)

// Params describe the fleet and the packaged settings.
type Params struct {
	Hosts          int           // hosts in the tier
	Slots          int           // max_concurrent
	RunMin, RunMax time.Duration // a run takes a uniform time in [RunMin, RunMax]
	Period         time.Duration // the timer's OnCalendar period (15 min)
	Spread         time.Duration // RandomizedDelaySec with FixedRandomDelay: each host's fixed offset
	Wait           time.Duration // --wait
	Span           time.Duration // simulated time
	Order          string        // "converged" or "arrival"
	Seed           uint64
}

// Result is what the comparison prints.
type Result struct {
	Order              string
	RunsMin, RunsMax   int
	NeverRan           int
	WorstGap           time.Duration // longest time a host went without converging (from t=0, or between runs, or to the end)
	WorstBetween       time.Duration // longest time between two successful runs of one host
	TotalRuns, Skipped int
}

type host struct {
	offset      time.Duration
	converged   time.Duration // end of the last successful run; -1: never
	waitingFrom time.Duration // -1: not waiting
	busyUntil   time.Duration // the unit is active (waiting or running) until then
	runs        int
	worstGap    time.Duration
	between     time.Duration
	lastEnd     time.Duration
}

// Simulate runs the model. Every run succeeds; a host's timer does not fire while its unit is
// still active (systemd's oneshot), as under tierlock.timer.
func Simulate(p Params) Result {
	rng := rand.New(rand.NewPCG(p.Seed, p.Seed^0x9e3779b97f4a7c15))
	hosts := make([]*host, p.Hosts)
	for i := range hosts {
		hosts[i] = &host{offset: time.Duration(rng.Int64N(int64(p.Spread/time.Second))) * time.Second, converged: -1, waitingFrom: -1}
	}
	type running struct {
		host int
		end  time.Duration
	}
	var slots []running
	var queue []int // waiting hosts
	res := Result{Order: p.Order}
	rank := func(a, b int) bool { // a ranks ahead of b
		ha, hb := hosts[a], hosts[b]
		if p.Order == "converged" && ha.converged != hb.converged {
			return ha.converged < hb.converged // -1 (never) first
		}
		return ha.waitingFrom < hb.waitingFrom || ha.waitingFrom == hb.waitingFrom && a < b
	}
	start := func(i int, now time.Duration) {
		d := p.RunMin + time.Duration(rng.Int64N(int64(p.RunMax-p.RunMin)+1))
		slots = append(slots, running{host: i, end: now + d})
		hosts[i].busyUntil = now + d
		hosts[i].waitingFrom = -1
	}
	admit := func(now time.Duration) {
		sort.SliceStable(queue, func(x, y int) bool { return rank(queue[x], queue[y]) })
		for len(queue) > 0 && len(slots) < p.Slots {
			start(queue[0], now)
			queue = queue[1:]
		}
	}
	step := time.Second
	for now := time.Duration(0); now < p.Span; now += step {
		// Runs that end free their slots and converge their hosts.
		kept := slots[:0]
		for _, r := range slots {
			if r.end <= now {
				h := hosts[r.host]
				h.worstGap = max(h.worstGap, now-h.lastEnd)
				if h.runs > 0 {
					h.between = max(h.between, now-h.lastEnd)
				}
				h.converged, h.lastEnd = now, now
				h.runs++
				res.TotalRuns++
				continue
			}
			kept = append(kept, r)
		}
		slots = kept
		// Waiters past --wait give up (exit 75).
		q := queue[:0]
		for _, i := range queue {
			if now-hosts[i].waitingFrom >= p.Wait {
				hosts[i].waitingFrom = -1
				res.Skipped++
				continue
			}
			q = append(q, i)
		}
		queue = q
		admit(now)
		// Timers that fire now start a run or join the queue.
		for i, h := range hosts {
			if (now-h.offset)%p.Period != 0 || now < h.offset || h.busyUntil > now || h.waitingFrom >= 0 {
				continue
			}
			h.waitingFrom = now
			h.busyUntil = now + p.Wait
			queue = append(queue, i)
		}
		admit(now)
	}
	res.RunsMin = math.MaxInt
	for _, h := range hosts {
		h.worstGap = max(h.worstGap, p.Span-h.lastEnd)
		res.RunsMin = min(res.RunsMin, h.runs)
		res.RunsMax = max(res.RunsMax, h.runs)
		res.WorstGap = max(res.WorstGap, h.worstGap)
		res.WorstBetween = max(res.WorstBetween, h.between)
		if h.runs == 0 {
			res.NeverRan++
		}
	}
	return res
}

func hours(d time.Duration) string { return fmt.Sprintf("%.1f h", d.Hours()) }

func main() {
	p := Params{Order: "converged"}
	flag.IntVar(&p.Hosts, "hosts", 200, "hosts in the tier")
	flag.IntVar(&p.Slots, "slots", 10, "max_concurrent")
	flag.DurationVar(&p.RunMin, "run-min", 2*time.Minute, "shortest run")
	flag.DurationVar(&p.RunMax, "run-max", 4*time.Minute, "longest run")
	flag.DurationVar(&p.Period, "period", 15*time.Minute, "timer period")
	flag.DurationVar(&p.Spread, "spread", 10*time.Minute, "fixed random delay spread")
	flag.DurationVar(&p.Wait, "wait", 10*time.Minute, "--wait")
	flag.DurationVar(&p.Span, "span", 24*time.Hour, "simulated time")
	flag.Uint64Var(&p.Seed, "seed", 1, "random seed")
	flag.Parse()
	fmt.Printf("%d hosts, max_concurrent %d, runs %s-%s, timer every %s with fixed offsets within %s, --wait %s, %s simulated, seed %d\n\n",
		p.Hosts, p.Slots, p.RunMin, p.RunMax, p.Period, p.Spread, p.Wait, p.Span, p.Seed)
	fmt.Printf("%-10s %9s %9s %10s %10s %14s %8s\n", "order", "runs min", "runs max", "never ran", "worst gap", "worst between", "skipped")
	for _, order := range []string{"converged", "arrival"} {
		p.Order = order
		r := Simulate(p)
		fmt.Printf("%-10s %9d %9d %10d %10s %14s %8d\n", r.Order, r.RunsMin, r.RunsMax, r.NeverRan, hours(r.WorstGap), hours(r.WorstBetween), r.Skipped)
	}
	os.Exit(0)
}
