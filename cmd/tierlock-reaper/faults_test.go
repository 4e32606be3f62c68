package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/internal/testkit/faultproxy"
)

// Every Consul request of one invocation is faulted in turn, with every kind of fault, once:
// the function retries within the invocation, frees exactly the instance's slots, reports them
// all (even those whose answer was lost) and leaves the bystander's alone.
func TestFaultEveryRequest(t *testing.T) {
	faults := []int{http.StatusTooManyRequests, http.StatusInternalServerError, faultproxy.Reset,
		faultproxy.Stall, faultproxy.DropAfterCommit, faultproxy.LateCommit}
	// One fault, then the retries: a budget a loaded machine (8 cases side by side, and the
	// package beside this one) cannot exhaust by slowness alone.
	faultEnv(t, 8*time.Second)
	reqs := invokeFaulted(t, 0, faultproxy.Pass)
	t.Logf("%d requests: %s", len(reqs), strings.Join(reqs, ", "))
	for n := 1; n <= len(reqs); n++ {
		for _, f := range faults {
			name := faultproxy.Kinds[f]
			if name == "" {
				name = fmt.Sprint(f)
			}
			t.Run(fmt.Sprintf("%d %s/%s", n, reqs[n-1], name), func(t *testing.T) {
				t.Parallel() // the cases mostly wait on held requests
				invokeFaulted(t, n, f)
			})
		}
	}
}

// invokeFaulted delivers a termination event with fault f on the nth Consul request (none if n
// is 0), checks the outcome, and returns the requests made.
func invokeFaulted(t *testing.T, n, f int) []string {
	p := faultproxy.New(recordingProxy(t).Addr) // behind the package's recording proxy
	defer p.Close()
	var mu sync.Mutex
	var reqs []string
	p.SetRule(func(r *http.Request) int {
		mu.Lock()
		defer mu.Unlock()
		reqs = append(reqs, r.Method+" "+r.URL.Path)
		if len(reqs) == n {
			return f
		}
		return faultproxy.Pass
	})
	takeSlots(t, instTerminated, instBystander)
	var log bytes.Buffer
	res, err := invoke(t, faultedFunction(t, p, &log), "req-1", fixture(t, "ec2-terminated.json"))
	if !p.Settle(30 * time.Second) {
		t.Error("the proxy still holds requests 30s after the invocation")
	}
	if err != nil {
		t.Fatalf("invocation failed: %v\n%s", err, log.String())
	}
	if len(res.Freed) != len(tiers) {
		t.Errorf("reported %d freed slots, want %d: %+v\n%s", len(res.Freed), len(tiers), res.Freed, log.String())
	}
	if got := heldBy(t); got[instTerminated] != nil || len(got[instBystander]) != len(tiers) {
		t.Errorf("held after: %v", got)
	}
	checkLog(t, log.String(), "req-1")
	mu.Lock()
	defer mu.Unlock()
	return append([]string(nil), reqs...)
}

// Each kind of Consul request of an invocation faulted continuously, for longer than the
// budget, while the others pass: the invocation fails (Lambda retries it later) within
// 1.5 × TIERLOCK_CONSUL_TIMEOUT, and whatever it freed kept the invariant.
func TestFaultEachKindContinuously(t *testing.T) {
	faultEnv(t, faultTimeout)
	// The bound is tight (1.5 × a 3 s budget): a few cases at a time, so that slowness alone
	// does not exceed it.
	few := make(chan struct{}, 2)
	kinds := map[string]bool{}
	for _, r := range invokeFaulted(t, 0, faultproxy.Pass) {
		kinds[r] = true
	}
	for kind := range kinds {
		for _, f := range []int{http.StatusInternalServerError, http.StatusTooManyRequests, faultproxy.Reset, faultproxy.Stall} {
			name := faultproxy.Kinds[f]
			if name == "" {
				name = fmt.Sprint(f)
			}
			t.Run(kind+"/"+name, func(t *testing.T) {
				t.Parallel()
				few <- struct{}{}
				defer func() { <-few }()
				p := faultproxy.New(recordingProxy(t).Addr)
				defer p.Close()
				p.SetRule(func(r *http.Request) int {
					if r.Method+" "+r.URL.Path == kind {
						return f
					}
					return faultproxy.Pass
				})
				takeSlots(t, instTerminated, instBystander)
				var log bytes.Buffer
				start := time.Now()
				_, err := invoke(t, faultedFunction(t, p, &log), "req-1", fixture(t, "ec2-terminated.json"))
				took := time.Since(start)
				p.Settle(10 * time.Second)
				if err == nil && p.Injected() > 0 {
					t.Errorf("the invocation succeeded though %s failed throughout (%d faults)", kind, p.Injected())
				}
				if took > faultTimeout*3/2 {
					t.Errorf("took %s, want within %s\n%s", took.Round(time.Millisecond), faultTimeout*3/2, log.String())
				}
				if got := heldBy(t); len(got[instBystander]) != len(tiers) {
					t.Errorf("the bystander's slots changed: %v", got)
				}
			})
		}
	}
}

// faultTimeout is TestFaultEachKindContinuously's TIERLOCK_CONSUL_TIMEOUT: requests time out
// after 1s.
const faultTimeout = 3 * time.Second

// faultEnv sets what the fault cases share, for the test and its cases: one stand-in AWS and
// the function's settings, with timeout as TIERLOCK_CONSUL_TIMEOUT. The cases run side by
// side, so what is each one's own (its proxy, its prefix) goes to its Function, not to the
// process environment: see faultedFunction.
func faultEnv(t *testing.T, timeout time.Duration) {
	for k, v := range env(t, newFakeAWS(t)) {
		t.Setenv(k, v)
	}
	t.Setenv(envConsulTimeout, timeout.String())
}

// faultedFunction is a Function that talks to Consul through p, under t's own prefix, logging
// to log; its other settings are faultEnv's.
func faultedFunction(t *testing.T, p *faultproxy.Proxy, log *bytes.Buffer) *Function {
	prefix := testkit.Prefix(t)
	return &Function{
		Out: log, Version: "test",
		Getenv: func(key string) string {
			if key == envPrefix {
				return prefix
			}
			return os.Getenv(key)
		},
		ConsulConfig: func() *api.Config {
			c := api.DefaultConfig()
			c.Address = p.Addr
			return c
		},
	}
}
