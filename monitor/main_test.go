package monitor_test

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/internal/testkit/consulagent"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
	"github.com/tierlock/tierlock/monitor"
)

// One real Consul agent for the package, started by the first test that needs it; each test
// works under its own key prefix.
var agent consulagent.Lazy

func TestMain(m *testing.M) {
	code := m.Run()
	agent.Stop()
	os.Exit(code)
}

// slot is one slot to take for a test.
type slot struct{ tier, holder, instance, node string }

// take takes the slots, in tiers that allow any number of holders.
func take(t *testing.T, slots ...slot) {
	t.Helper()
	for _, s := range slots {
		sem, err := lock.New(agent.Client(t).KV(), lock.Options{Prefix: testkit.Prefix(t), Tier: s.tier, DefaultMax: -1})
		if err != nil {
			t.Fatal(err)
		}
		_, err = sem.Acquire(testkit.Ctx(t), lock.Request{Record: schema.Record{
			Holder: s.holder, RunID: "run-" + s.holder, InstanceID: s.instance, Node: s.node, Command: "chef-client",
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// held lists the test's slots as tier:holder, sorted, and checks every tier's invariant.
func held(t *testing.T) []string {
	t.Helper()
	snaps, err := lock.ReadAll(testkit.Ctx(t), agent.Client(t).KV(), lock.Options{Prefix: testkit.Prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
	var out []string
	for _, s := range snaps {
		for _, h := range s.Unreadable() {
			out = append(out, s.Tier+":"+h)
		}
		for h := range s.Holders {
			out = append(out, s.Tier+":"+h)
		}
	}
	slices.Sort(out)
	return out
}

func freedList(freed []monitor.Freed) string {
	var out []string
	for _, f := range freed {
		out = append(out, f.Tier+":"+f.Holder)
	}
	return strings.Join(out, " ")
}

func newReaper(t *testing.T, now func() time.Time) *monitor.Reaper {
	t.Helper()
	r, err := monitor.NewReaper(agent.Client(t).KV(), monitor.Options{Prefix: testkit.Prefix(t), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return r
}
