package lock_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
	"github.com/tierlock/tierlock/lock"
)

// One real Consul agent for the package, started by the first test that needs it; each test
// works under its own key prefix.
var agent consulagent.Lazy

func TestMain(m *testing.M) {
	code := m.Run()
	agent.Stop()
	os.Exit(code)
}

// consul is the package agent's client.
func consul(t testing.TB) *api.Client {
	t.Helper()
	return agent.Client(t)
}

const tier = "prod/web"

var unsafe = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// prefix is the test's own key prefix.
func prefix(t *testing.T) string {
	return "test/" + unsafe.ReplaceAllString(t.Name(), "_")
}

// newSem returns a semaphore for tier under the test's prefix, with the given default max.
func newSem(t *testing.T, defaultMax int) *lock.Semaphore {
	t.Helper()
	s, err := lock.New(consul(t).KV(), lock.Options{Prefix: prefix(t), Tier: tier, DefaultMax: defaultMax, Sessions: consul(t).Session()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// put writes a key of the test's tier (key relative to PREFIX/TIER/).
func put(t *testing.T, key, value string) {
	t.Helper()
	if _, err := consul(t).KV().Put(&api.KVPair{Key: prefix(t) + "/" + tier + "/" + key, Value: []byte(value)}, nil); err != nil {
		t.Fatal(err)
	}
}

// dump returns every key of the test's prefix with its value and ModifyIndex, to show that
// nothing was written.
func dump(t *testing.T) map[string]string {
	t.Helper()
	pairs, _, err := consul(t).KV().List(prefix(t)+"/", &api.QueryOptions{RequireConsistent: true})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range pairs {
		out[strings.TrimPrefix(p.Key, prefix(t)+"/"+tier+"/")] = fmt.Sprintf("%s@%d", p.Value, p.ModifyIndex)
	}
	return out
}

// values returns every key of the test's tier with its value.
func values(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range dump(t) {
		out[k] = v[:strings.LastIndex(v, "@")]
	}
	return out
}

// checkInvariant fails the test if current differs from the number of running/ keys.
func checkInvariant(t *testing.T) {
	t.Helper()
	vals := values(t)
	n := 0
	for k := range vals {
		if strings.HasPrefix(k, "running/") {
			n++
		}
	}
	cur := vals["current"]
	if cur == "" {
		cur = "0"
	}
	if cur != fmt.Sprint(n) {
		t.Errorf("invariant broken: current=%q, %d running/ keys: %v", cur, n, vals)
	}
}

func req(holder, runID string) lock.Request {
	return lock.Request{Record: lock.Record{Holder: holder, RunID: runID, Hostname: holder + ".test", PID: 1, Command: "true"}}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}
