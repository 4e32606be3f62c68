package lock_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/internal/testkit/consulagent"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// One real Consul agent for the package, started by the first test that needs it; each test
// works under its own key prefix.
var agent consulagent.Lazy

func TestMain(m *testing.M) {
	code := m.Run()
	agent.Stop()
	os.Exit(code)
}

const tier = "prod/web"

// newSem returns a semaphore for tier under the test's prefix, with the given default max.
func newSem(t *testing.T, defaultMax int) *lock.Semaphore {
	t.Helper()
	return newSemOn(t, agent.Client(t).KV(), defaultMax)
}

// newSemOn is newSem over kv (a wrapper of the agent's, which counts or fails requests).
func newSemOn(t *testing.T, kv lock.KV, defaultMax int) *lock.Semaphore {
	t.Helper()
	s, err := lock.New(kv, lock.Options{Prefix: testkit.Prefix(t), Tier: tier, DefaultMax: defaultMax, Sessions: agent.Client(t).Session()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// put writes a key of the test's tier (key relative to PREFIX/TIER/).
func put(t *testing.T, key, value string) {
	t.Helper()
	if _, err := agent.Client(t).KV().Put(&api.KVPair{Key: testkit.Prefix(t) + "/" + tier + "/" + key, Value: []byte(value)}, nil); err != nil {
		t.Fatal(err)
	}
}

// dump returns every key of the test's prefix with its value and ModifyIndex, to show that
// nothing was written.
func dump(t *testing.T) map[string]string {
	t.Helper()
	pairs, _, err := agent.Client(t).KV().List(testkit.Prefix(t)+"/", &api.QueryOptions{RequireConsistent: true})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range pairs {
		out[strings.TrimPrefix(p.Key, testkit.Prefix(t)+"/"+tier+"/")] = fmt.Sprintf("%s@%d", p.Value, p.ModifyIndex)
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

func req(holder, runID string) lock.Request {
	return lock.Request{Record: schema.Record{Holder: holder, RunID: runID, Hostname: holder + ".test", PID: 1, Command: "true"}}
}
