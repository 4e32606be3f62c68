package consulagent

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/hashicorp/consul/api"
)

// SkipEnv, set to 1, makes every test that needs a Consul agent skip, saying so, whether or not
// a binary is there: `make check` sets it to run the tests that need no Consul, quickly and
// without starting one. `make test` never passes it on.
const SkipEnv = "TIERLOCK_SKIP_CONSUL"

// Need returns the consul binary for a test that needs one. Tests that need no Consul must pass
// on a fresh clone, so a missing binary skips the test, naming `make consul`; but a
// $TIERLOCK_CONSUL that names no file fails it, because `make test` sets it and a test run that
// was promised an agent must never pass by skipping. $TIERLOCK_SKIP_CONSUL=1 (SkipEnv) skips
// it first.
func Need(t testing.TB) string {
	t.Helper()
	if os.Getenv(SkipEnv) == "1" {
		t.Skipf("%s=1 (make check): skipping a test that needs a real Consul agent; make test runs it", SkipEnv)
	}
	if p := os.Getenv("TIERLOCK_CONSUL"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("consulagent: TIERLOCK_CONSUL=%q: %v (run `make consul`)", p, err)
		}
		return p
	}
	bin, err := Binary()
	if err != nil {
		t.Skipf("%v; skipping a test that needs a real Consul agent", err)
	}
	return bin
}

// Lazy is the one dev agent of a test package, started by the first test that asks for it, so
// that a package's tests that need no Consul run without one. TestMain stops it.
type Lazy struct {
	// LogPath receives the agent's output (discarded if empty).
	LogPath string
	// Args are more agent flags.
	Args []string

	once   sync.Once
	agent  *Agent
	client *api.Client
	err    error
}

// Get returns the agent and a client of it (no token), starting it on first use; a test that
// cannot have it fails or skips as Need says.
func (l *Lazy) Get(t testing.TB) (*Agent, *api.Client) {
	t.Helper()
	bin := Need(t)
	l.once.Do(func() {
		if l.agent, l.err = Start(context.Background(), bin, l.LogPath, l.Args...); l.err != nil {
			return
		}
		l.client, l.err = l.agent.Client()
	})
	if l.err != nil {
		t.Fatalf("consulagent: start the package's agent: %v", l.err)
	}
	return l.agent, l.client
}

// Client is Get's client.
func (l *Lazy) Client(t testing.TB) *api.Client {
	t.Helper()
	_, c := l.Get(t)
	return c
}

// Stop stops the agent if a test started it.
func (l *Lazy) Stop() {
	if l.agent != nil {
		l.agent.Stop()
	}
}
