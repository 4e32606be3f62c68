package main_test

import (
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/internal/testkit/faultproxy"
)

// The bounds: from the first failure of an operation, a command gives up within
// 1.5 × --consul-timeout, whatever succeeds in between. Each kind of Consul request a
// command makes is faulted continuously, for far longer than that, while every other
// request passes (reads work while writes fail, say), and the command must end in time with
// an honest outcome.

const boundTimeout = 4 * time.Second

// exitSlack is what a tierlock process may add to the bound to exit and be reaped, on a loaded
// machine running a -race build.
const exitSlack = 250 * time.Millisecond

// requestKind names a request without its key: the method, the endpoint, and whether it is
// a blocking query.
func requestKind(r *http.Request) string {
	path := r.URL.Path
	for _, p := range []string{"/v1/kv/", "/v1/session/renew/", "/v1/session/destroy/", "/v1/session/info/"} {
		if strings.HasPrefix(path, p) {
			path = p + "…"
		}
	}
	kind := r.Method + " " + path
	if r.URL.Query().Has("index") {
		kind += " (blocking)"
	}
	return kind
}

var continuousFaults = []int{http.StatusInternalServerError, http.StatusTooManyRequests, faultproxy.Reset, faultproxy.Stall}

func TestFaultEachKindContinuously(t *testing.T) {
	bin(t) // built before any clock starts
	for _, sc := range faultScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel() // as in TestFaultEveryRequest
			kinds := map[string]bool{}
			for _, k := range runContinuous(t, sc, "", faultproxy.Pass) {
				kinds[k] = true
			}
			var sorted []string
			for k := range kinds {
				sorted = append(sorted, k)
			}
			sort.Strings(sorted)
			t.Logf("request kinds: %s", strings.Join(sorted, ", "))
			for _, kind := range sorted {
				for _, f := range continuousFaults {
					t.Run(fmt.Sprintf("%s/%s", kind, faultName(f)), func(t *testing.T) {
						t.Parallel()
						runContinuous(t, sc, kind, f)
					})
				}
			}
		})
	}
}

// runContinuous runs sc with fault f on every request of kind (none if kind is ""), checks
// the wall time and the outcome, and returns the kinds of the requests made.
func runContinuous(t *testing.T, sc faultScenario, kind string, f int) []string {
	for k, v := range sc.keys {
		if _, err := agents.Client(t).KV().Put(&api.KVPair{Key: testkit.Prefix(t) + "/" + k, Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	p := faultproxy.New(agentAddr(t))
	defer p.Close()
	var mu sync.Mutex
	var kinds []string
	var firstFault time.Time // when the first faulted request arrived: the first failure
	p.SetRule(func(r *http.Request) int {
		k := requestKind(r)
		mu.Lock()
		defer mu.Unlock()
		kinds = append(kinds, k)
		if k == kind {
			if firstFault.IsZero() {
				firstFault = time.Now()
			}
			return f
		}
		return faultproxy.Pass
	})
	m := marker(t, "ran")
	args := withTimeout(sc.args(t, m), boundTimeout)
	done := make(chan struct{})
	var wg sync.WaitGroup
	if sc.during != nil {
		wg.Add(1)
		go func() { defer wg.Done(); sc.during(t, done) }()
	}
	r := run(t, cli(t, p.Addr, args...))
	ended := time.Now()
	close(done)
	wg.Wait()
	p.Settle(10 * time.Second)
	mu.Lock()
	got := append([]string(nil), kinds...)
	took := ended.Sub(firstFault)
	mu.Unlock()
	if kind == "" {
		sc.check(t, r, m, false)
		return got
	}
	// Waiting for a slot is bounded by --wait, not by the budget. The bound counts from the
	// first failure (the first faulted request) to the process's exit, given exitSlack.
	if bound := boundTimeout*3/2 + exitSlack; p.Injected() > 0 && took > bound && sc.name != "run waits in the queue" {
		t.Errorf("ended %s after the first failure with %s continuously faulted (%d injected), want within %s (1.5 × --consul-timeout)\n%s",
			took.Round(time.Millisecond), kind, p.Injected(), bound, r.stderr)
	}
	t.Logf("exit %d, %s after the first failure (%d faults)", r.code, took.Round(time.Millisecond), p.Injected())
	judgeFaulted(t, sc, r, m, p.Injected() > 0)
	if sc.name != "repair" || r.code == 0 {
		slots(t) // checks the invariant in every tier (a repair that gave up leaves the drift it found)
	}
	return got
}

// withTimeout replaces the scenario's --consul-timeout.
func withTimeout(args []string, d time.Duration) []string {
	out := append([]string(nil), args...)
	for i := range out {
		if out[i] == "--consul-timeout" && i+1 < len(out) {
			out[i+1] = d.String()
		}
	}
	return out
}

// judgeFaulted checks an outcome under a fault that did not pass: the one it has without
// faults, or an honest failure. 75: nothing ran (or, for operators, nothing reported
// done); 70: the command ran, and its slot stays held.
func judgeFaulted(t *testing.T, sc faultScenario, r result, m string, injected bool) {
	t.Helper()
	isRun := strings.HasPrefix(sc.name, "run")
	switch {
	case r.code == 75:
		if isRun && runs(t, m) != 0 {
			t.Errorf("exit 75 but the command ran\n%s", r.stderr)
		}
	case r.code == 70 && isRun:
		if runs(t, m) != 1 {
			t.Errorf("exit 70 but the command ran %d times", runs(t, m))
		}
		if _, ok := getRecord(t, "web-1"); !ok {
			t.Errorf("exit 70 but web-1 holds no slot\n%s", r.stderr)
		}
	case !injected || r.code == 0 || r.code == 3:
		sc.check(t, r, m, true)
	default:
		t.Errorf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}

// With the command done and every write failing for good (reads pass), the run gives up
// the release within the bound: exit 70, the slot held. A SIGTERM during those retries ends
// them at once, with the same outcome.
func TestReleaseFailingForGood(t *testing.T) {
	t.Parallel() // it waits out retries, not the CPU (see TestMain)
	bin(t)       // built before any clock starts
	for _, signal := range []bool{false, true} {
		t.Run(fmt.Sprintf("signal %v", signal), func(t *testing.T) {
			t.Parallel()
			put(t, "max_concurrent", "2")
			m := marker(t, "ran")
			p := faultproxy.New(agentAddr(t))
			defer p.Close()
			// retrying closes once the release has failed twice: the run is in its retries.
			retrying := make(chan struct{})
			var once sync.Once
			var failed atomic.Int32
			p.SetRule(func(r *http.Request) int {
				if r.URL.Path == "/v1/txn" && exists(m) {
					if failed.Add(1) == 2 {
						once.Do(func() { close(retrying) })
					}
					return http.StatusInternalServerError
				}
				return faultproxy.Pass
			})
			cmd := cli(t, p.Addr, append([]string{"run", "--tier", tier, "--holder", "web-1", "--consul-timeout", "20s", "--"},
				heldCommand(t, m, 0)...)...)
			var out strings.Builder
			cmd.Stderr = &out
			start := time.Now()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var sent time.Time
			if signal {
				<-retrying
				sent = time.Now()
				signalProcess(t, cmd, syscall.SIGTERM)
			}
			_ = cmd.Wait()
			took := time.Since(start)
			if code := cmd.ProcessState.ExitCode(); code != 70 {
				t.Errorf("exit %d, want 70\n%s", code, out.String())
			}
			if signal {
				if d := time.Since(sent); d > 2*time.Second {
					t.Errorf("took %s to end after SIGTERM", d)
				}
				if !strings.Contains(out.String(), "terminated stopped the release") {
					t.Errorf("the log does not say the signal stopped the release:\n%s", out.String())
				}
			} else if took > 30*time.Second {
				t.Errorf("took %s, want within 30s (1.5 × --consul-timeout 20s)", took)
			}
			if rec, ok := getRecord(t, "web-1"); !ok || rec.State != "running" {
				t.Errorf("web-1: %+v (present %v), want its slot held", rec, ok)
			}
			testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))
		})
	}
}

// With Consul unreachable (nothing listens), a run gives up within the bound: the look for
// a slot a lost answer took shares the acquisition's budget.
func TestRunConsulUnreachableBound(t *testing.T) {
	bin(t) // built before any clock starts
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	m := marker(t, "ran")
	start := time.Now()
	r := run(t, cli(t, addr, append([]string{"run", "--tier", tier, "--holder", "web-1", "--consul-timeout", boundTimeout.String(), "--"},
		heldCommand(t, m, 0)...)...))
	took := time.Since(start)
	wantCode(t, r, 75)
	// Measured from the start of the process (nothing listens: its first request fails).
	if took > boundTimeout*3/2+exitSlack+time.Second || took < boundTimeout/2 {
		t.Errorf("took %s, want about --consul-timeout %s, within 1.5 × it", took, boundTimeout)
	}
	if runs(t, m) != 0 {
		t.Error("the command ran")
	}
	t.Logf("gave up after %s", took.Round(time.Millisecond))
}
