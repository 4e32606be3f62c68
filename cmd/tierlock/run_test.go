package main_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/internal/testkit/faultproxy"
)

func TestRunAcquiresAndReleases(t *testing.T) {
	r := tl(t, "run", "--tier", tier, "--holder", "web-1", "--log-format", "json", "--", "sh", "-c", "echo hello; echo oops >&2")
	wantCode(t, r, 0)
	if r.stdout != "hello\n" {
		t.Errorf("stdout %q: the command's output must stream through", r.stdout)
	}
	if cur, n := current(t); cur != "0" || n != 0 {
		t.Errorf("after a successful run: current %q, %d running keys", cur, n)
	}
	// Every log line carries run_id, tier and holder.
	lines := 0
	sc := bufio.NewScanner(strings.NewReader(r.stderr))
	for sc.Scan() {
		if sc.Text() == "oops" {
			continue
		}
		lines++
		var entry map[string]any
		if err := json.Unmarshal(sc.Bytes(), &entry); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if entry["run_id"] == "" || entry["run_id"] == nil || entry["tier"] != tier || entry["holder"] != "web-1" {
			t.Errorf("log line without run_id/tier/holder: %s", sc.Text())
		}
	}
	if lines < 2 {
		t.Errorf("expected acquire and release log lines, got %q", r.stderr)
	}
}

func TestRunRecordsTheRun(t *testing.T) {
	// A failing command keeps the slot, so the record can be inspected afterwards.
	r := tl(t, "run", "--tier", tier, "--holder", "web-1", "--instance-id", "i-0abc123", "--", "sh", "-c", "exit 4")
	wantCode(t, r, 4)
	rec, ok := getRecord(t, "web-1")
	if !ok {
		t.Fatal("no record after a failed run")
	}
	if rec.State != "failed" || rec.ExitCode == nil || *rec.ExitCode != 4 || rec.Attempts != 1 ||
		rec.InstanceID != "i-0abc123" || rec.Command != "sh -c exit 4" || rec.Version != "tierlock 9.9.9-test" ||
		len(rec.RunID) != 8 || time.Since(rec.StartedAt) > time.Minute {
		t.Errorf("record %+v", rec)
	}
	// The node is the local agent's, for `reap --consul-catalog`.
	if node, err := agents.Client(t).Agent().NodeName(); err != nil || rec.Node != node {
		t.Errorf("record node %q, agent's node %q (%v)", rec.Node, node, err)
	}
	testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))
}

// An agent that will not say its node name (an ACL without agent:read, say) costs the slot its
// node, not the run.
func TestRunWithoutNodeNameStillRuns(t *testing.T) {
	p := faultproxy.New(agentAddr(t))
	defer p.Close()
	p.SetRule(func(r *http.Request) int {
		if r.URL.Path == "/v1/agent/self" {
			return http.StatusForbidden
		}
		return 0
	})
	r := run(t, cli(t, p.Addr, "run", "--tier", tier, "--holder", "web-1", "--", "false"))
	wantCode(t, r, 1)
	rec, ok := getRecord(t, "web-1")
	if !ok || rec.Node != "" {
		t.Errorf("record %+v (present %v), want one without a node", rec, ok)
	}
	if !strings.Contains(r.stderr, "records no Consul node") || p.Injected() != 1 {
		t.Errorf("want one refusal and a warning; %d injected, stderr: %s", p.Injected(), r.stderr)
	}
}

func TestRunFullTierWaitsThenSkips(t *testing.T) {
	put(t, "max_concurrent", "1")
	put(t, "current", "1")
	put(t, "running/web-9", `{"holder":"web-9","state":"running","started_at":"2026-11-21T09:15:02Z","attempts":1}`)
	before := dump(t)
	m := marker(t, "ran")
	start := time.Now()
	r := tl(t, "run", "--tier", tier, "--holder", "web-1", "--wait", "1s", "--", "touch", m)
	wantCode(t, r, 75)
	if d := time.Since(start); d < time.Second {
		t.Errorf("gave up after %v, before --wait", d)
	}
	if exists(m) {
		t.Error("the command ran without a slot")
	}
	if after := dump(t); after != before {
		t.Errorf("a skipped run left a trace:\nbefore %s\nafter  %s", before, after)
	}
}

func TestRunDisabledWritesNothing(t *testing.T) {
	put(t, "max_concurrent", "0")
	before := dump(t)
	m := marker(t, "ran")
	r := tl(t, "run", "--tier", tier, "--holder", "web-1", "--", "touch", m)
	wantCode(t, r, 75)
	if !strings.Contains(r.stderr, "tier disabled") {
		t.Errorf("no 'tier disabled' in the log: %s", r.stderr)
	}
	if exists(m) || dump(t) != before {
		t.Error("a disabled tier ran the command or was written to")
	}
}

func TestRunUnlimited(t *testing.T) {
	put(t, "max_concurrent", "-1")
	put(t, "current", "3")
	for _, h := range []string{"a", "b", "c"} {
		put(t, "running/"+h, "2026-11-21T09:15:02Z")
	}
	wantCode(t, tl(t, "run", "--tier", tier, "--holder", "web-1", "--", "true"), 0)
	testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))
}

func TestRunFailedHoldsThenReentryReleases(t *testing.T) {
	put(t, "max_concurrent", "1")
	wantCode(t, tl(t, "run", "--tier", tier, "--holder", "web-1", "--", "sh", "-c", "exit 3"), 3)
	rec, ok := getRecord(t, "web-1")
	if !ok || rec.State != "failed" || *rec.ExitCode != 3 {
		t.Fatalf("after failure: %+v (present %v)", rec, ok)
	}
	// The failed slot is held: another host cannot run.
	wantCode(t, tl(t, "run", "--tier", tier, "--holder", "web-2", "--wait", "0s", "--", "true"), 75)
	// The same host re-enters, succeeds and releases.
	m := marker(t, "attempt")
	r := tl(t, "run", "--tier", tier, "--holder", "web-1", "--", "sh", "-c", "touch "+m)
	wantCode(t, r, 0)
	if !exists(m) || !strings.Contains(r.stderr, "re-entered") {
		t.Errorf("no re-entry: %s", r.stderr)
	}
	if cur, n := current(t); cur != "0" || n != 0 {
		t.Errorf("after re-entry and success: current %q, %d running keys", cur, n)
	}
}

func TestRunSuccessCodes(t *testing.T) {
	wantCode(t, tl(t, "run", "--tier", tier, "--holder", "web-1", "--success-codes", "35", "--", "sh", "-c", "exit 35"), 0)
	if _, ok := getRecord(t, "web-1"); ok {
		t.Error("exit 35 with --success-codes 35 did not release")
	}
	cmd := cli(t, agentAddr(t), "run", "--tier", tier, "--holder", "web-2", "--", "sh", "-c", "exit 213")
	cmd.Env = append(cmd.Env, "TIERLOCK_SUCCESS_CODES=35,213")
	wantCode(t, run(t, cmd), 0)
	wantCode(t, tl(t, "run", "--tier", tier, "--holder", "web-3", "--", "sh", "-c", "exit 35"), 35)
	if rec, _ := getRecord(t, "web-3"); rec.State != "failed" {
		t.Errorf("exit 35 without --success-codes: %+v", rec)
	}
}

func TestRunTimeoutInterrupts(t *testing.T) {
	r := tl(t, "run", "--tier", tier, "--holder", "web-1", "--timeout", "300ms", "--kill-grace", "2s", "--", "sleep", "30")
	wantCode(t, r, 143)
	rec, ok := getRecord(t, "web-1")
	if !ok || rec.State != "interrupted" || rec.ExitCode != nil {
		t.Errorf("after timeout: %+v (present %v)", rec, ok)
	}
	testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))
}

func TestRunSIGTERMInterrupts(t *testing.T) {
	m := marker(t, "started")
	cmd := cli(t, agentAddr(t), "run", "--tier", tier, "--holder", "web-1", "--", "sh", "-c", "touch "+m+"; sleep 30")
	done := make(chan result, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := cmd.Wait()
		_ = err
		done <- result{code: cmd.ProcessState.ExitCode()}
	}()
	testkit.Eventually(t, "the command to start", func() bool { return exists(m) })
	signalProcess(t, cmd, syscall.SIGTERM)
	select {
	case r := <-done:
		if r.code != 143 {
			t.Errorf("exit %d, want 143", r.code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("tierlock did not end after SIGTERM")
	}
	rec, ok := getRecord(t, "web-1")
	if !ok || rec.State != "interrupted" {
		t.Errorf("after SIGTERM: %+v (present %v)", rec, ok)
	}
	testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))
}

func TestRunSignalWhileWaitingLeavesNoTrace(t *testing.T) {
	put(t, "max_concurrent", "1")
	put(t, "current", "1")
	put(t, "running/web-9", "2026-11-21T09:15:02Z")
	before := dump(t)
	cmd := cli(t, agentAddr(t), "run", "--tier", tier, "--holder", "web-1", "--", "true")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the run to wait", func() bool { return strings.Contains(stderr.String(), "waiting up to") })
	signalProcess(t, cmd, syscall.SIGINT)
	_ = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 75 {
		t.Errorf("exit %d, want 75\n%s", code, stderr.String())
	}
	if after := dump(t); after != before {
		t.Errorf("a run stopped while waiting left a trace:\nbefore %s\nafter  %s", before, after)
	}
}

func TestRunInvalidStoredValues(t *testing.T) {
	cases := map[string]map[string]string{
		"max abc":         {"max_concurrent": "abc"},
		"max 1.5":         {"max_concurrent": "1.5"},
		"max -2":          {"max_concurrent": "-2"},
		"max empty":       {"max_concurrent": ""},
		"max 20 digits":   {"max_concurrent": "12345678901234567890"},
		"current x":       {"current": "x"},
		"current -3":      {"current": "-3"},
		"running garbage": {"current": "1", "running/web-9": "not a record"},
		"running state":   {"current": "1", "running/web-9": `{"state":"zombie","started_at":"2026-11-21T09:15:02Z"}`},
		"running holder":  {"current": "1", "running/web-9": `{"holder":"web-8","state":"running","started_at":"2026-11-21T09:15:02Z"}`},
		"running key":     {"current": "1", "running/web 9": "2026-11-21T09:15:02Z"},
	}
	for name, kvs := range cases {
		t.Run(name, func(t *testing.T) {
			for k, v := range kvs {
				put(t, k, v)
			}
			before := dump(t)
			m := marker(t, "ran")
			r := tl(t, "run", "--tier", tier, "--holder", "web-1", "--", "touch", m)
			wantCode(t, r, 78)
			if exists(m) {
				t.Error("ran despite an invalid stored value")
			}
			if after := dump(t); after != before {
				t.Errorf("wrote despite an invalid stored value:\nbefore %s\nafter  %s", before, after)
			}
			key := ""
			for k := range kvs {
				if k != "current" || len(kvs) == 1 {
					key = k
				}
			}
			if !strings.Contains(r.stderr, key) {
				t.Errorf("the error does not name %s: %s", key, r.stderr)
			}
		})
	}
}

func TestRunBadFlags(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		names string
	}{
		{"no tier", []string{"--holder", "web-1"}, "--tier"},
		{"tier without service", []string{"--tier", "prod", "--holder", "web-1"}, `"prod"`},
		{"tier with three parts", []string{"--tier", "prod/web/x", "--holder", "web-1"}, `"prod/web/x"`},
		{"tier dot-dot", []string{"--tier", "../web", "--holder", "web-1"}, `".."`},
		{"holder with space", []string{"--tier", tier, "--holder", "web 1"}, `"web 1"`},
		{"holder with slash", []string{"--tier", tier, "--holder", "a/b"}, `"a/b"`},
		{"bad prefix", []string{"--tier", tier, "--holder", "web-1", "--prefix", "x y"}, `"x y"`},
		{"default max", []string{"--tier", tier, "--holder", "web-1", "--default-max", "-2"}, "-2"},
		{"success code", []string{"--tier", tier, "--holder", "web-1", "--success-codes", "300"}, "300"},
		{"negative wait", []string{"--tier", tier, "--holder", "web-1", "--wait", "-1s"}, "-1s"},
		{"queue ttl below consul's least", []string{"--tier", tier, "--holder", "web-1", "--queue-ttl", "5s"}, "--queue-ttl 5s"},
		{"queue ttl above consul's greatest", []string{"--tier", tier, "--holder", "web-1", "--queue-ttl", "25h"}, "--queue-ttl 25h0m0s"},
		{"log format", []string{"--tier", tier, "--holder", "web-1", "--log-format", "xml"}, `"xml"`},
		{"unknown flag", []string{"--tier", tier, "--holder", "web-1", "--bogus"}, "bogus"},
		{"missing command", []string{"--tier", tier, "--holder", "web-1", "--", "/nonexistent/chef-client"}, "/nonexistent/chef-client"},
		{"command with a pipe", []string{"--tier", tier, "--holder", "web-1", "--command", "chef-client | tee log"}, `--command "chef-client | tee log": unquoted '|'`},
		{"command unterminated", []string{"--tier", tier, "--holder", "web-1", "--command", "chef-client -o 'x"}, `--command "chef-client -o 'x": unterminated '`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tl(t, append([]string{"run"}, tc.args...)...)
			wantCode(t, r, 78)
			if !strings.Contains(r.stderr, tc.names) {
				t.Errorf("the error does not name %s: %s", tc.names, r.stderr)
			}
			if d := dump(t); d != "" {
				t.Errorf("wrote %s", d)
			}
		})
	}
}

// TIERLOCK_COMMAND is how /etc/default/tierlock gives the packaged unit its command line; a
// command after -- still wins, as a command line beats the environment.
func TestRunCommandFromEnvironment(t *testing.T) {
	m, other := marker(t, "ran with spaces"), marker(t, "other")
	cmd := cli(t, agentAddr(t), "run", "--tier", tier, "--holder", "web-1")
	cmd.Env = append(cmd.Env, "TIERLOCK_COMMAND=touch '"+m+"'")
	wantCode(t, run(t, cmd), 0)
	if !exists(m) {
		t.Fatalf("TIERLOCK_COMMAND did not run, or was split wrongly: no %q", m)
	}

	// A failed run keeps its record, which shows the command as it was split.
	cmd = cli(t, agentAddr(t), "run", "--tier", tier, "--holder", "web-1")
	cmd.Env = append(cmd.Env, `TIERLOCK_COMMAND=sh -c "exit 3"`)
	wantCode(t, run(t, cmd), 3)
	if rec, _ := getRecord(t, "web-1"); rec.Command != "sh -c exit 3" {
		t.Errorf("recorded command %q, want %q", rec.Command, "sh -c exit 3")
	}

	cmd = cli(t, agentAddr(t), "run", "--tier", tier, "--holder", "web-1", "--", "touch", other)
	cmd.Env = append(cmd.Env, "TIERLOCK_COMMAND=sh -c 'exit 9'")
	wantCode(t, run(t, cmd), 0)
	if !exists(other) {
		t.Error("the command after -- did not win over TIERLOCK_COMMAND")
	}
	testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))
}

func TestRunConsulUnreachable(t *testing.T) {
	bin(t) // built before any clock starts
	// A port nothing listens on: connection refused.
	p := faultproxy.New(agentAddr(t))
	addr := p.Addr
	p.Close()
	m := marker(t, "ran")
	start := time.Now()
	r := run(t, cli(t, addr, "run", "--tier", tier, "--holder", "web-1", "--consul-timeout", "1s", "--", "touch", m))
	wantCode(t, r, 75)
	if exists(m) {
		t.Error("ran without a slot")
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("took %v to give up with --consul-timeout 1s", d)
	}
	if !strings.Contains(r.stderr, "retrying") {
		t.Errorf("no retries logged: %s", r.stderr)
	}
}

func TestRunRetries429And5xx(t *testing.T) {
	p := faultproxy.New(agentAddr(t))
	defer p.Close()
	var n atomic.Int32
	p.SetRule(func(r *http.Request) int {
		if r.URL.Path == "/v1/agent/self" {
			return 0 // the node name is best effort, not retried: fault the slot's requests
		}
		switch n.Add(1) {
		case 1:
			return http.StatusTooManyRequests
		case 2:
			return http.StatusInternalServerError
		case 3:
			return faultproxy.Reset
		}
		return 0
	})
	r := run(t, cli(t, p.Addr, "run", "--tier", tier, "--holder", "web-1", "--consul-timeout", "20s", "--", "true"))
	wantCode(t, r, 0)
	if p.Injected() != 3 {
		t.Errorf("%d faults injected, want 3", p.Injected())
	}
	if cur, n := current(t); cur != "0" || n != 0 {
		t.Errorf("current %q, %d running keys", cur, n)
	}
}

func TestRunConsulFailsAfterCommand(t *testing.T) {
	p := faultproxy.New(agentAddr(t))
	defer p.Close()
	m := marker(t, "ran")
	// Consul answers until the command has run, then only 503s.
	p.SetRule(func(*http.Request) int {
		if exists(m) {
			return http.StatusServiceUnavailable
		}
		return 0
	})
	r := run(t, cli(t, p.Addr, "run", "--tier", tier, "--holder", "web-1", "--consul-timeout", "2s", "--", "touch", m))
	wantCode(t, r, 70)
	if p.Injected() < 2 {
		t.Errorf("release tried %d times, want retries", p.Injected())
	}
	rec, ok := getRecord(t, "web-1")
	if !ok || rec.State != "running" {
		t.Fatalf("the slot must stay held after a failed release: %+v (present %v)", rec, ok)
	}
	testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))
	// The next run on this host, with Consul healthy, re-enters and heals.
	os.Remove(m)
	p.SetRule(nil)
	r = run(t, cli(t, p.Addr, "run", "--tier", tier, "--holder", "web-1", "--", "true"))
	wantCode(t, r, 0)
	if cur, n := current(t); cur != "0" || n != 0 {
		t.Errorf("not healed: current %q, %d running keys", cur, n)
	}
}

func TestRunConsulRecoversAfterCommand(t *testing.T) {
	p := faultproxy.New(agentAddr(t))
	defer p.Close()
	m := marker(t, "ran")
	var fails atomic.Int32
	p.SetRule(func(*http.Request) int {
		if exists(m) && fails.Add(1) <= 3 {
			return http.StatusBadGateway
		}
		return 0
	})
	wantCode(t, run(t, cli(t, p.Addr, "run", "--tier", tier, "--holder", "web-1", "--consul-timeout", "30s", "--", "touch", m)), 0)
	if cur, n := current(t); cur != "0" || n != 0 {
		t.Errorf("release not retried to success: current %q, %d running keys", cur, n)
	}
}

func TestRunDryRunWritesNothing(t *testing.T) {
	m := marker(t, "ran")
	r := tl(t, "run", "--tier", tier, "--holder", "web-1", "--dry-run", "--", "touch", m)
	wantCode(t, r, 0)
	if !strings.Contains(r.stdout, "would take a slot") || exists(m) || dump(t) != "" {
		t.Errorf("dry run: stdout %q, ran %v, keys %q", r.stdout, exists(m), dump(t))
	}
	put(t, "max_concurrent", "0")
	before := dump(t)
	r = tl(t, "run", "--tier", tier, "--holder", "web-1", "--dry-run", "--", "touch", m)
	wantCode(t, r, 75)
	if !strings.Contains(r.stdout, "disabled") || dump(t) != before {
		t.Errorf("dry run on a disabled tier: %q", r.stdout)
	}
}

func TestRunLocalLockSkips(t *testing.T) {
	dir := stateDir(t)
	path := filepath.Join(dir, "tier=prod", "web.lock")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	m := marker(t, "ran")
	r := tl(t, "run", "--tier", tier, "--holder", "web-1", "--", "touch", m)
	wantCode(t, r, 75)
	if exists(m) || dump(t) != "" || !strings.Contains(r.stderr, "another tierlock run") {
		t.Errorf("ran beside another local run: %s", r.stderr)
	}
}

func TestRunInstanceIDFromIMDS(t *testing.T) {
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/latest/api/token":
			w.Write([]byte("token"))
		case "/latest/meta-data/instance-id":
			if r.Header.Get("X-aws-ec2-metadata-token") != "token" {
				http.Error(w, "no token", http.StatusUnauthorized)
				return
			}
			w.Write([]byte("i-0fedcba987"))
		}
	}))
	defer imds.Close()
	cmd := cli(t, agentAddr(t), "run", "--tier", tier, "--holder", "web-1", "--instance-id", "imds", "--", "false")
	cmd.Env = append(cmd.Env, "AWS_EC2_METADATA_SERVICE_ENDPOINT="+imds.URL)
	wantCode(t, run(t, cmd), 1)
	if rec, _ := getRecord(t, "web-1"); rec.InstanceID != "i-0fedcba987" {
		t.Errorf("record %+v, want instance id from IMDS", rec)
	}
}

func TestManyProcessesNeverExceedMax(t *testing.T) {
	for _, tc := range []struct{ hosts, max int }{{30, 3}, {60, 5}} {
		t.Run(fmt.Sprintf("%d over %d", tc.hosts, tc.max), func(t *testing.T) { manyProcesses(t, tc.hosts, tc.max) })
	}
}

// manyProcesses starts hosts real tierlock processes at once against max_concurrent=max.
func manyProcesses(t *testing.T, hosts, max int) {
	put(t, "max_concurrent", fmt.Sprint(max))
	rec := filepath.Join(t.TempDir(), "recorder")
	// The recorder is outside tierlock: each command appends start and end lines to one file
	// (O_APPEND writes of one line are atomic), so the file's order is the events' order.
	script := `echo "start $0" >> ` + rec + `; sleep 0.2; echo "end $0" >> ` + rec
	base := stateDir(t)
	var wg sync.WaitGroup
	for i := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := fmt.Sprintf("host-%d", i)
			cmd := cli(t, agentAddr(t), "run", "--tier", tier, "--holder", h, "--state-dir", filepath.Join(base, h),
				"--wait", "2m", "--", "sh", "-c", script, h)
			out, _ := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != 0 {
				t.Errorf("%s: exit %d\n%s", h, code, out)
			}
		}()
	}
	wg.Wait()
	b, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	running, peak, starts := 0, 0, map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		ev, h, _ := strings.Cut(line, " ")
		switch ev {
		case "start":
			running++
			starts[h] = true
		case "end":
			running--
		}
		peak = maxInt(peak, running)
	}
	if peak > max {
		t.Errorf("%d commands ran at once, max_concurrent is %d", peak, max)
	}
	if len(starts) != hosts {
		t.Errorf("%d of %d hosts ran", len(starts), hosts)
	}
	t.Logf("peak concurrency %d of %d", peak, max)
	testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))
	if cur, _ := current(t); cur != "0" {
		t.Errorf("current %q after all runs", cur)
	}
	if d := dump(t); strings.Contains(d, "/queue/") {
		t.Errorf("queue entries left behind:\n%s", d)
	}
}

// A waiter killed with SIGKILL keeps its queue entry until Consul ends its session (within
// twice its TTL, --queue-ttl, here 10s). Killed and gone before a slot comes free, it is passed over. Handed a
// slot before its session ended (a release hands the slot to the first in line), it holds it
// until its host's next run re-enters it, runs and releases it; then the line moves on.
func TestKilledWaiterLeavesTheQueue(t *testing.T) {
	t.Parallel() // it waits out sessions, not the CPU (see TestMain)
	put(t, "max_concurrent", "1")
	put(t, "current", "1")
	put(t, "running/holder", time.Now().UTC().Format(time.RFC3339))
	queued := func(h string) func() bool {
		return func() bool { return dumpKey(t, "queue/"+h) != "" }
	}
	start := func(h string) *exec.Cmd {
		cmd := cli(t, agentAddr(t), "run", "--tier", tier, "--holder", h, "--state-dir", filepath.Join(stateDir(t), h), "--wait", "2m", "--queue-ttl", "10s", "--", "true")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	finished := func(name string, cmd *exec.Cmd, within time.Duration) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		case <-time.After(within):
			_ = cmd.Process.Kill()
			t.Fatalf("%s did not get the slot within %s", name, within)
		}
	}

	// Killed, and its session ended before a slot came free: passed over.
	w1 := start("w1")
	testkit.Eventually(t, "w1 to queue", queued("w1"))
	w2 := start("w2")
	testkit.Eventually(t, "w2 to queue", queued("w2"))
	signalProcess(t, w1, syscall.SIGKILL)
	_ = w1.Wait()
	killed := time.Now()
	if !testkit.Poll(30*time.Second, func() bool { return !queued("w1")() }) {
		t.Fatal("the killed waiter's entry outlived twice its session's TTL")
	}
	t.Logf("the killed waiter's entry went %v after the kill", time.Since(killed).Round(time.Second))
	wantCode(t, tl(t, "release", "--tier", tier, "--holder", "holder"), 0)
	finished("w2", w2, 20*time.Second)
	testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))

	// Killed, and handed a slot while its session lived: its next run heals it.
	put(t, "running/holder", time.Now().UTC().Format(time.RFC3339))
	wantCode(t, tl(t, "repair", "--tier", tier), 0)
	w3 := start("w3")
	testkit.Eventually(t, "w3 to queue", queued("w3"))
	w4 := start("w4")
	testkit.Eventually(t, "w4 to queue", queued("w4"))
	signalProcess(t, w3, syscall.SIGKILL)
	_ = w3.Wait()
	wantCode(t, tl(t, "release", "--tier", tier, "--holder", "holder"), 0)
	if rec, ok := getRecord(t, "w3"); !ok || rec.State != "running" {
		t.Fatalf("w3's record: %+v (%v), want the slot handed to it", rec, ok)
	}
	w3 = start("w3") // its host's next run
	finished("w3's next run", w3, 20*time.Second)
	finished("w4", w4, 20*time.Second)
	if queued("w3")() || queued("w4")() {
		t.Error("a queue entry is left")
	}
	testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

func TestVersion(t *testing.T) {
	r := run(t, exec.Command(bin(t), "version"))
	wantCode(t, r, 0)
	for _, want := range []string{"tierlock 9.9.9-test", "abc1234", "2026-11-21T00:00:00Z"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("version output %q lacks %q", r.stdout, want)
		}
	}
}

// syncBuffer is a buffer a process writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A command that traps the signal and exits 0 was still interrupted: its slot stays held.
func TestRunTrappedSignalInterrupts(t *testing.T) {
	trap := `trap "exit 0" TERM; sleep 30 & wait`
	put(t, "max_concurrent", "2")
	r := tl(t, "run", "--tier", tier, "--holder", "web-1", "--timeout", "500ms", "--kill-grace", "5s", "--", "sh", "-c", trap)
	wantCode(t, r, 143)
	rec, ok := getRecord(t, "web-1")
	if !ok || rec.State != "interrupted" || rec.ExitCode == nil || *rec.ExitCode != 0 {
		t.Errorf("after a trapped timeout: %+v (present %v), want held, interrupted, exit 0", rec, ok)
	}

	m := marker(t, "started")
	cmd := cli(t, agentAddr(t), "run", "--tier", tier, "--holder", "web-2", "--", "sh", "-c", "touch "+m+"; "+trap)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the command to start", func() bool { return exists(m) })
	signalProcess(t, cmd, syscall.SIGTERM)
	_ = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 143 {
		t.Errorf("SIGTERM trapped by the command: exit %d, want 143", code)
	}
	if rec, ok := getRecord(t, "web-2"); !ok || rec.State != "interrupted" {
		t.Errorf("after a trapped SIGTERM: %+v (present %v), want held, interrupted", rec, ok)
	}
	testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))
}
