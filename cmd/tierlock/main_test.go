package main_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/internal/testkit/consulagent"
)

// The CLI is tested as users run it: the real binary, as separate processes, against a real
// Consul agent (one for the package, started by the first test that needs it), each test under
// its own key prefix.
var (
	binDir string // the binaries' directory, for the life of the test binary
	// The builds of bin and plainBin, each done on first use.
	buildRace = sync.OnceValue(func() error {
		return consulagent.Build(".", filepath.Join(binDir, "tierlock"), testLDFlags)
	})
	buildPlain = sync.OnceValue(func() error {
		return consulagent.BuildPlain(".", filepath.Join(binDir, "tierlock-plain"), testLDFlags)
	})
	agents = consulagent.Lazy{Args: []string{"-hcl", "limits { http_max_conns_per_client = 10000 }"}}
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tierlock-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	// The fault tests' parallel cases mostly wait (on held requests, timeouts, sessions), not
	// on the CPU: measured alone, the two fault matrices took 292 s at 8 cases at a time with
	// the machine mostly idle, 130 s at 24. 16 leaves room for the package beside it. An
	// explicit -parallel wins.
	//
	// The top-level tests run one after another, but for the few that spend their time
	// waiting on a clock (sessions to expire, retries, refused connections) and little on the
	// CPU: those are parallel, so they run side by side at the end of the package. (With
	// every test parallel, the package kept both cores busy for minutes and starved the
	// Consul of the package beside it.)
	flag.Parse()
	testkit.Parallel(16)
	agents.LogPath = filepath.Join(dir, "consul.log")
	defer agents.Stop()
	return m.Run()
}

const testLDFlags = "-X main.version=9.9.9-test -X main.commit=abc1234 -X main.date=2026-11-21T00:00:00Z"

// plainBin is the tierlock binary without the race detector, for TestFaultEveryRequest's 348
// runs alone: under -race they took half of the package's CPU (measured alone, the two fault
// matrices: 198 CPU-seconds with the race build, 104 with this one), and the race detector
// watches the same code in every other test of the package, TestFaultEachKindContinuously's
// runs under every fault of every request kind among them. TIERLOCK_TEST_RACE_ALL=1 makes it
// bin, for a run that wants the race detector everywhere.
func plainBin(t testing.TB) string {
	t.Helper()
	if os.Getenv("TIERLOCK_TEST_RACE_ALL") == "1" {
		return bin(t)
	}
	if err := buildPlain(); err != nil {
		t.Fatalf("building tierlock: %v", err)
	}
	return filepath.Join(binDir, "tierlock-plain")
}

// bin is the tierlock binary the tests run, built on first use (with -race under -race): the
// tests that run no process (those of `make check`) do not wait for a build.
func bin(t testing.TB) string {
	t.Helper()
	if err := buildRace(); err != nil {
		t.Fatalf("building tierlock: %v", err)
	}
	return filepath.Join(binDir, "tierlock")
}

// agentAddr is the package agent's HTTP address.
func agentAddr(t testing.TB) string {
	t.Helper()
	a, _ := agents.Get(t)
	return a.Addr
}

const tier = "prod/web"

// result is how one tierlock process ended.
type result struct {
	code           int
	stdout, stderr string
}

// cli prepares a tierlock process for the test: its own prefix and state dir, Consul at addr,
// no TIERLOCK_ or CONSUL_ variables from the environment.
func cli(t *testing.T, addr string, args ...string) *exec.Cmd {
	t.Helper()
	return cliOf(t, bin(t), addr, args...)
}

// cliOf is cli running the binary at path.
func cliOf(t *testing.T, path, addr string, args ...string) *exec.Cmd {
	t.Helper()
	full := []string{args[0], "--prefix", testkit.Prefix(t)}
	if args[0] == "rollout" && len(args) > 1 { // the flags are the subcommand's
		full, args = []string{args[0], args[1], "--prefix", testkit.Prefix(t)}, args[1:]
	}
	if args[0] == "run" && !strings.Contains(strings.Join(args, " "), "--state-dir") {
		full = append(full, "--state-dir", stateDir(t))
	}
	full = append(full, args[1:]...)
	cmd := exec.Command(path, full...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TIERLOCK_") && !strings.HasPrefix(kv, "CONSUL_") && !strings.HasPrefix(kv, "AWS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// The machine's own /etc/default/tierlock (left by a package test, say) is not this test's.
	cmd.Env = append(cmd.Env, "CONSUL_HTTP_ADDR="+addr, "TIERLOCK_CONFIG="+os.DevNull)
	return cmd
}

var (
	stateDirsMu sync.Mutex                // parallel subtests ask at once
	stateDirs   = map[*testing.T]string{} // by the test, not its name: -count runs a name again
)

func stateDir(t *testing.T) string {
	stateDirsMu.Lock()
	defer stateDirsMu.Unlock()
	if d, ok := stateDirs[t]; ok {
		return d
	}
	d := t.TempDir()
	stateDirs[t] = d
	return d
}

// run runs tierlock to the end.
func run(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errb.String()}
}

// tl runs `tierlock ARGS` against the test agent.
func tl(t *testing.T, args ...string) result {
	t.Helper()
	return run(t, cli(t, agentAddr(t), args...))
}

func wantCode(t *testing.T, r result, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
}

// put writes a key of the test's tier.
func put(t *testing.T, key, value string) {
	t.Helper()
	if _, err := agents.Client(t).KV().Put(&api.KVPair{Key: testkit.Prefix(t) + "/" + tier + "/" + key, Value: []byte(value)}, nil); err != nil {
		t.Fatal(err)
	}
}

// dump returns the test prefix's keys with values and ModifyIndexes, to show nothing changed.
func dump(t *testing.T) string {
	t.Helper()
	pairs, _, err := agents.Client(t).KV().List(testkit.Prefix(t)+"/", &api.QueryOptions{RequireConsistent: true})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, p := range pairs {
		fmt.Fprintf(&b, "%s=%s@%d\n", strings.TrimPrefix(p.Key, testkit.Prefix(t)+"/"), p.Value, p.ModifyIndex)
	}
	return b.String()
}

// record reads running/<holder>; ok is false when it is absent.
type record struct {
	Holder     string    `json:"holder"`
	State      string    `json:"state"`
	ExitCode   *int      `json:"exit_code"`
	Attempts   int       `json:"attempts"`
	InstanceID string    `json:"instance_id"`
	Node       string    `json:"node"`
	RunID      string    `json:"run_id"`
	Command    string    `json:"command"`
	Version    string    `json:"version"`
	StartedAt  time.Time `json:"started_at"`
}

func getRecord(t *testing.T, holder string) (record, bool) {
	t.Helper()
	p, _, err := agents.Client(t).KV().Get(testkit.Prefix(t)+"/"+tier+"/running/"+holder, &api.QueryOptions{RequireConsistent: true})
	if err != nil {
		t.Fatal(err)
	}
	if p == nil {
		return record{}, false
	}
	var r record
	if err := json.Unmarshal(p.Value, &r); err != nil {
		t.Fatalf("running/%s = %q: %v", holder, p.Value, err)
	}
	return r, true
}

// current returns the tier's current and its number of running/ keys.
func current(t *testing.T) (string, int) {
	t.Helper()
	pairs, _, err := agents.Client(t).KV().List(testkit.Prefix(t)+"/"+tier+"/", &api.QueryOptions{RequireConsistent: true})
	if err != nil {
		t.Fatal(err)
	}
	cur, n := "", 0
	for _, p := range pairs {
		rel := strings.TrimPrefix(p.Key, testkit.Prefix(t)+"/"+tier+"/")
		if rel == "current" {
			cur = string(p.Value)
		}
		if strings.HasPrefix(rel, "running/") {
			n++
		}
	}
	return cur, n
}

// marker is a file a command creates, to prove it ran (or did not).
func marker(t *testing.T, name string) string { return filepath.Join(stateDir(t), name) }

func exists(path string) bool { _, err := os.Stat(path); return err == nil }

func signalProcess(t *testing.T, cmd *exec.Cmd, sig syscall.Signal) {
	t.Helper()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}
