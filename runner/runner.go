// Package runner runs one command the way tierlock needs it run inside a slot: in its own
// process group, output streamed straight through, SIGINT and SIGTERM forwarded to the whole
// group, a timeout that sends SIGTERM and then SIGKILL, and an exact account of how it ended.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// DefaultKillGrace is how long a command has between SIGTERM and SIGKILL.
const DefaultKillGrace = 30 * time.Second

// Command is one command to run.
type Command struct {
	// Path is the program; Args are its arguments (without the program name).
	Path string
	Args []string
	// Env is the environment; nil inherits ours.
	Env []string
	// Stdin, Stdout and Stderr are the command's. An *os.File is handed over as is, so output
	// is not buffered by us; nil means the null device.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Timeout stops the command (SIGTERM, then SIGKILL after KillGrace). Zero: no timeout.
	Timeout time.Duration
	// KillGrace is the time between SIGTERM and SIGKILL. Default DefaultKillGrace.
	KillGrace time.Duration
	// Signals are forwarded to the command's process group as they arrive. The first one also
	// starts the KillGrace countdown to SIGKILL.
	Signals <-chan os.Signal
	// Started, if set, is called with the command's pid once it runs.
	Started func(pid int)
}

// Result is how a command ended.
type Result struct {
	ExitCode  int            // the exit status; meaningless when Signal is set
	Signal    syscall.Signal // the signal that killed the command, or 0
	TimedOut  bool           // the timeout (or the context) stopped it
	Forwarded os.Signal      // the first signal forwarded to it, or nil
	Duration  time.Duration
}

// Interrupted reports whether the command was stopped rather than finishing on its own.
func (r Result) Interrupted() bool {
	return r.Signal != 0 || r.TimedOut || r.Forwarded != nil
}

// Code is the exit code a shell would report: the exit status, or 128 + the signal number.
func (r Result) Code() int {
	if r.Signal != 0 {
		return 128 + int(r.Signal)
	}
	return r.ExitCode
}

// Run runs c and waits for it to end. Cancelling ctx stops the command like the timeout does.
// The error is only for a command that could not be started.
func Run(ctx context.Context, c Command) (Result, error) {
	cmd := exec.Command(c.Path, c.Args...)
	cmd.Env = c.Env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = c.Stdin, c.Stdout, c.Stderr
	// Its own process group: signals reach the command and everything it started, and a
	// terminal's Ctrl-C reaches it only through us, so we always know it was interrupted.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// If a grandchild keeps our output pipes open after the command exits, stop waiting.
	cmd.WaitDelay = 5 * time.Second
	grace := c.KillGrace
	if grace <= 0 {
		grace = DefaultKillGrace
	}

	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Result{}, fmt.Errorf("runner: start %s: %w", c.Path, err)
	}
	if c.Started != nil {
		c.Started(cmd.Process.Pid)
	}
	pgid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	var res Result
	var timeout, kill <-chan time.Time
	if c.Timeout > 0 {
		t := time.NewTimer(c.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	stop := func(sig syscall.Signal) {
		_ = syscall.Kill(-pgid, sig)
		if kill == nil {
			kill = time.After(grace)
		}
	}
	ctxDone := ctx.Done()
	for {
		select {
		case err := <-done:
			res.Duration = time.Since(start)
			return finish(res, cmd, err)
		case sig := <-c.Signals:
			if res.Forwarded == nil {
				res.Forwarded = sig
			}
			if s, ok := sig.(syscall.Signal); ok {
				stop(s)
			}
		case <-timeout:
			timeout = nil
			res.TimedOut = true
			stop(syscall.SIGTERM)
		case <-ctxDone:
			ctxDone = nil
			res.TimedOut = true
			stop(syscall.SIGTERM)
		case <-kill:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
	}
}

func finish(res Result, cmd *exec.Cmd, waitErr error) (Result, error) {
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		return res, fmt.Errorf("runner: no wait status for %s: %w", cmd.Path, waitErr)
	}
	if ws.Signaled() {
		res.Signal = ws.Signal()
	} else {
		res.ExitCode = ws.ExitStatus()
	}
	var exitErr *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exitErr) && !errors.Is(waitErr, exec.ErrWaitDelay) {
		return res, fmt.Errorf("runner: wait for %s: %w", cmd.Path, waitErr)
	}
	return res, nil
}
