package reliability_test

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/internal/testkit/consulagent"
	"github.com/tierlock/tierlock/internal/testkit/faultproxy"
	"github.com/tierlock/tierlock/lock/schema"
)

// The short soak runs in `make test`; `make soak` runs a long one and prints its figures.
var (
	soakHosts   = flag.Int("soak.hosts", 6, "soak: hosts running at once")
	soakRounds  = flag.Int("soak.rounds", 12, "soak: rounds (every host runs once a round)")
	soakSeed    = flag.Uint64("soak.seed", 0, "soak: random seed (0: from the clock)")
	soakFigures = flag.String("soak.figures", "", "soak: write the figures to this file")
)

// soak is one soak's state and counters.
type soak struct {
	t      *testing.T
	rnd    *rand.Rand
	rndMu  sync.Mutex
	server *consulagent.Agent
	proxy  *faultproxy.Proxy
	rec    recorder
	hosts  []*host

	runs, started, succeeded, failed, skipped, unreleased, killed atomic.Int64
	restarts, setMaxes, releases, violations, resumes             atomic.Int64
	rounds                                                        int
	states, halts                                                 int // rollout states the history checker saw, halted ones
}

// chance reports true with probability p.
func (s *soak) chance(p float64) bool {
	s.rndMu.Lock()
	defer s.rndMu.Unlock()
	return s.rnd.Float64() < p
}

func (s *soak) intN(n int) int {
	s.rndMu.Lock()
	defer s.rndMu.Unlock()
	return s.rnd.IntN(n)
}

func (s *soak) violate(format string, args ...any) {
	s.t.Helper()
	s.violations.Add(1)
	s.t.Errorf(format, args...)
}

// faultKinds are the faults the soak's proxy injects at random.
var soakFaults = []int{http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusServiceUnavailable,
	faultproxy.Reset, faultproxy.Stall, faultproxy.DropAfterCommit, faultproxy.LateCommit, faultproxy.StallAfterCommit}

// K hosts × R rounds: every round each host runs `tierlock run` once through a proxy that
// injects random faults into 3% of Consul requests; commands fail at random (and keep their
// slot), now and then a host's tierlock is SIGKILLed during its command, max_concurrent is
// changed during the round, or the Consul server is restarted. Between rounds an operator
// frees failed slots at random. After every round: current equals the number of running/ keys,
// no command ran without a slot (an external recorder, asking Consul directly), no more ran at
// once than max_concurrent allowed, no queue entry is left, `repair` finds nothing to repair,
// and every host's exit code agrees with what Consul holds for it.
func TestSoak(t *testing.T) {
	t.Parallel()
	seed := *soakSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	s := &soak{t: t, rnd: rand.New(rand.NewPCG(seed, 1)), server: startServer(t, consulagent.Config{}), rec: newRecorder(t)}
	s.proxy = faultproxy.New(s.server.Addr)
	defer s.proxy.Close()
	s.proxy.SetRule(func(*http.Request) int {
		if !s.chance(0.03) {
			return faultproxy.Pass
		}
		return soakFaults[s.intN(len(soakFaults))]
	})
	for i := range *soakHosts {
		s.hosts = append(s.hosts, newHost(t, fmt.Sprintf("web-%02d", i), s.proxy.Addr).raced())
	}
	operator := newHost(t, "operator", s.server.Addr)
	if o := operator.run(t, "set-max", "--tier", tier, "2"); o.code != 0 {
		t.Fatal(o)
	}
	// The hosts apply a revision, a new one every third round: the history checker judges
	// the rollout in every state it sees (the max_concurrent rule aside: set-max lowers it
	// while slots are held).
	hist := watchHistory(t, clientOf(t, s.server, ""))
	hist.noMax = true
	start := time.Now()
	for round := 1; round <= *soakRounds && !t.Failed(); round++ {
		s.round(t, round, operator)
		s.rounds = round
	}
	s.states = hist.finish()
	s.halts = hist.halted
	s.report(t, seed, time.Since(start))
}

// round runs every host once, with the round's chaos, and checks everything after it.
func (s *soak) round(t *testing.T, round int, operator *host) {
	c := clientOf(t, s.server, "")
	before := tierOf(t, c)
	maxes := []int{before.Max}
	var maxMu sync.Mutex
	var chaosLog []string // what the round's chaos did, for a violation's report
	chaosf := func(format string, args ...any) {
		maxMu.Lock()
		chaosLog = append(chaosLog, fmt.Sprintf(format, args...))
		maxMu.Unlock()
	}
	began := time.Now()
	recFrom := len(s.rec.lines(t))
	victim := ""
	if s.chance(0.25) {
		victim = s.hosts[s.intN(len(s.hosts))].name
	}

	type result struct {
		code   int // the command's planned exit code
		o      *outcome
		killed bool
	}
	results := make([]result, len(s.hosts))
	var wg sync.WaitGroup
	for i, h := range s.hosts {
		code, sleep := 0, time.Duration(s.intN(300))*time.Millisecond
		if s.chance(0.15) {
			code = 1
		}
		if h.name == victim {
			sleep = time.Second // long enough to be killed in
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd, o := h.command(append([]string{"run", "--tier", tier, "--wait", "8s", "--consul-timeout", "10s", "--revision", fmt.Sprintf("s%d", round/3), "--"},
				s.rec.script(s.server.Addr, h.name, sleep, code)...)...)
			if err := cmd.Start(); err != nil {
				t.Error(err)
				return
			}
			done := make(chan struct{})
			if h.name == victim {
				// Killed during its command, if it gets to run one this round.
				go func() {
					for {
						select {
						case <-done:
							return
						case <-time.After(50 * time.Millisecond):
						}
						b, _ := os.ReadFile(string(s.rec))
						if lines := strings.Split(string(b), "\n"); len(lines) > recFrom &&
							slices.ContainsFunc(lines[recFrom:], func(l string) bool { return strings.HasPrefix(l, "start "+h.name+" ") }) {
							_ = cmd.Process.Kill()
							return
						}
					}
				}()
			}
			err := wait(cmd, o)
			close(done)
			if err != nil {
				t.Error(err)
			}
			results[i] = result{code: code, o: o, killed: o.code == -1}
		}()
	}
	// Chaos beside the runs: max_concurrent changed, the Consul server restarted.
	var chaos sync.WaitGroup
	setMax, restart := s.chance(0.3), s.chance(0.08)
	if setMax {
		chaos.Add(1)
		go func() {
			defer chaos.Done()
			time.Sleep(time.Duration(s.intN(500)) * time.Millisecond)
			n := 1 + s.intN(4)
			if s.chance(0.1) {
				n = 0
			}
			maxMu.Lock()
			maxes = append(maxes, n)
			maxMu.Unlock()
			chaosf("set-max %d at %s", n, time.Since(began).Round(time.Millisecond))
			// An operator command gives up after 5 s of refused connections (nothing listens),
			// and a restarted server under load can refuse that long; the operator then types
			// it again, as here. Without a restart in the round, 75 is a violation.
			for deadline := time.Now().Add(time.Minute); ; time.Sleep(500 * time.Millisecond) {
				o := operator.run(t, "set-max", "--tier", tier, fmt.Sprint(n))
				if o.code == 75 && restart && time.Now().Before(deadline) {
					chaosf("set-max %d again: Consul refused it during the restart", n)
					continue
				}
				if o.code != 0 {
					s.violate("round %d: set-max %d: %s", round, n, o)
				}
				break
			}
			s.setMaxes.Add(1)
		}()
	}
	if restart {
		chaos.Add(1)
		go func() {
			defer chaos.Done()
			time.Sleep(time.Duration(s.intN(500)) * time.Millisecond)
			chaosf("consul server stopped at %s", time.Since(began).Round(time.Millisecond))
			s.server.Stop()
			s.restarts.Add(1)
			time.Sleep(time.Second)
			if err := s.server.Restart(); err != nil {
				t.Error(err)
				return
			}
			if err := s.server.Ready(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	chaos.Wait()
	// A held request lets go when its client gives up, or at the proxy's own bound for one
	// that never does (5 minutes, and 10 s more for a late commit): past that it is a leak.
	if !s.proxy.Settle(6 * time.Minute) {
		s.violate("round %d: the proxy still holds requests", round)
	}

	// The checks.
	after := tierOf(t, c)
	testkit.Eventually(t, "the queue to empty", func() bool { return len(tierOf(t, c).Queue) == 0 })
	lines := s.rec.lines(t)[recFrom:]
	starts, noslot := map[string]int{}, map[string]string{}
	running, peak := 0, 0
	for _, l := range lines {
		switch l[0] {
		case "NOSLOT", "UNKNOWN":
			noslot[l[1]] = l[0]
			fallthrough
		case "start":
			starts[l[1]]++
			running++
			peak = max(peak, running)
		case "end":
			running--
		}
	}
	bound := before.RunningKeys
	for _, m := range maxes {
		bound = max(bound, m)
	}
	if peak > bound {
		s.violate("round %d: %d commands ran at once; max_concurrent was at most %v, %d slots held at the start", round, peak, maxes, before.RunningKeys)
	}
	for i, h := range s.hosts {
		r := results[i]
		if r.o == nil {
			continue
		}
		s.runs.Add(1)
		s.started.Add(int64(starts[h.name]))
		held, holds := after.Holders[h.name]
		_, heldBefore := before.Holders[h.name]
		bad := func(why string) {
			s.violate("round %d: %s: %s (command exit %d, started %d, holds %v %+v; chaos %q; victim %q)\n%s",
				round, h.name, why, r.code, starts[h.name], holds, held, chaosLog, victim, r.o)
		}
		if noslot[h.name] != "" {
			bad("its command ran without a slot (" + noslot[h.name] + ")")
		}
		if starts[h.name] > 1 {
			bad("its command ran more than once")
		}
		switch {
		case r.killed:
			s.killed.Add(1)
			if !holds || held.State != schema.StateRunning {
				bad("killed during its command, it must leave its slot held, running")
			}
		case r.o.code == 0:
			s.succeeded.Add(1)
			if r.code != 0 || starts[h.name] != 1 || holds {
				bad("exit 0: its command succeeded once and its slot is free")
			}
		case r.o.code == 1:
			s.failed.Add(1)
			if r.code != 1 || starts[h.name] != 1 || !holds || held.State != schema.StateFailed {
				bad("exit 1: its command failed once and its slot is held, failed")
			}
		case r.o.code == 75:
			s.skipped.Add(1)
			lost := strings.Contains(r.o.stderr.String(), "the next run re-enters it")
			switch {
			case starts[h.name] != 0:
				bad("exit 75: nothing ran")
			case holds && !heldBefore && !lost:
				bad("exit 75: no trace left")
			case heldBefore && !holds:
				bad("exit 75: the slot it held is kept")
			}
		case r.o.code == 70:
			s.unreleased.Add(1)
			if r.code != 0 || starts[h.name] != 1 || !holds {
				bad("exit 70: its command succeeded once and its slot is still held")
			}
		default:
			bad("unexpected exit code")
		}
	}
	if o := operator.run(t, "repair", "--tier", tier); o.code != 0 || !strings.Contains(o.stdout.String(), "nothing changed") {
		s.violate("round %d: repair found something to repair: %s", round, o)
	}

	// Between rounds, an operator frees some failed slots.
	for _, h := range s.hosts {
		if rec, ok := after.Holders[h.name]; ok && rec.State != schema.StateRunning && s.chance(0.4) {
			if o := operator.run(t, "release", "--tier", tier, "--holder", h.name); o.code != 0 || !strings.Contains(o.stdout.String(), "released") {
				s.violate("round %d: release %s: %s", round, h.name, o)
			}
			s.releases.Add(1)
		}
	}
	// A revision halted by a failed mover is resumed now and then, as an operator would.
	if after.Rollout.Halted() && s.chance(0.5) {
		if o := operator.run(t, "rollout", "resume", "--tier", tier, after.Rollout.Revision, "--reason", "soak"); o.code != 0 {
			s.violate("round %d: rollout resume: %s", round, o)
		}
		s.resumes.Add(1)
	}
	checkTiers(t, c)
}

func (s *soak) report(t *testing.T, seed uint64, took time.Duration) {
	counts := s.proxy.Counts()
	kinds := make([]string, 0, len(counts))
	var faults int64
	for k, n := range counts {
		kinds = append(kinds, fmt.Sprintf("%s: %d", k, n))
		faults += n
	}
	sort.Strings(kinds)
	var b strings.Builder
	row := func(what string, n any, more string) { fmt.Fprintf(&b, "| %s | %v | %s |\n", what, n, more) }
	fmt.Fprintf(&b, "tierlock soak: %d hosts x %d rounds, seed %d, %s\n\n", *soakHosts, s.rounds, seed, took.Round(time.Second))
	fmt.Fprintf(&b, "| figure | count | detail |\n|---|---|---|\n")
	row("rounds", s.rounds, fmt.Sprintf("%d hosts each", *soakHosts))
	row("runs (`tierlock run` processes)", s.runs.Load(), "")
	row("commands run", s.started.Load(), fmt.Sprintf("succeeded %d, failed on purpose %d", s.succeeded.Load(), s.failed.Load()))
	row("skipped (exit 75)", s.skipped.Load(), "no slot within --wait, tier disabled, Consul unreachable, revision halted or held back")
	row("slot kept after success (exit 70)", s.unreleased.Load(), "healed by the host's next run")
	row("tierlock killed (SIGKILL) during its command", s.killed.Load(), "healed by the host's next run")
	row("Consul server restarts mid-round", s.restarts.Load(), "")
	row("max_concurrent changes mid-round", s.setMaxes.Load(), "")
	row("operator releases between rounds", s.releases.Load(), "")
	row("operator rollout resumes between rounds", s.resumes.Load(), "")
	row("rollout states checked by the history checker", s.states, fmt.Sprintf("%d of them halted", s.halts))
	row("faults injected", faults, strings.Join(kinds, ", "))
	row("invariant checks", s.rounds, "after every round: current = running/ keys, peak <= max, every command held its slot, no queue entry left, repair finds nothing, exit codes agree with Consul")
	row("violations", s.violations.Load(), "")
	t.Log("\n" + b.String())
	if *soakFigures != "" {
		if err := os.WriteFile(*soakFigures, []byte(b.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}
