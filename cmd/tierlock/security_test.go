package main_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/tierlock/tierlock/internal/faultproxy"
	"github.com/tierlock/tierlock/internal/testdeps"
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
	proxy := faultproxy.New(agent.Addr)
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
	proxy := faultproxy.New(agent.Addr)
	defer proxy.Close()
	touch := marker(t, "ran")
	setup := "export CONSUL_HTTP_ADDR=" + proxy.Addr + " TIERLOCK_PREFIX=" + prefix(t) + " TIERLOCK_CONFIG=" + os.DevNull +
		" TIERLOCK_STATE_DIR=" + stateDir(t) + "; source <(tierlock completion bash)"
	cases := []struct{ line, want string }{
		{"tierlock run --tier t/tab -- sh -c 'touch " + touch + "' ", ""},
		{"tierlock run --tier t/tab -- sh -c 'touch " + touch + "' --ti", ""},
		{"tierlock run --tier t/tab -- touch " + touch + " ", ""},
		{"tierlock status --tier t/tab -- sh -c 'touch " + touch + "' ", ""},
		{"tierlock reap --holder h -- sh -c 'touch " + touch + "' ", ""},
		{"tierlock run --tier t/tab --comm", "--command"},
	}
	var lines []string
	for _, c := range cases {
		lines = append(lines, c.line)
	}
	got := bashCompletions(t, setup, lines...)
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
	cmd := cli(t, agent.Addr, append(append([]string{"run", "--tier", tier}, args...), "--", "sh", "-c", "env")...)
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
	extra := []string{"CONSUL_HTTP_TOKEN=secret-token", "CONSUL_HTTP_TOKEN_FILE=" + tokenFile, "KEEP_ME=1",
		"CONSUL_HTTP_SSL_VERIFY=false", "CONSUL_HTTP_TOKEN_X=kept"}
	env := envLines(t, extra)
	for _, name := range []string{"CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE"} {
		if v, ok := env[name]; ok {
			t.Errorf("the command's environment has %s=%s", name, v)
		}
	}
	// Everything else tierlock had, the command has.
	cmd := cli(t, agent.Addr, "run")
	for _, kv := range append(cmd.Env, extra...) {
		name, value, _ := strings.Cut(kv, "=")
		if name == "CONSUL_HTTP_TOKEN" || name == "CONSUL_HTTP_TOKEN_FILE" || strings.ContainsAny(value, "\n") {
			continue
		}
		if got, ok := env[name]; !ok || got != value {
			t.Errorf("the command's environment lost %s=%q (got %q)", name, value, got)
		}
	}
	checkInvariant(t)

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
			if env["CONSUL_HTTP_TOKEN"] != "secret-token" || env["CONSUL_HTTP_TOKEN_FILE"] != tokenFile {
				t.Errorf("--pass-consul-token: the command's environment has CONSUL_HTTP_TOKEN=%q CONSUL_HTTP_TOKEN_FILE=%q",
					env["CONSUL_HTTP_TOKEN"], env["CONSUL_HTTP_TOKEN_FILE"])
			}
		})
	}
}
