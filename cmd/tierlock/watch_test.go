package main_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/internal/testkit/testdeps"
)

// status --watch in a real terminal (tmux), while a wave of runs goes through the tier: the
// view shows the slots and the queue as they change, and Ctrl-C ends it cleanly.
func TestStatusWatchInTerminal(t *testing.T) {
	testdeps.Tool(t, "tmux", "tmux")
	put(t, "max_concurrent", "2")
	sock := filepath.Join(t.TempDir(), "tmux.sock")
	tmux := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("tmux", append([]string{"-S", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	// The pane runs the real binary with the test's environment, as a person would type it; the
	// shell around it survives Ctrl-C to write down its exit code.
	cmd := cli(t, agentAddr(t), "status", "--tier", tier, "--watch")
	var envs []string
	for _, kv := range cmd.Env {
		if strings.HasPrefix(kv, "CONSUL_") || strings.HasPrefix(kv, "TIERLOCK_") || strings.HasPrefix(kv, "PATH=") {
			envs = append(envs, "'"+kv+"'")
		}
	}
	exitFile := filepath.Join(t.TempDir(), "exit")
	line := fmt.Sprintf("trap true INT; env -i %s %s %s; echo $? > %s; sleep 60", strings.Join(envs, " "), bin(t), strings.Join(cmd.Args[1:], " "), exitFile)
	tmux("new-session", "-d", "-x", "100", "-y", "30", "sh", "-c", line)
	t.Cleanup(func() { _ = exec.Command("tmux", "-S", sock, "kill-server").Run() })
	pane := func() string { return tmux("capture-pane", "-p") }
	// Under the watch's 30s blocking query: what the pane shows came from a change, not from
	// the query's timeout.
	waitPane := func(what string, ok func(string) bool) string {
		t.Helper()
		var p string
		if !testkit.Poll(20*time.Second, func() bool { p = pane(); return ok(p) }) {
			t.Fatalf("the pane never showed %s:\n%s", what, p)
		}
		return p
	}
	waitPane("the header", func(p string) bool { return strings.Contains(p, "status --watch") && strings.Contains(p, "TIER") })

	// A wave: four hosts, two slots, each run holding its slot until its release file appears.
	gate := t.TempDir()
	var wg sync.WaitGroup
	// Should the test fail before it opens the gate, the runs still end, before the gate goes.
	t.Cleanup(func() {
		_ = os.WriteFile(filepath.Join(gate, "go"), nil, 0o644)
		wg.Wait()
	})
	for i := 1; i <= 4; i++ {
		host := fmt.Sprintf("web-%d", i)
		c := cli(t, agentAddr(t), "run", "--tier", tier, "--holder", host, "--state-dir", t.TempDir(), "--",
			"sh", "-c", fmt.Sprintf("while [ ! -e %s/go ]; do sleep 0.05; done", gate))
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out bytes.Buffer
			c.Stdout, c.Stderr = &out, &out
			if err := c.Run(); err != nil {
				t.Errorf("%s: %v\n%s", host, err, out.String())
			}
		}()
		// Arrival order web-1..web-4: the next host starts once this one holds a slot or waits.
		testkit.Eventually(t, host+" in the tier", func() bool {
			for _, dir := range []string{"running/", "queue/"} {
				if p, _, _ := agents.Client(t).KV().Get(testkit.Prefix(t)+"/"+tier+"/"+dir+host, nil); p != nil {
					return true
				}
			}
			return false
		})
	}
	mid := waitPane("two running and two waiting", func(p string) bool {
		return strings.Count(p, "running") == 2 && strings.Contains(p, "2 waiting")
	})
	t.Logf("mid-rollout:\n%s", mid)
	if err := os.WriteFile(filepath.Join(gate, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	waitPane("the tier empty again", func(p string) bool {
		return !strings.Contains(p, "running") && !strings.Contains(p, "waiting") && strings.Contains(p, tier)
	})
	if _, err := os.Stat(exitFile); err == nil {
		t.Fatalf("status --watch ended by itself:\n%s", pane())
	}

	tmux("send-keys", "C-c")
	var exit []byte
	if !testkit.Poll(10*time.Second, func() bool { b, err := os.ReadFile(exitFile); exit = b; return err == nil }) {
		t.Fatalf("status --watch did not stop on Ctrl-C:\n%s", pane())
	}
	if code := strings.TrimSpace(string(exit)); code != "0" {
		t.Errorf("status --watch exited %s after Ctrl-C, want 0", code)
	}
	testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))
}

// Not on a terminal, each view is appended under its own time line, with no escapes; SIGINT
// ends the watch with exit 0.
func TestStatusWatchAppendsWhenPiped(t *testing.T) {
	put(t, "max_concurrent", "1")
	cmd := cli(t, agentAddr(t), "status", "--tier", tier, "--watch")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Under the watch's 30s blocking query, as in the pane's test.
	views := func(n int) {
		t.Helper()
		if !testkit.Poll(15*time.Second, func() bool { return strings.Count(out.String(), "--- ") >= n }) {
			t.Fatalf("want %d views, have:\n%s", n, out.String())
		}
	}
	views(1)
	put(t, "max_concurrent", "3") // a change: one more view, without polling
	views(2)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGINT: %v\n%s", err, out.String())
	}
	if strings.Contains(out.String(), "\x1b") {
		t.Errorf("escape sequences in piped output:\n%q", out.String())
	}
	if r := tl(t, "status", "--tier", tier, "--watch", "--format", "json"); r.code != 78 || !strings.Contains(r.stderr, "json") {
		t.Errorf("--watch --format json: exit %d, %s", r.code, r.stderr)
	}
}
