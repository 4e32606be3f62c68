// Command turns demonstrates the queue orders with real processes: a real Consul agent and the
// built tierlock binary, one `tierlock run` per host per cycle, in compressed time. Every host
// keeps a fixed offset within the cycle, as the packaged timer's FixedRandomDelay gives it, so
// in arrival order the same hosts arrive last every cycle. It prints, for both orders side by
// side: runs per host (min and max), the hosts that never ran, and the worst gap between two
// successful runs of one host.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
)

// plan is one demonstration's shape.
type plan struct {
	hosts, slots, cycles int
	period               time.Duration // the timer's interval (15 min on a real fleet)
	spread               time.Duration // offsets fall within this (10 min of the 15)
	wait                 time.Duration // --wait (10 min)
	runMin, runMax       time.Duration // the command's duration (2-4 min)
	seed                 uint64
}

func main() {
	p := plan{}
	flag.IntVar(&p.hosts, "hosts", 24, "hosts in the tier (16-40)")
	flag.IntVar(&p.slots, "slots", 2, "max_concurrent")
	flag.IntVar(&p.cycles, "cycles", 12, "timer cycles")
	flag.DurationVar(&p.period, "period", 2500*time.Millisecond, "the timer's interval")
	flag.DurationVar(&p.spread, "spread", 1600*time.Millisecond, "fixed offsets fall within this")
	flag.DurationVar(&p.wait, "wait", 1600*time.Millisecond, "--wait of each run")
	flag.DurationVar(&p.runMin, "run-min", 400*time.Millisecond, "shortest run")
	flag.DurationVar(&p.runMax, "run-max", 700*time.Millisecond, "longest run")
	flag.Uint64Var(&p.seed, "seed", 1, "seed of the offsets and run durations")
	bin := flag.String("tierlock", "bin/tierlock", "the tierlock binary")
	flag.Parse()
	if err := demo(context.Background(), os.Stdout, p, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "turns:", err)
		os.Exit(1)
	}
}

func demo(ctx context.Context, w io.Writer, p plan, bin string) error {
	if p.hosts < 1 || p.slots < 1 || p.cycles < 1 || p.period <= 0 || p.runMin <= 0 || p.runMax < p.runMin {
		return fmt.Errorf("bad plan %+v", p)
	}
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%w (run make build)", err)
	}
	cbin, err := consulagent.Binary()
	if err != nil {
		return err
	}
	agent, err := consulagent.Start(ctx, cbin, "")
	if err != nil {
		return err
	}
	defer agent.Stop()
	client, err := agent.Client()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "tierlock-fleet-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	fmt.Fprintf(w, "make fleet: %d hosts, max_concurrent %d, %d cycles of %s, fixed offsets within %s, runs of %s-%s, --wait %s, seed %d\n",
		p.hosts, p.slots, p.cycles, p.period, p.spread, p.runMin, p.runMax, p.wait, p.seed)
	fmt.Fprintf(w, "(real tierlock processes and a real Consul %s; a real fleet: 15 min, 10 min, 2-4 min, 10 min)\n\n", agent.Addr)
	orders := []string{"converged", "arrival"}
	results := map[string]stats{}
	for _, order := range orders {
		t0 := time.Now()
		succ, err := fleet(ctx, client, p, bin, agent.Addr, filepath.Join(tmp, order), order)
		if err != nil {
			return err
		}
		results[order] = summarize(succ, p.hosts, t0, time.Now(), p.period)
	}
	fmt.Fprintf(w, "%-34s %12s %12s\n", "", orders[0], orders[1])
	row := func(name string, f func(s stats) string) {
		fmt.Fprintf(w, "%-34s %12s %12s\n", name, f(results[orders[0]]), f(results[orders[1]]))
	}
	row("runs per host (min-max)", func(s stats) string { return fmt.Sprintf("%d-%d", s.min, s.max) })
	row("hosts that never ran", func(s stats) string { return fmt.Sprint(s.never) })
	row("worst gap between runs (cycles)", func(s stats) string { return fmt.Sprintf("%.1f", s.worstGap) })
	row("successful runs in all", func(s stats) string { return fmt.Sprint(s.total) })
	return nil
}

// fleet runs every host's timer for p.cycles in order, and returns each host's successful run
// end times.
func fleet(ctx context.Context, client *api.Client, p plan, bin, addr, dir, order string) (map[int][]time.Time, error) {
	prefix := "fleet-" + order
	tier := "demo/web"
	if _, err := client.KV().Put(&api.KVPair{Key: prefix + "/" + tier + "/max_concurrent", Value: []byte(fmt.Sprint(p.slots))}, nil); err != nil {
		return nil, err
	}
	rnd := rand.New(rand.NewPCG(p.seed, 0))
	offsets := make([]time.Duration, p.hosts)
	for h := range offsets {
		offsets[h] = time.Duration(rnd.Int64N(int64(p.spread) + 1))
	}
	// Durations drawn up front, the same for both orders.
	durs := make([][]time.Duration, p.hosts)
	for h := range durs {
		for range p.cycles {
			durs[h] = append(durs[h], p.runMin+time.Duration(rnd.Int64N(int64(p.runMax-p.runMin)+1)))
		}
	}
	start := time.Now().Add(500 * time.Millisecond)
	var mu sync.Mutex
	succ := map[int][]time.Time{}
	var wg sync.WaitGroup
	var firstErr error
	for h := range p.hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			state := filepath.Join(dir, fmt.Sprintf("h%02d", h))
			if err := os.MkdirAll(state, 0o755); err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
				return
			}
			for c := range p.cycles {
				at := start.Add(time.Duration(c)*p.period + offsets[h])
				if d := time.Until(at); d > 0 {
					time.Sleep(d)
				} else {
					continue // the previous run overran this tick: systemd skips it too
				}
				cmd := exec.CommandContext(ctx, bin, "run", "--prefix", prefix, "--tier", tier,
					"--holder", fmt.Sprintf("h%02d", h), "--wait", p.wait.String(), "--queue-order", order,
					"--state-dir", state, "--log-level", "error", "--", "sleep", fmt.Sprintf("%.3f", durs[h][c].Seconds()))
				cmd.Env = append(os.Environ(), "CONSUL_HTTP_ADDR="+addr)
				err := cmd.Run()
				if err == nil {
					mu.Lock()
					succ[h] = append(succ[h], time.Now())
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return succ, firstErr
}

// stats are one order's figures.
type stats struct {
	min, max, never, total int
	worstGap               float64 // in cycles
}

// summarize judges the successful run times of hosts 0..n-1 over [from, to]. A host's gaps
// are from the start to its first run, between runs, and from its last run to the end; a host
// that never ran has the whole span as its gap.
func summarize(succ map[int][]time.Time, n int, from, to time.Time, period time.Duration) stats {
	s := stats{min: -1}
	var worst time.Duration
	for h := range n {
		times := append([]time.Time{}, succ[h]...)
		sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
		k := len(times)
		s.total += k
		if s.min < 0 || k < s.min {
			s.min = k
		}
		s.max = max(s.max, k)
		if k == 0 {
			s.never++
		}
		prev := from
		for _, t := range append(times, to) {
			worst = max(worst, t.Sub(prev))
			prev = t
		}
	}
	s.worstGap = float64(worst) / float64(period)
	return s
}
