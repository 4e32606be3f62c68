package main_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/testkit"
)

// settingsFile writes a settings file as configuration management leaves it: 0644, owned by
// whoever runs the test (root in CI).
func settingsFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tierlock")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// End to end: the settings file gives run its tier and Consul's address, as on a packaged host
// where a person types `sudo tierlock run`; flags and the environment override it.
func TestRunReadsTheSettingsFile(t *testing.T) {
	m := marker(t, "from-the-file")
	// The command unquoted, as systemd takes it: the rest of the line.
	conf := settingsFile(t, "# the host's settings\nTIERLOCK_TIER="+tier+"\nTIERLOCK_HOLDER=web-9\n"+
		"TIERLOCK_COMMAND=touch "+m+"  \nCONSUL_HTTP_ADDR=127.0.0.1:1\n")
	// CONSUL_HTTP_ADDR from cli() (the environment) wins over the file's unreachable one.
	cmd := cli(t, agentAddr(t), "run", "--config", conf)
	r := run(t, cmd)
	wantCode(t, r, 0)
	if !exists(m) {
		t.Fatalf("the file's TIERLOCK_COMMAND did not run: %s", r.stderr)
	}
	if !strings.Contains(r.stderr, "web-9") {
		t.Errorf("the file's holder is not in the log: %s", r.stderr)
	}
	// A flag wins over the file.
	cmd = cli(t, agentAddr(t), "run", "--config", conf, "--holder", "web-8", "--dry-run")
	if r := run(t, cmd); !strings.Contains(r.stderr+r.stdout, "web-8") {
		t.Errorf("--holder did not win over the file: %s%s", r.stdout, r.stderr)
	}

	bad := settingsFile(t, "TIERLOCK_TIER=prod/web\nRUBYOPT=-r/tmp/evil.rb\n")
	r = run(t, cli(t, agentAddr(t), "run", "--config", bad))
	wantCode(t, r, 78)
	if !strings.Contains(r.stderr, bad+":2: RUBYOPT: only TIERLOCK_ and CONSUL_ names") {
		t.Errorf("a foreign name must be named with its line: %s", r.stderr)
	}
	r = run(t, cli(t, agentAddr(t), "status", "--config", filepath.Join(t.TempDir(), "missing")))
	wantCode(t, r, 78)
	if !strings.Contains(r.stderr, "missing") {
		t.Errorf("a missing named file must be named: %s", r.stderr)
	}
	testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))
}

// --config is tierlock's only before the command: `tierlock run chef-client --config client.rb`
// hands chef its own file and reads none of it.
func TestRunLeavesTheCommandsConfig(t *testing.T) {
	m := marker(t, "ran")
	conf := settingsFile(t, "TIERLOCK_TIER="+tier+"\nTIERLOCK_HOLDER=web-1\n")
	clientRB := filepath.Join(t.TempDir(), "client.rb")
	if err := os.WriteFile(clientRB, []byte("log_level :info\nchef_server_url \"https://chef\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := tl(t, "run", "--config", conf, "sh", "-c", `touch "$1"; test "$2" = --config`, "sh", m, "--config", clientRB)
	wantCode(t, r, 0)
	if !exists(m) {
		t.Errorf("the command did not run: %s", r.stderr)
	}
	testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))
}

// A bad line is named by file, line and name; its value, a token here, is never printed.
func TestSettingsFileNeverPrintsAValue(t *testing.T) {
	const token = "3f9c2b7e-81d4-4a6f-b0e5-7c1d9a24e6f8"
	for _, text := range []string{
		"CONSUL_HTTP_TOKEN " + token + "\n",
		"TIERLOCK_TIER=prod/web\nCONSUL_TOKEN_X=1\nHTTP_TOKEN=" + token + "\n",
		"export CONSUL_HTTP_TOKEN=" + token + "\n",
		"CONSUL_HTTP_TOKEN=\"" + token + "\xff\"\n",
	} {
		conf := settingsFile(t, text)
		r := tl(t, "status", "--config", conf)
		wantCode(t, r, 78)
		if !strings.Contains(r.stderr, conf+":") {
			t.Errorf("%q: the file and line are not named: %s", text, r.stderr)
		}
		if strings.Contains(r.stderr+r.stdout, token[:8]) {
			t.Errorf("%q: the value is printed: %s", text, r.stderr)
		}
	}
}

// Only a small regular file is read: a device, a FIFO, a directory or a big file is refused
// at once, naming it.
func TestSettingsFileMustBeASmallRegularFile(t *testing.T) {
	bin(t) // built before any clock starts
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, []byte("# "+strings.Repeat("x", 65<<10)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{"/dev/zero", "settings file /dev/zero: a character device, not a regular file"},
		{fifo, "settings file " + fifo + ": a FIFO, not a regular file"},
		{dir, "settings file " + dir + ": a directory, not a regular file"},
		{big, "settings file " + big + ": 66563 bytes, over the 65536 a settings file may have"},
	} {
		start := time.Now()
		r := tl(t, "status", "--config", tc.path)
		took := time.Since(start)
		wantCode(t, r, 78)
		if !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: %s", tc.path, r.stderr)
		}
		t.Logf("%s refused in %s", tc.path, took.Round(time.Millisecond))
		if took > 5*time.Second {
			t.Errorf("%s: refused only after %s", tc.path, took)
		}
	}
	// TIERLOCK_CONFIG=/dev/null names no file: how tests and tools run tierlock (cli does).
	wantCode(t, tl(t, "status"), 0)
}

// As root, the settings file must be root's and writable by root alone: what it says runs as
// root. A symlink to such a file is followed, as systemd follows it.
func TestSettingsFileOwnerAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("as root only (CI runs the tests as root)")
	}
	good := settingsFile(t, "TIERLOCK_TIER="+tier+"\n")
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	wantCode(t, tl(t, "status", "--config", link), 0)

	theirs := settingsFile(t, "TIERLOCK_TIER="+tier+"\n")
	if err := os.Chown(theirs, 65534, 0); err != nil {
		t.Fatal(err)
	}
	groupW := settingsFile(t, "TIERLOCK_TIER="+tier+"\n")
	if err := os.Chmod(groupW, 0o664); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		theirs: "settings file " + theirs + ": owned by uid 65534 with mode 0644",
		groupW: "settings file " + groupW + ": owned by uid 0 with mode 0664",
	} {
		m := marker(t, "ran")
		r := tl(t, "run", "--config", path, "--", "touch", m)
		wantCode(t, r, 78)
		if !strings.Contains(r.stderr, want) {
			t.Errorf("%s: %s", path, r.stderr)
		}
		if exists(m) {
			t.Errorf("%s: the command ran", path)
		}
	}
}

// status, check and reap cover every tier unless --tier is on their own command line, even on
// a host whose settings file (or environment) names its own tier: a check that read
// TIERLOCK_TIER said OK for one tier while another was critical.
func TestFleetCommandsIgnoreTheHostsTier(t *testing.T) {
	wantCode(t, tl(t, "run", "--tier", "t5/web", "--holder", "web-1", "--", "true"), 0)
	failedSlot(t) // prod/web: web-3 failed
	conf := settingsFile(t, "TIERLOCK_TIER=t5/web\n")
	withEnv := func(cmd *exec.Cmd) *exec.Cmd { cmd.Env = append(cmd.Env, "TIERLOCK_TIER=t5/web"); return cmd }
	for name, cmd := range map[string]func(args ...string) *exec.Cmd{
		"settings file": func(args ...string) *exec.Cmd {
			return cli(t, agentAddr(t), append(args, "--config", conf)...)
		},
		"environment": func(args ...string) *exec.Cmd { return withEnv(cli(t, agentAddr(t), args...)) },
	} {
		r := run(t, cmd("check", "-c", "0"))
		if r.code != 2 || !strings.HasPrefix(r.stdout, "TIERLOCK CRITICAL - 2 tiers") || !strings.Contains(r.stdout, "prod/web CRITICAL") {
			t.Errorf("%s: check: exit %d\n%s", name, r.code, r.stdout)
		}
		r = run(t, cmd("status"))
		if r.code != 0 || !strings.Contains(r.stdout, "prod/web") || !strings.Contains(r.stdout, "t5/web") {
			t.Errorf("%s: status: exit %d\n%s", name, r.code, r.stdout)
		}
		// --tier on the command line still narrows it.
		r = run(t, cmd("check", "-c", "0", "--tier", "t5/web"))
		if r.code != 0 || !strings.HasPrefix(r.stdout, "TIERLOCK OK - 1 tiers") {
			t.Errorf("%s: check --tier: exit %d\n%s", name, r.code, r.stdout)
		}
	}
	// reap has no --tier: web-3's slot in prod/web goes though the file names t5/web.
	r := run(t, cli(t, agentAddr(t), "reap", "--holder", "web-3", "--config", conf))
	wantCode(t, r, 0)
	if !strings.Contains(r.stdout, "prod/web") {
		t.Errorf("reap: %s", r.stdout)
	}
	r = tl(t, "check")
	wantCode(t, r, 0)
}
