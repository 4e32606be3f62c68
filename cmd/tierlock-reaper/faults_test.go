package main

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/faultproxy"
)

// Every Consul request of one invocation is faulted in turn, with every kind of fault, once:
// the function retries within the invocation, frees exactly the instance's slots, reports them
// all (even those whose answer was lost) and leaves the bystander's alone.
func TestFaultEveryRequest(t *testing.T) {
	faults := []int{http.StatusTooManyRequests, http.StatusInternalServerError, faultproxy.Reset,
		faultproxy.Stall, faultproxy.DropAfterCommit, faultproxy.LateCommit}
	reqs := invokeFaulted(t, 0, faultproxy.Pass)
	t.Logf("%d requests: %s", len(reqs), strings.Join(reqs, ", "))
	for n := 1; n <= len(reqs); n++ {
		for _, f := range faults {
			name := faultproxy.Kinds[f]
			if name == "" {
				name = fmt.Sprint(f)
			}
			t.Run(fmt.Sprintf("%d %s/%s", n, reqs[n-1], name), func(t *testing.T) { invokeFaulted(t, n, f) })
		}
	}
}

// invokeFaulted delivers a termination event with fault f on the nth Consul request (none if n
// is 0), checks the outcome, and returns the requests made.
func invokeFaulted(t *testing.T, n, f int) []string {
	p := faultproxy.New(proxy.Addr) // behind the package's recording proxy
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
	aws := newFakeAWS(t)
	for k, v := range env(t, aws) {
		t.Setenv(k, v)
	}
	t.Setenv("CONSUL_HTTP_ADDR", p.Addr)
	t.Setenv(envConsulTimeout, "3s") // requests time out after 1s
	takeSlots(t, instTerminated, instBystander)
	var log bytes.Buffer
	res, err := invoke(t, &Function{Out: &log, Version: "test"}, "req-1", fixture(t, "ec2-terminated.json"))
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
