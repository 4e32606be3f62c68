package runner_test

import (
	"context"
	"errors"
	"os"
	"reflect"
	"syscall"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/hostfs"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/runner"
)

func TestCommandEnv(t *testing.T) {
	environ := []string{"PATH=/bin", "CONSUL_HTTP_TOKEN=s3cret", "CONSUL_HTTP_ADDR=127.0.0.1:8500",
		"CONSUL_HTTP_TOKEN_FILE=/etc/tok", "CONSUL_HTTP_AUTH=ops:hunter2", "CONSUL_HTTP_TOKEN_FILEX=kept", "XCONSUL_HTTP_TOKEN=kept", "EMPTY=", "NOEQUALS"}
	for _, tc := range []struct {
		name string
		pass bool
		want []string
	}{
		{"token removed, the rest kept in order", false, []string{"PATH=/bin", "CONSUL_HTTP_ADDR=127.0.0.1:8500",
			"CONSUL_HTTP_TOKEN_FILEX=kept", "XCONSUL_HTTP_TOKEN=kept", "EMPTY=", "NOEQUALS"}},
		{"--pass-consul-token keeps it", true, environ},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := runner.CommandEnv(environ, tc.pass); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("CommandEnv = %q, want %q", got, tc.want)
			}
		})
	}
	if got := runner.CommandEnv(nil, false); got == nil || len(got) != 0 {
		t.Errorf("CommandEnv(nil) = %#v: want an empty environment, not nil (nil inherits ours)", got)
	}
}

// The host side of a run: the record's facts come from the host, the revision command and
// the node; a busy local lock, a signal in the splay and a missing revision each stop the run
// before it asks for a slot, as their own kind of "not run".
func TestJobHostSide(t *testing.T) {
	sem, _, _ := tierOf(t, "2")
	t.Run("the record", func(t *testing.T) {
		job := newJob(sem, "r1", `test -z "$CONSUL_HTTP_TOKEN"`)
		job.Command.Env = []string{"PATH=/usr/bin:/bin", "CONSUL_HTTP_TOKEN=s3cret"}
		job.Host = runner.Host{
			StateDir: t.TempDir(), Tier: "prod/web", InstanceID: "i-0abc",
			Node:            func(context.Context) (string, error) { return "node-1", nil },
			RevisionCommand: &runner.Command{Path: "/bin/echo", Args: []string{"rev-7"}, Timeout: 10 * time.Second},
		}
		var got *lock.Slot
		job.Notify = func(e runner.Event) {
			if e.Kind == runner.Acquired {
				got = e.Slot
				rec, _ := held(t, sem)
				host, _ := os.Hostname()
				if rec.Hostname != host || rec.PID != os.Getpid() || rec.InstanceID != "i-0abc" || rec.Node != "node-1" || rec.Revision != "rev-7" {
					t.Errorf("record %+v", rec)
				}
			}
		}
		if out := job.Run(context.Background()); out.Kind != runner.Succeeded || got == nil {
			t.Errorf("outcome %+v (the token reached the command if it failed)", out)
		}
	})
	t.Run("another local run", func(t *testing.T) {
		dir := t.TempDir()
		unlock, err := hostfs.LockTier(dir, "prod/web")
		if err != nil {
			t.Fatal(err)
		}
		defer unlock()
		job := newJob(sem, "r2", "exit 0")
		job.Host = runner.Host{StateDir: dir, Tier: "prod/web"}
		if out := job.Run(context.Background()); out.Kind != runner.NotRun || out.Why != runner.LocallyBusy {
			t.Errorf("outcome %+v, want not run: locally busy", out)
		}
	})
	t.Run("a signal in the splay", func(t *testing.T) {
		job := newJob(sem, "r3", "exit 0")
		signals := make(chan os.Signal, 1)
		job.Signals = signals
		job.Host = runner.Host{Splay: time.Hour, Rand: func(d time.Duration) time.Duration { return d }}
		job.Notify = func(e runner.Event) {
			if e.Kind == runner.Splaying {
				signals <- syscall.SIGTERM
			}
		}
		out := job.Run(context.Background())
		if out.Kind != runner.NotRun || out.Why != runner.Stopped || out.Signal != syscall.SIGTERM {
			t.Errorf("outcome %+v, want not run: stopped by SIGTERM", out)
		}
	})
	t.Run("no revision", func(t *testing.T) {
		job := newJob(sem, "r4", "exit 0")
		job.Host = runner.Host{RevisionCommand: &runner.Command{Path: "/bin/true", Timeout: 10 * time.Second}}
		out := job.Run(context.Background())
		if out.Kind != runner.NotRun || out.Why != runner.Refused || !errors.Is(out.Err, runner.ErrNoRevision) {
			t.Errorf("outcome %+v, want not run: refused, no revision", out)
		}
	})
	t.Run("no node", func(t *testing.T) {
		job := newJob(sem, "r5", "exit 0")
		var noNode error
		job.Host = runner.Host{Node: func(context.Context) (string, error) { return "", errors.New("agent gone") }}
		job.Notify = func(e runner.Event) {
			if e.Kind == runner.NoNode {
				noNode = e.Err
			}
		}
		if out := job.Run(context.Background()); out.Kind != runner.Succeeded || noNode == nil {
			t.Errorf("outcome %+v, no-node event %v: want a success that says the node is unknown", out, noNode)
		}
	})
	if rec, ok := held(t, sem); ok {
		t.Errorf("a slot is left: %+v", rec)
	}
}
