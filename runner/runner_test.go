package runner_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/runner"
)

func sh(script string) runner.Command {
	return runner.Command{Path: "/bin/sh", Args: []string{"-c", script}}
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		name   string
		script string
		code   int
		signal syscall.Signal
	}{
		{"success", "exit 0", 0, 0},
		{"failure", "exit 3", 3, 0},
		{"chef reboot", "exit 35", 35, 0},
		{"killed", "kill -KILL $$", 128 + 9, syscall.SIGKILL},
		{"terminated", "kill -TERM $$", 128 + 15, syscall.SIGTERM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := runner.Run(context.Background(), sh(tt.script))
			if err != nil {
				t.Fatal(err)
			}
			if res.Code() != tt.code || res.Signal != tt.signal {
				t.Errorf("Code=%d Signal=%v, want %d %v", res.Code(), res.Signal, tt.code, tt.signal)
			}
			if res.Interrupted() != (tt.signal != 0) {
				t.Errorf("Interrupted=%v", res.Interrupted())
			}
		})
	}
}

func TestOutputStreams(t *testing.T) {
	var out, errb bytes.Buffer
	c := sh("echo to-out; echo to-err >&2")
	c.Stdout, c.Stderr = &out, &errb
	if _, err := runner.Run(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if out.String() != "to-out\n" || errb.String() != "to-err\n" {
		t.Errorf("stdout %q stderr %q", out.String(), errb.String())
	}
}

func TestStartFailure(t *testing.T) {
	_, err := runner.Run(context.Background(), runner.Command{Path: "/nonexistent/chef-client"})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/chef-client") {
		t.Errorf("err = %v, want one naming the command", err)
	}
}

func TestTimeoutTermThenKill(t *testing.T) {
	dir := t.TempDir()
	// The command ignores TERM, so only KILL ends it; a child in its process group must die too.
	c := sh(`trap "" TERM; sleep 30 & echo $! > ` + dir + `/child; wait; wait`)
	c.Timeout = 300 * time.Millisecond
	c.KillGrace = 300 * time.Millisecond
	start := time.Now()
	res, err := runner.Run(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if !res.TimedOut || res.Signal != syscall.SIGKILL || !res.Interrupted() {
		t.Errorf("result %+v, want timed out and killed", res)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
	assertGone(t, filepath.Join(dir, "child"))
}

func TestTimeoutTermSuffices(t *testing.T) {
	c := sh("sleep 30")
	c.Timeout = 200 * time.Millisecond
	res, err := runner.Run(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if !res.TimedOut || res.Signal != syscall.SIGTERM || res.Code() != 143 {
		t.Errorf("result %+v", res)
	}
}

func TestForwardsSignalsToGroup(t *testing.T) {
	dir := t.TempDir()
	sigs := make(chan os.Signal, 1)
	c := sh(`trap 'echo got-term > ` + dir + `/trapped; exit 7' TERM; sleep 30 & echo $! > ` + dir + `/child; wait`)
	c.Signals = sigs
	started := make(chan int, 1)
	c.Started = func(pid int) { started <- pid }
	// The signaller reports through t, so the test waits for it (ended: Run returned, so
	// that one whose command never started does not wait for it).
	ended, signalled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(signalled)
		select {
		case <-started:
		case <-ended:
			return
		}
		waitFile(t, filepath.Join(dir, "child"))
		// Only once the child runs sleep: between its fork and its exec, the shell's child
		// still has the trap's handler, and a SIGTERM then is caught and lost.
		waitExec(t, filepath.Join(dir, "child"), "sleep")
		sigs <- syscall.SIGTERM
	}()
	res, err := runner.Run(context.Background(), c)
	close(ended)
	<-signalled
	if err != nil {
		t.Fatal(err)
	}
	if res.Forwarded != syscall.SIGTERM || res.ExitCode != 7 || !res.Interrupted() {
		t.Errorf("result %+v, want exit 7 after a forwarded SIGTERM", res)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "trapped")); string(b) != "got-term\n" {
		t.Errorf("the command did not see SIGTERM: %q", b)
	}
	assertGone(t, filepath.Join(dir, "child"))
}

func TestContextCancelStops(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	res, err := runner.Run(ctx, sh("sleep 30"))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Interrupted() || res.Signal != syscall.SIGTERM {
		t.Errorf("result %+v", res)
	}
}

// waitFile waits until path has content. It runs beside the test, so it reports with Errorf.
func waitFile(t *testing.T, path string) {
	if !testkit.Poll(testkit.Wait, func() bool { b, err := os.ReadFile(path); return err == nil && len(b) > 0 }) {
		t.Errorf("%s never appeared", path)
	}
}

// waitExec waits until the process whose pid is in file runs the program name. It runs beside
// the test, so it reports with Errorf.
func waitExec(t *testing.T, file, name string) {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Error(err)
		return
	}
	pid := strings.TrimSpace(string(b))
	if !testkit.Poll(testkit.Wait, func() bool {
		comm, err := os.ReadFile("/proc/" + pid + "/comm")
		return err == nil && strings.TrimSpace(string(comm)) == name
	}) {
		t.Errorf("process %s never ran %s", pid, name)
	}
}

// assertGone checks that the pid in file is no longer running, within 2s: the child is a
// `sleep 30`, so a longer wait would see it end by itself.
func assertGone(t *testing.T, file string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &pid); err != nil {
		t.Fatal(err)
	}
	if !testkit.Poll(2*time.Second, func() bool { return syscall.Kill(pid, 0) != nil || zombie(pid) }) {
		t.Errorf("child %d of the command survived", pid)
	}
}

// zombie reports whether pid has died but not been reaped: once its parent (the command's
// shell) has exited, it belongs to init, which in a container may never reap it.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] == 'Z'
	}
	return false
}
