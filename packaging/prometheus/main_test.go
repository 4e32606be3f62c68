// Package prometheus_test proves the shipped alerting rules (tierlock-rules.yml) with the real
// tools: promtool checks them and runs unit tests whose series come from a real tierlock state
// (scenarios run by the tierlock binary against a real Consul agent, read back by `status
// --format prometheus`), and a real Prometheus server scrapes a real node_exporter that serves
// tierlock's files, with the rules loaded. promtool, prometheus and prometheus-node-exporter come
// from Debian's packages, which `make test-deps` installs.
package prometheus_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/internal/testkit/consulagent"
	"github.com/tierlock/tierlock/internal/testkit/testdeps"
)

var (
	rules  string // the rules file, absolute
	binary string // tierlock, built for these tests
	agents consulagent.Lazy
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	var err error
	if rules, err = filepath.Abs("tierlock-rules.yml"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "tierlock-prometheus-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "tierlock")
	if err := consulagent.Build("../../cmd/tierlock", binary, "-X main.version=9.9.9-test"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	agents.LogPath = filepath.Join(dir, "consul.log")
	defer agents.Stop()
	return m.Run()
}

// tools requires the Debian packages' commands: where `make test-deps` could have installed
// them (root, apt-get) their absence fails the test, elsewhere it skips, loudly.
func tools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		pkg := "prometheus"
		if n == "prometheus-node-exporter" {
			pkg = n
		}
		testdeps.Tool(t, n, pkg)
	}
}

// result is how a tierlock command ended.
type result struct {
	code           int
	stdout, stderr string
}

// tierlock runs the binary against the package's agent, under the test's own prefix, with
// nothing of this machine's configuration.
func tierlock(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	agent, _ := agents.Get(t)
	n := 1 // --prefix goes after the command: `rollout policy` is two words
	if args[0] == "rollout" {
		n = 2
	}
	full := append(append(slices.Clone(args[:n]), "--prefix", testkit.Prefix(t)), args[n:]...)
	cmd := exec.Command(binary, full...)
	for _, kv := range os.Environ() {
		if !regexp.MustCompile(`^(TIERLOCK_|CONSUL_|AWS_)`).MatchString(kv) {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "CONSUL_HTTP_ADDR="+agent.Addr, "TIERLOCK_CONFIG="+os.DevNull)
	return cmd
}

// must runs tierlock to its end and fails the test unless it exits with code.
func must(t *testing.T, code int, args ...string) result {
	t.Helper()
	cmd := tierlock(t, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("tierlock %s: %v", strings.Join(args, " "), err)
	}
	if r.code != code {
		t.Fatalf("tierlock %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, code, r.stdout, r.stderr)
	}
	return r
}
