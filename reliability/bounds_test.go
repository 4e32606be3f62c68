package reliability_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
)

// A read-only token on a tier and a holder named with Consul's words ("exists"): the
// refusal is named as one (the missing key:write), never taken for a lost race or an outage.
func TestACLRefusalWithConsulsWordsInNames(t *testing.T) {
	t.Parallel()
	server, admin := aclServer(t)
	rules := `key_prefix "chef/" { policy = "read" }
session_prefix "" { policy = "write" }
agent_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }`
	if _, _, err := admin.ACL().PolicyCreate(&api.ACLPolicy{Name: "read-only", Rules: rules}, nil); err != nil {
		t.Fatal(err)
	}
	token := newToken(t, admin, "read-only")
	const words = "exists/exists"
	kb := "chef/" + words + "/"
	for _, c := range []struct {
		name string
		keys map[string]string
		args []string
	}{
		{"take", map[string]string{"max_concurrent": "2"}, []string{"run", "--tier", words, "--holder", "exists", "--", "true"}},
		{"join the queue", map[string]string{"max_concurrent": "1", "current": "1",
			"running/exists-index-is-stale": `{"holder":"exists-index-is-stale","state":"failed","started_at":"2026-11-21T09:15:02Z","run_id":"x"}`},
			[]string{"run", "--tier", words, "--holder", "exists", "--wait", "5s", "--", "true"}},
		{"disable", map[string]string{"max_concurrent": "2"}, []string{"disable", "--tier", words}},
		{"release", map[string]string{"current": "1",
			"running/exists": `{"holder":"exists","state":"failed","started_at":"2026-11-21T09:15:02Z","run_id":"x"}`},
			[]string{"release", "--tier", words, "--holder", "exists"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := admin.KV().DeleteTree("chef/", nil); err != nil {
				t.Fatal(err)
			}
			for k, v := range c.keys {
				if _, err := admin.KV().Put(&api.KVPair{Key: kb + k, Value: []byte(v)}, nil); err != nil {
					t.Fatal(err)
				}
			}
			before := aclDump(t, admin)
			o := newHost(t, "exists", server.Addr, "CONSUL_HTTP_TOKEN="+token).run(t, append(c.args, "--consul-timeout", "5s")...)
			all := o.stdout.String() + o.stderr.String()
			if o.code != 78 || !strings.Contains(all, "lacks key:write") {
				t.Errorf("want exit 78 naming the missing key:write, got %s", o)
			}
			for _, wrong := range []string{"consul unavailable", "held by another session", "retrying"} {
				if strings.Contains(all, wrong) {
					t.Errorf("the refusal is taken for something else (%q):\n%s", wrong, o)
				}
			}
			if after := aclDump(t, admin); after != before {
				t.Errorf("Consul changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// Consul's own write rate limit (request_limits, enforcing) against many hosts running at
// once: each ends within its bound (1.5 × --consul-timeout of failing, beside the command),
// honestly (0 released, 75 nothing ran, 70 ran and still holds), and the tier stays
// consistent.
func TestConsulWriteRateLimit(t *testing.T) {
	t.Parallel()
	server := startServer(t, consulagent.Config{HCL: []string{
		`limits { request_limits { mode = "enforcing", write_rate = 3.0, read_rate = -1 } }`}})
	admin := clientOf(t, server, "")
	if _, err := admin.KV().Put(&api.KVPair{Key: base + "max_concurrent", Value: []byte("-1")}, nil); err != nil {
		t.Fatal(err)
	}
	const hosts, timeout = 16, 3 * time.Second
	type ended struct {
		holder string
		o      *outcome
		took   time.Duration
	}
	var wg sync.WaitGroup
	results := make(chan ended, hosts)
	for i := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := newHost(t, fmt.Sprintf("web-%02d", i), server.Addr)
			start := time.Now()
			o := h.run(t, "run", "--tier", tier, "--consul-timeout", timeout.String(), "--", "true")
			results <- ended{h.name, o, time.Since(start)}
		}()
	}
	wg.Wait()
	close(results)
	codes := map[int]int{}
	limited := 0
	snap := tierOf(t, admin)
	for r := range results {
		codes[r.o.code]++
		if strings.Contains(r.o.stderr.String(), "429") || strings.Contains(r.o.stderr.String(), "rate limit") {
			limited++
		}
		// Two operations (take, then release), each within 1.5 × the timeout; the command is
		// instant.
		if r.took > 3*timeout {
			t.Errorf("%s took %s, want within %s", r.holder, r.took.Round(time.Millisecond), 3*timeout)
		}
		_, holds := snap.Holders[r.holder]
		switch r.o.code {
		case 0, 75:
			if holds {
				t.Errorf("%s exited %d but holds a slot", r.holder, r.o.code)
			}
		case 70:
			if !holds {
				t.Errorf("%s exited 70 but holds no slot", r.holder)
			}
		default:
			t.Errorf("%s: %s", r.holder, r.o)
		}
	}
	checkTiers(t, admin)
	t.Logf("%d hosts, write_rate 3/s, --consul-timeout %s: exit codes %v; %d saw the rate limit", hosts, timeout, codes, limited)
	if limited == 0 {
		t.Log("no host met the rate limit: the limit did not bite on this machine")
	}
}
