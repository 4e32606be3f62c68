package reliability_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/internal/testkit/consulagent"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// Each test starts the Consul it needs (a server with a data directory, a cluster, ACLs, TLS;
// the binary from consulagent.Need) and drives the real tierlock binary, as hosts run it, under
// the default prefix "chef".
//
// Under -race the hosts run tierlock built without it (tierlockBin), but in the tests that
// kill, restart and inject faults at random (raced: the soak, the crashes), where the
// shutdown and retry paths run in orders nothing else reaches. Elsewhere the race detector
// only multiplied the CPU of the hundreds of commands these tests start (the package alone:
// 249 CPU-seconds with the race build everywhere, 114 with the plain one), and it watches the
// same code in cmd/tierlock's tests, which run the race build, and in lock's and runner's.
// TIERLOCK_TEST_RACE_ALL=1 gives every host the race build.
var tierlockBin, tierlockRaceBin, slotcheckBin string

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tierlock-reliability")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	tierlockBin, tierlockRaceBin = filepath.Join(dir, "tierlock"), filepath.Join(dir, "tierlock-race")
	slotcheckBin = filepath.Join(dir, "slotcheck")
	if err := consulagent.BuildIn("", "../cmd/tierlock", tierlockBin, "-X main.version=0.0.0-reliability", raceAll()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if raceAll() || !consulagent.RaceEnabled {
		tierlockRaceBin = tierlockBin // the same build
	} else if err := consulagent.Build("../cmd/tierlock", tierlockRaceBin, "-X main.version=0.0.0-reliability"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// slotcheck is the tests' own witness, not tierlock: the race detector would only add its
	// start-up CPU to each of the hundreds of commands the tests run.
	if err := consulagent.BuildPlain("../internal/testkit/slotcheck", slotcheckBin, ""); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Every test starts its own Consul and spends most of its time waiting on it and on the
	// hosts it runs, not on the CPU: they all run side by side from the start (the package's
	// wall time is then its longest test's, the mixed-version one; at 8 at a time the longest
	// tests, last in file order, started only when others ended, and the package took twice
	// as long). An explicit -parallel wins.
	flag.Parse()
	testkit.Parallel(16)
	return m.Run()
}

// raceAll: TIERLOCK_TEST_RACE_ALL=1 asks for the race build on every host.
func raceAll() bool { return os.Getenv("TIERLOCK_TEST_RACE_ALL") == "1" }

const tier = "prod/web"

// base is the test tier's key prefix.
const base = schema.DefaultPrefix + "/" + tier + "/"

// startServer starts a Consul server that keeps its state in a data directory of the test,
// and stops it at the end.
func startServer(t *testing.T, cfg consulagent.Config) *consulagent.Agent {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Join(t.TempDir(), "data")
	}
	cfg.LogPath = filepath.Join(t.TempDir(), "consul.log")
	a, err := consulagent.Launch(context.Background(), consulagent.Need(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	return a
}

// clientOf is a client of agent a with token (its HTTP port, no TLS).
func clientOf(t *testing.T, a *consulagent.Agent, token string) *api.Client {
	t.Helper()
	c, err := a.ClientWithToken(token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// host is one machine of a fleet: its holder name, its own state directory, how it reaches
// Consul, and its tierlock binary. Nothing comes from the test's own environment.
type host struct {
	name string
	env  []string
	bin  string
}

func newHost(t *testing.T, name, consulAddr string, env ...string) *host {
	h := &host{name: name, bin: tierlockBin}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TIERLOCK_") && !strings.HasPrefix(kv, "CONSUL_") && !strings.HasPrefix(kv, "AWS_") {
			h.env = append(h.env, kv)
		}
	}
	h.env = append(h.env, "CONSUL_HTTP_ADDR="+consulAddr, "TIERLOCK_CONFIG="+os.DevNull, "TIERLOCK_HOLDER="+name, "TIERLOCK_STATE_DIR="+t.TempDir())
	h.env = append(h.env, env...)
	return h
}

// raced gives the host the race build of tierlock (see tierlockBin).
func (h *host) raced() *host {
	h.bin = tierlockRaceBin
	return h
}

// command prepares `tierlock ARGS` on the host, output captured, not started.
func (h *host) command(args ...string) (*exec.Cmd, *outcome) {
	cmd := exec.Command(h.bin, args...)
	cmd.Env = h.env
	o := &outcome{}
	cmd.Stdout, cmd.Stderr = &o.stdout, &o.stderr
	return cmd, o
}

// outcome is how one tierlock process ended.
type outcome struct {
	code           int
	stdout, stderr bytes.Buffer
}

func (o *outcome) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", o.code, o.stdout.String(), o.stderr.String())
}

// wait waits for cmd and records its exit code; a process killed by a signal gets -1.
func wait(cmd *exec.Cmd, o *outcome) error {
	err := cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return err
	}
	o.code = cmd.ProcessState.ExitCode()
	return nil
}

// run runs `tierlock ARGS` on the host to the end.
func (h *host) run(t *testing.T, args ...string) *outcome {
	t.Helper()
	cmd, o := h.command(args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := wait(cmd, o); err != nil {
		t.Fatal(err)
	}
	return o
}

func wantExit(t *testing.T, o *outcome, code int) {
	t.Helper()
	if o.code != code {
		t.Fatalf("want exit %d, got %s", code, o)
	}
}

// recorder is a file that commands append lines to (one write of one line is atomic with
// O_APPEND), so its order is the order of what the commands did.
type recorder string

func newRecorder(t *testing.T) recorder { return recorder(filepath.Join(t.TempDir(), "recorder")) }

// script is a command for `tierlock run`: it asks Consul directly (not through any proxy;
// internal/testkit/slotcheck, with a consistent read, asking again while Consul cannot answer) whether
// the host holds its slot, appends "start HOST PID", "NOSLOT HOST PID" or "UNKNOWN HOST PID",
// sleeps for sleep, appends "end HOST", and exits with code.
func (r recorder) script(consulAddr, holder string, sleep time.Duration, code int) []string {
	return []string{"sh", "-c", `"$0" "$1" "$2"; case $? in 0) s=start;; 1) s=NOSLOT;; *) s=UNKNOWN;; esac
echo "$s $3 $$" >> "$4"; sleep "$5"; echo "end $3" >> "$4"; exit "$6"`,
		slotcheckBin, consulAddr, base + "running/" + holder, holder, string(r), fmt.Sprintf("%.3f", sleep.Seconds()), fmt.Sprint(code)}
}

// lines returns the recorder's lines, split into words.
func (r recorder) lines(t *testing.T) [][]string {
	t.Helper()
	b, err := os.ReadFile(string(r))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			out = append(out, strings.Fields(l))
		}
	}
	return out
}

// starts returns how many commands started, per host, failing the test on one that ran
// without a slot.
func (r recorder) starts(t *testing.T) map[string]int {
	t.Helper()
	n := map[string]int{}
	for _, l := range r.lines(t) {
		switch l[0] {
		case "NOSLOT":
			t.Errorf("%s ran its command without a slot", l[1])
		case "UNKNOWN":
			t.Errorf("%s ran its command; Consul would not say whether it held a slot", l[1])
		case "start":
			n[l[1]]++
		}
	}
	return n
}

// killGroup kills what is left of a command started by a tierlock that was killed: its
// process group, whose id is the pid the script recorded.
func (r recorder) killGroup(t *testing.T, holder string) {
	t.Helper()
	for _, l := range r.lines(t) {
		if l[0] == "start" && l[1] == holder {
			var pid int
			fmt.Sscan(l[2], &pid)
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
}

// checkTiers reads every tier under the prefix consistently and fails the test when a promise
// is broken: current is not the number of running/ keys, or a stored value cannot be read.
// It returns the snapshots.
func checkTiers(t *testing.T, c *api.Client) []*lock.Snapshot {
	t.Helper()
	var snaps []*lock.Snapshot
	var err error
	// The agent may be between leaders (or restarting): ask again for a while.
	if !testkit.Poll(testkit.Wait, func() bool {
		snaps, err = lock.ReadAll(context.Background(), c.KV(), lock.Options{})
		return err == nil
	}) {
		t.Fatalf("read the tiers: %v", err)
	}
	for _, s := range snaps {
		if s.Drift() {
			t.Errorf("invariant broken in %s: current %d, %d running/ keys", s.Tier, s.Current, s.RunningKeys)
		}
		if err := s.Err(); err != nil {
			t.Errorf("%s: %v", s.Tier, err)
		}
	}
	return snaps
}

// tierOf returns the test tier's snapshot from checkTiers (an empty one if it has no keys).
func tierOf(t *testing.T, c *api.Client) *lock.Snapshot {
	t.Helper()
	for _, s := range checkTiers(t, c) {
		if s.Tier == tier {
			return s
		}
	}
	return &lock.Snapshot{Tier: tier, Holders: map[string]schema.Record{}}
}

// peak is the most commands that ran at once, by the recorder's order.
func (r recorder) peak(t *testing.T) int {
	t.Helper()
	running, peak := 0, 0
	for _, l := range r.lines(t) {
		switch l[0] {
		case "start", "NOSLOT", "UNKNOWN":
			running++
			peak = max(peak, running)
		case "end":
			running--
		}
	}
	return peak
}

// kvPair is a key of the test tier.
func kvPair(key, value string) *api.KVPair {
	return &api.KVPair{Key: base + key, Value: []byte(value)}
}
