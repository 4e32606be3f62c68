package reliability_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
	"github.com/tierlock/tierlock/internal/testkit/faultproxy"
)

// TestRolloutUnderFaults: 8 hosts run revisions r1..r4 in turn, through a proxy that
// injects faults into 3% of Consul requests, with random command failures that halt a
// revision now and then; an operator resumes or moves on. The history checker judges every
// state Consul goes through (see history); the recorder, that no command ran without a slot.
func TestRolloutUnderFaults(t *testing.T) {
	t.Parallel()
	server := startServer(t, consulagent.Config{})
	proxy := faultproxy.New(server.Addr)
	defer proxy.Close()
	var mu sync.Mutex
	n := 0
	proxy.SetRule(func(*http.Request) int {
		mu.Lock()
		defer mu.Unlock()
		n++
		if n%33 != 0 {
			return faultproxy.Pass
		}
		return soakFaults[n/33%len(soakFaults)]
	})
	rec := newRecorder(t)
	operator := newHost(t, "operator", server.Addr)
	wantExit(t, operator.run(t, "set-max", "--tier", tier, "3"), 0)
	wantExit(t, operator.run(t, "rollout", "policy", "--tier", tier, "--schedule", "1,2,max", "--failures", "1"), 0)
	hist := watchHistory(t, clientOf(t, server, ""))
	var hosts []*host
	for i := range 8 {
		hosts = append(hosts, newHost(t, fmt.Sprintf("web-%d", i), proxy.Addr))
	}
	codes := map[int]int{}
	for round := range 12 {
		rev := fmt.Sprintf("r%d", 1+round/3)
		var wg sync.WaitGroup
		results := make([]*outcome, len(hosts))
		for i, h := range hosts {
			code := 0
			if round == 3 || (round*7+i*3)%11 == 0 { // r2's first round fails everywhere: its canary halts it
				code = 1
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd, o := h.command(append([]string{"run", "--tier", tier, "--revision", rev, "--wait", "6s", "--consul-timeout", "10s", "--"},
					rec.script(server.Addr, h.name, 100*time.Millisecond, code)...)...)
				if err := cmd.Start(); err != nil {
					t.Error(err)
					return
				}
				if err := wait(cmd, o); err != nil {
					t.Error(err)
				}
				results[i] = o
			}()
		}
		wg.Wait()
		for _, o := range results {
			if o != nil {
				codes[o.code]++
			}
		}
		// The operator looks: failed slots freed, a halted revision resumed every other time.
		snap := tierOf(t, clientOf(t, server, ""))
		for h, r := range snap.Holders {
			if r.State != "running" {
				wantExit(t, operator.run(t, "release", "--tier", tier, "--holder", h, "--reason", "soak"), 0)
			}
		}
		if snap.Rollout.Halted() && round%2 == 0 {
			wantExit(t, operator.run(t, "rollout", "resume", "--tier", tier, snap.Rollout.Revision, "--reason", "soak"), 0)
		}
	}
	states := hist.finish()
	rec.starts(t)
	checkTiers(t, clientOf(t, server, ""))
	t.Logf("%d states of the tier checked (%d of them halted); exit codes %v; steps reached %v", states, hist.halted, codes, hist.maxRev)
	if hist.halted == 0 {
		t.Error("no halt seen: the checker's halt rule was not exercised")
	}
	if codes[0] == 0 || codes[75] == 0 {
		t.Errorf("exit codes %v: want successes and hosts held back or halted (75)", codes)
	}
	if !strings.Contains(fmt.Sprint(hist.maxRev), "r4") {
		t.Errorf("revisions seen %v: r4 never rolled out", hist.maxRev)
	}
}
