package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/internal/testkit/faultproxy"
	"github.com/tierlock/tierlock/internal/testkit/testdeps"
)

// completionLines are requests as the completion scripts make them, for every command: with
// and without "--" on the line, with the arguments a user would have typed so far. touch is
// the command that must never run.
func completionLines(touch string) [][]string {
	sh := []string{"--", "sh", "-c", "touch " + touch}
	var lines [][]string
	for _, cmd := range []string{"run", "status", "set-max", "disable", "enable", "release", "repair",
		"check", "reap", "version", "completion", "man", "help"} {
		lines = append(lines,
			[]string{cmd},
			[]string{cmd, "--tier", "t/tab"},
			append([]string{cmd, "--tier", "t/tab", "--holder", "h"}, sh...),
			append([]string{cmd, "--tier", "t/tab"}, sh...),
			[]string{cmd, "--tier", "t/tab", "--", "-1"},
			[]string{cmd, "--tier", "t/tab", "5", "--ti"},
		)
	}
	return append(lines,
		[]string{"run", "--tier", "t/tab", "--command", "sh -c 'touch " + touch + "'"},
		[]string{"run", "--tier", "t/tab", "--dry-run=false", "--", "touch", touch},
		[]string{"reap", "--holder", "h", "--"},
		append([]string{"--"}, sh...),
	)
}

// TAB never runs anything: whatever is on the line, "--" included, a completion request
// prints candidates and exits 0; the command never runs and Consul is never asked.
func TestCompletionNeverRuns(t *testing.T) {
	proxy := faultproxy.New(agentAddr(t))
	defer proxy.Close()
	touch := marker(t, "ran")
	for _, line := range completionLines(touch) {
		r := run(t, cli(t, proxy.Addr, append(line, "--generate-bash-completion")...))
		if r.code != 0 {
			t.Errorf("tierlock %s --generate-bash-completion: exit %d\n%s", strings.Join(line, " "), r.code, r.stderr)
		}
		if exists(touch) {
			t.Fatalf("tierlock %s --generate-bash-completion ran the command", strings.Join(line, " "))
		}
		if n := proxy.Requests(); n > 0 {
			t.Fatalf("tierlock %s --generate-bash-completion made %d requests to Consul", strings.Join(line, " "), n)
		}
	}
	if d := dump(t); d != "" {
		t.Errorf("completion wrote keys:\n%s", d)
	}
	// What is before "--" still completes.
	r := run(t, cli(t, proxy.Addr, "run", "--ti", "--generate-bash-completion"))
	if got := strings.Fields(r.stdout); !slices.Contains(got, "--tier") || !slices.Contains(got, "--timeout") {
		t.Errorf("run --ti completes to %q, want --tier and --timeout among them", got)
	}
}

// The same through real bash completion, where the script evaluates the line typed so far:
// `sh -c 'touch x'` reaches tierlock as a real command line.
func TestCompletionBashNeverRuns(t *testing.T) {
	testdeps.File(t, "/usr/share/bash-completion/bash_completion", "bash-completion")
	proxy := faultproxy.New(agentAddr(t))
	defer proxy.Close()
	touch := marker(t, "ran")
	setup := "export CONSUL_HTTP_ADDR=" + proxy.Addr + " TIERLOCK_PREFIX=" + testkit.Prefix(t) + " TIERLOCK_CONFIG=" + os.DevNull +
		" TIERLOCK_STATE_DIR=" + stateDir(t) + "; source <(tierlock completion bash)"
	cases := []struct{ line, want string }{
		{"tierlock run --tier t/tab -- sh -c 'touch " + touch + "' ", ""},
		{"tierlock run --tier t/tab -- sh -c 'touch " + touch + "' --ti", ""},
		{"tierlock run --tier t/tab -- touch " + touch + " ", ""},
		{"tierlock status --tier t/tab -- sh -c 'touch " + touch + "' ", ""},
		{"tierlock reap --holder h -- sh -c 'touch " + touch + "' ", ""},
		{"tierlock run --tier t/tab --comm", "--command"},
		// urfave's script evaluated the line: TAB ran $(...) in bash itself.
		{"tierlock run --tier $(touch " + touch + ") -- sh ", ""},
		{"tierlock status --tier $(touch " + touch + ") --form", "--format"},
		{"tierlock run --tier t/tab `touch " + touch + "` --comm", "--command"},
	}
	var lines []string
	for _, c := range cases {
		lines = append(lines, c.line)
	}
	// "run --<TAB>" lists the long flags; "run -- <TAB>" offers nothing (bash completes files).
	lines = append(lines, "tierlock run --")
	got := bashCompletions(t, setup, lines...)
	if flags := strings.Fields(at(got, len(cases))); !slices.Contains(flags, "--tier") || !slices.Contains(flags, "--pass-consul-token") {
		t.Errorf("%q completes to %q, want every long flag", "tierlock run --", flags)
	}
	for i, c := range cases {
		if at(got, i) != c.want {
			t.Errorf("%q completes to %q, want %q", c.line, at(got, i), c.want)
		}
	}
	if exists(touch) {
		t.Fatal("TAB ran the command")
	}
	if n := proxy.Requests(); n > 0 {
		t.Errorf("TAB made %d requests to Consul", n)
	}
	if d := dump(t); d != "" {
		t.Errorf("TAB wrote keys:\n%s", d)
	}
}

// envLines runs `tierlock run -- sh -c env` with extra environment and returns the command's
// environment.
func envLines(t *testing.T, extra []string, args ...string) map[string]string {
	t.Helper()
	cmd := cli(t, agentAddr(t), append(append([]string{"run", "--tier", tier}, args...), "--", "sh", "-c", "env")...)
	cmd.Env = append(cmd.Env, extra...)
	r := run(t, cmd)
	wantCode(t, r, 0)
	got := map[string]string{}
	for _, line := range strings.Split(r.stdout, "\n") {
		if name, value, ok := strings.Cut(line, "="); ok {
			got[name] = value
		}
	}
	return got
}

// The command's environment is tierlock's without the Consul token: chef-client, its recipes
// and the daemons they start never see it. Nothing else is removed. --pass-consul-token (or
// TIERLOCK_PASS_CONSUL_TOKEN) keeps it.
func TestRunCommandEnvironmentHasNoToken(t *testing.T) {
	// The agent runs without ACLs, so any token is accepted: what matters is where it goes.
	tokenFile := marker(t, "token")
	if err := os.WriteFile(tokenFile, []byte("secret-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	extra := []string{"CONSUL_HTTP_TOKEN=secret-token", "CONSUL_HTTP_TOKEN_FILE=" + tokenFile, "CONSUL_HTTP_AUTH=ops:hunter2", "KEEP_ME=1",
		"CONSUL_HTTP_SSL_VERIFY=false", "CONSUL_HTTP_TOKEN_X=kept"}
	env := envLines(t, extra)
	credentials := []string{"CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_AUTH"}
	for _, name := range credentials {
		if v, ok := env[name]; ok {
			t.Errorf("the command's environment has %s=%s", name, v)
		}
	}
	// Everything else tierlock had, the command has.
	cmd := cli(t, agentAddr(t), "run")
	for _, kv := range append(cmd.Env, extra...) {
		name, value, _ := strings.Cut(kv, "=")
		if slices.Contains(credentials, name) || strings.ContainsAny(value, "\n") {
			continue
		}
		if got, ok := env[name]; !ok || got != value {
			t.Errorf("the command's environment lost %s=%q (got %q)", name, value, got)
		}
	}
	testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))

	for name, args := range map[string][]string{
		"flag": {"--pass-consul-token"},
		"env":  nil,
	} {
		t.Run(name, func(t *testing.T) {
			more := extra
			if args == nil {
				more = append(slices.Clone(extra), "TIERLOCK_PASS_CONSUL_TOKEN=true")
			}
			env := envLines(t, more, args...)
			if env["CONSUL_HTTP_TOKEN"] != "secret-token" || env["CONSUL_HTTP_TOKEN_FILE"] != tokenFile || env["CONSUL_HTTP_AUTH"] != "ops:hunter2" {
				t.Errorf("--pass-consul-token: the command's environment has CONSUL_HTTP_TOKEN=%q CONSUL_HTTP_TOKEN_FILE=%q CONSUL_HTTP_AUTH=%q",
					env["CONSUL_HTTP_TOKEN"], env["CONSUL_HTTP_TOKEN_FILE"], env["CONSUL_HTTP_AUTH"])
			}
		})
	}
}

// noControl fails the test if out holds a control character other than the newlines between
// lines: no stored string may reach the terminal as an escape.
func noControl(t *testing.T, what, out string) {
	t.Helper()
	for i, r := range out {
		if (r < 0x20 && r != '\n') || r == 0x7f || (r >= 0x80 && r <= 0x9f) {
			t.Errorf("%s: raw %U at byte %d:\n%s", what, r, i, out)
			return
		}
	}
}

// Hostile keys and values written straight into Consul (terminal escapes, colour codes,
// newlines, fake perfdata) are printed escaped by status, check, reap, repair and run.
func TestHostileStoredStrings(t *testing.T) {
	const (
		title  = "\x1b]0;owned\x07"
		colour = "\x1b[31mred\x1b[0m"
		perf   = "x\n| evil=1;2;3"
	)
	base := testkit.Prefix(t) + "/" + tier + "/"
	rec := map[string]any{"holder": "web-1", "hostname": "h" + perf, "instance_id": "i-" + title, "node": "n" + colour,
		"pid": 1, "state": "failed", "started_at": time.Now().Add(-time.Minute).UTC().Format(time.RFC3339),
		"updated_at": time.Now().UTC().Format(time.RFC3339), "exit_code": 1, "attempts": 1, "command": "chef-client" + title,
		"run_id": "r" + colour, "version": "v"}
	value, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	// Consul's KV endpoint refuses control characters in a key's path; its transaction
	// endpoint, which anyone with key:write may use, stores them.
	ops := api.TxnOps{}
	for key, value := range map[string]string{
		base + "current":                                "2",
		base + "running/web-1":                          string(value),
		base + "running/bad" + colour:                   "x",
		base + "queue/q" + title + " " + perf:           `{"holder":"q"}`,
		testkit.Prefix(t) + "/prod/evil/max_concurrent": "1" + colour + perf,
	} {
		ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVSet, Key: key, Value: []byte(value)}})
	}
	if ok, resp, _, err := agents.Client(t).Txn().Txn(ops, nil); err != nil || !ok {
		t.Fatalf("txn: %v %+v", err, resp)
	}

	r := tl(t, "status")
	wantCode(t, r, 0)
	noControl(t, "status", r.stdout+r.stderr)
	t.Logf("status:\n%s", r.stdout)
	for _, want := range []string{`i-\x1b]0;owned\x07`, `bad\x1b[31mred\x1b[0m`, `q\x1b]0;owned\x07 x\x0a| evil=1;2;3`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status does not show %s:\n%s", want, r.stdout)
		}
	}

	r = tl(t, "status", "--format", "json")
	wantCode(t, r, 0)
	noControl(t, "status --format json", r.stdout+r.stderr)
	var doc struct {
		Tiers []struct {
			Tier     string   `json:"tier"`
			Problems []string `json:"problems"`
			Holders  []record `json:"holders"`
		} `json:"tiers"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("status --format json is not JSON: %v\n%s", err, r.stdout)
	}
	found := false
	for _, tr := range doc.Tiers {
		for _, h := range tr.Holders {
			if h.Holder == "web-1" {
				found = h.InstanceID == "i-"+title && h.Node == "n"+colour && h.RunID == "r"+colour && h.Command == "chef-client"+title
			}
		}
	}
	if !found {
		t.Errorf("status --format json does not carry web-1's stored strings as they are:\n%s", r.stdout)
	}

	r = tl(t, "check")
	wantCode(t, r, 2)
	noControl(t, "check", r.stdout+r.stderr)
	t.Logf("check:\n%s", r.stdout)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if strings.Count(lines[0], "|") != 1 {
		t.Errorf("check's status line has %d '|':\n%s", strings.Count(lines[0], "|"), r.stdout)
	}
	for _, l := range lines[1:] {
		if strings.Contains(l, "|") {
			t.Errorf("check's long text carries a '|' (perfdata to Nagios): %q", l)
		}
	}
	if strings.Contains(r.stdout, "evil=") && !strings.Contains(r.stdout, `\x7c evil=1;2;3`) {
		t.Errorf("check shows the fake perfdata unescaped:\n%s", r.stdout)
	}
	if len(lines) != 3 { // the status line, prod/evil, prod/web
		t.Errorf("check printed %d lines, want 3 (a stored newline made one?):\n%s", len(lines), r.stdout)
	}

	r = tl(t, "repair", "--tier", tier)
	noControl(t, "repair", r.stdout+r.stderr)
	r = tl(t, "run", "--tier", tier, "--", "true")
	wantCode(t, r, 78)
	noControl(t, "run", r.stdout+r.stderr)
	r = tl(t, "run", "--tier", tier, "--log-format", "json", "--", "true")
	noControl(t, "run --log-format json", r.stdout+r.stderr)

	for _, args := range [][]string{{"reap", "--holder", "web-1", "--dry-run"}, {"reap", "--holder", "web-1"}} {
		r = tl(t, args...)
		wantCode(t, r, 0)
		noControl(t, strings.Join(args, " "), r.stdout+r.stderr)
		if !strings.Contains(r.stdout, `instance i-\x1b]0;owned\x07`) || !strings.Contains(r.stdout, `node n\x1b[31mred\x1b[0m`) {
			t.Errorf("%s does not show the record escaped:\n%s", strings.Join(args, " "), r.stdout)
		}
	}
}

// A state dir others can write, or a link, is refused before anything else: exit 78 naming
// the directory and its mode, nothing ran, nothing written.
func TestRunRefusesUnsafeStateDir(t *testing.T) {
	open := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(stateDir(t), link); err != nil {
		t.Fatal(err)
	}
	touch := marker(t, "ran")
	for dir, want := range map[string]string{open: "--state-dir " + open + " has mode 0777", link: "--state-dir " + link + " is a symlink"} {
		r := tl(t, "run", "--tier", tier, "--state-dir", dir, "--", "touch", touch)
		wantCode(t, r, 78)
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not say %q:\n%s", want, r.stderr)
		}
	}
	if exists(touch) {
		t.Error("the command ran")
	}
	if d := dump(t); d != "" {
		t.Errorf("keys written:\n%s", d)
	}
}

// A link planted at the lock's name or at --metrics-file points at a victim: the victim is
// neither written nor chmodded.
func TestRunMetricsFileNeverFollowsLinks(t *testing.T) {
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("untouched"), 0o600); err != nil {
		t.Fatal(err)
	}
	untouched := func() {
		t.Helper()
		b, err := os.ReadFile(victim)
		fi, _ := os.Stat(victim)
		if err != nil || string(b) != "untouched" || fi.Mode().Perm() != 0o600 {
			t.Fatalf("the victim changed: %q, mode %v", b, fi.Mode())
		}
	}
	textfiles := t.TempDir()
	metrics := filepath.Join(textfiles, "tierlock.prom")
	if err := os.Symlink(victim, metrics); err != nil {
		t.Fatal(err)
	}
	// The old fixed temporary names, in case.
	for _, name := range []string{"tierlock.prom.tmp", ".tierlock.prom.tmp"} {
		if err := os.Symlink(victim, filepath.Join(textfiles, name)); err != nil {
			t.Fatal(err)
		}
	}
	r := tl(t, "run", "--tier", tier, "--metrics-file", metrics, "--", "true")
	wantCode(t, r, 0)
	untouched()
	fi, err := os.Lstat(metrics)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
		t.Fatalf("%s: %v %v, want a regular file of mode 0644", metrics, fi.Mode(), err)
	}
	if b, _ := os.ReadFile(metrics); !strings.Contains(string(b), `tierlock_run_last_result{result="success",tier="prod/web"} 1`) {
		t.Errorf("%s:\n%s", metrics, b)
	}
	if entries, _ := os.ReadDir(textfiles); len(entries) != 3 {
		t.Errorf("left in the textfile directory: %v", entries)
	}

	// The lock file.
	env := filepath.Join(stateDir(t), "tier=prod")
	if err := os.Remove(filepath.Join(env, "web.lock")); err != nil { // the first run's
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(env, "web.lock")); err != nil {
		t.Fatal(err)
	}
	touch := marker(t, "ran")
	r = tl(t, "run", "--tier", tier, "--", "touch", touch)
	wantCode(t, r, 78)
	if !strings.Contains(r.stderr, "web.lock is a symlink") {
		t.Errorf("stderr does not name the link:\n%s", r.stderr)
	}
	untouched()
	if exists(touch) {
		t.Error("the command ran")
	}
}
