package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// End to end: the settings file gives run its tier and Consul's address, as on a packaged host
// where a person types `sudo tierlock run`; flags and the environment override it.
func TestRunReadsTheSettingsFile(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "tierlock")
	m := marker(t, "from-the-file")
	if err := os.WriteFile(conf, []byte("# the host's settings\nTIERLOCK_TIER="+tier+"\nTIERLOCK_HOLDER=web-9\n"+
		"TIERLOCK_COMMAND=\"touch "+m+"\"\nCONSUL_HTTP_ADDR=127.0.0.1:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
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

	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("TIERLOCK_TIER=prod/web\nTIERLOCK_COMMAND=chef-client --once\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = run(t, cli(t, agentAddr(t), "run", "--config", bad))
	wantCode(t, r, 78)
	if !strings.Contains(r.stderr, bad+":2: TIERLOCK_COMMAND") {
		t.Errorf("a bad line must be named: %s", r.stderr)
	}
	r = run(t, cli(t, agentAddr(t), "status", "--config", filepath.Join(dir, "missing")))
	wantCode(t, r, 78)
	if !strings.Contains(r.stderr, "missing") {
		t.Errorf("a missing named file must be named: %s", r.stderr)
	}
	checkInvariant(t)
}
