package reliability_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/internal/testkit/consulagent"
	"github.com/tierlock/tierlock/internal/testkit/faultproxy"
)

// crashes counts the processes these tests killed, for the figures.
var crashes atomic.Int64

// tierlock is SIGKILLed at each step of a run (Consul holding the answer it waits for, where
// the step is a request); the next run on that host heals the tier: it re-enters the slot the
// killed run left, or takes a fresh one when none was left, and releases it.
func TestKilledAtEachStep(t *testing.T) {
	t.Parallel()
	server := startServer(t, consulagent.Config{})
	c := clientOf(t, server, "")
	held := func(holder string) bool { _, ok := tierOf(t, c).Holders[holder]; return ok }
	steps := []struct {
		name      string
		code      int // the command's exit code
		txn       int // the run's transaction to fault: 1 takes the slot, 2 releases or records
		fault     int
		kill      func(holder string, rec recorder, faulted bool) bool // when to kill
		left      bool                                                 // the killed run leaves its slot held
		commanded bool                                                 // the killed run's command started
	}{
		{name: "after the acquire committed", txn: 1, fault: faultproxy.StallAfterCommit,
			kill: func(h string, _ recorder, f bool) bool { return f && held(h) }, left: true},
		{name: "during the command",
			kill: func(h string, r recorder, _ bool) bool { return len(r.lines(t)) > 0 }, left: true, commanded: true},
		{name: "before the release was sent", txn: 2, fault: faultproxy.Stall,
			kill: func(_ string, _ recorder, f bool) bool { return f }, left: true, commanded: true},
		{name: "after the release committed", txn: 2, fault: faultproxy.StallAfterCommit,
			kill: func(h string, _ recorder, f bool) bool { return f && !held(h) }, commanded: true},
		{name: "while recording a failure", code: 1, txn: 2, fault: faultproxy.Stall,
			kill: func(_ string, _ recorder, f bool) bool { return f }, left: true, commanded: true},
	}
	for i, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			holder := fmt.Sprintf("web-%d", i)
			p := faultproxy.New(server.Addr)
			defer p.Close()
			var txns atomic.Int32
			var faulted atomic.Bool
			p.SetRule(func(r *http.Request) int {
				if faultproxy.IsWriteTxn(r) && int(txns.Add(1)) == st.txn {
					faulted.Store(true)
					return st.fault
				}
				return faultproxy.Pass
			})
			h := newHost(t, holder, p.Addr).raced()
			rec := newRecorder(t)
			runArgs := []string{"run", "--tier", tier, "--default-max", "-1", "--consul-timeout", "30s", "--"}
			sleep := time.Duration(0)
			if st.name == "during the command" {
				sleep = time.Minute
			}
			cmd, o := h.command(append(runArgs, rec.script(server.Addr, holder, sleep, st.code)...)...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			testkit.Eventually(t, "the step to kill at", func() bool { return st.kill(holder, rec, faulted.Load()) })
			_ = cmd.Process.Kill()
			crashes.Add(1)
			// What is left of the command goes too, as systemd stops the unit's cgroup (it
			// would keep tierlock's output pipes open).
			rec.killGroup(t, holder)
			if err := wait(cmd, o); err != nil {
				t.Fatal(err)
			}
			if o.code != -1 {
				t.Fatalf("tierlock ended before it was killed: %s", o)
			}
			if got := held(holder); got != st.left {
				t.Errorf("after the kill: slot held %v, want %v", got, st.left)
			}

			// The next run on the host, Consul answering again.
			p.SetRule(nil)
			next := h.run(t, append(runArgs, rec.script(server.Addr, holder, 0, 0)...)...)
			wantExit(t, next, 0)
			if reentered := strings.Contains(next.stderr.String(), "re-entered"); reentered != st.left {
				t.Errorf("re-entered %v, want %v\n%s", reentered, st.left, next)
			}
			if held(holder) {
				t.Errorf("not healed: %s still holds a slot", holder)
			}
			want := 1
			if st.commanded {
				want = 2
			}
			if n := rec.starts(t)[holder]; n != want {
				t.Errorf("the command started %d times, want %d", n, want)
			}
		})
	}
	if s := tierOf(t, c); s.RunningKeys != 0 || len(s.Queue) != 0 {
		t.Errorf("left behind: %d slots, %d waiters", s.RunningKeys, len(s.Queue))
	}
}

// The Consul server (with its data directory) is restarted while runs are under way: before a
// run asks for its slot, while its command runs (stopped, or killed), and for longer than the
// run's --consul-timeout. Runs ride through, or give up as documented; the next run heals.
func TestConsulServerRestart(t *testing.T) {
	t.Parallel()
	server := startServer(t, consulagent.Config{})
	c := clientOf(t, server, "")
	rec := newRecorder(t)
	h := newHost(t, "web-1", server.Addr).raced()
	// run starts a run whose command sleeps; done waits for its end, started for its command.
	run := func(sleep time.Duration, timeout string) (done func() *outcome, started func()) {
		before := len(rec.lines(t))
		cmd, o := h.command(append([]string{"run", "--tier", tier, "--consul-timeout", timeout, "--"},
			rec.script(server.Addr, "web-1", sleep, 0)...)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return func() *outcome {
				if err := wait(cmd, o); err != nil {
					t.Fatal(err)
				}
				return o
			}, func() {
				testkit.Eventually(t, "the command to start", func() bool { return len(rec.lines(t)) > before })
			}
	}
	up := func() {
		t.Helper()
		if err := server.Restart(); err != nil {
			t.Fatal(err)
		}
		if err := server.Ready(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	runs := 0

	t.Run("down before the run asks", func(t *testing.T) {
		server.Stop()
		crashes.Add(1)
		done, _ := run(0, "60s")
		runs++
		time.Sleep(2 * time.Second) // the run retries meanwhile
		up()
		o := done()
		wantExit(t, o, 0)
		if !strings.Contains(o.stderr.String(), "retrying") {
			t.Errorf("no retries logged:\n%s", o)
		}
	})
	for _, kill := range []bool{false, true} {
		t.Run(fmt.Sprintf("restarted while the command runs (kill %v)", kill), func(t *testing.T) {
			done, started := run(3*time.Second, "60s")
			runs++
			started()
			if kill {
				server.Kill()
			} else {
				server.Stop()
			}
			crashes.Add(1)
			time.Sleep(time.Second)
			up()
			wantExit(t, done(), 0)
		})
	}
	t.Run("killed while the command runs, back after the run gave up", func(t *testing.T) {
		done, started := run(time.Second, "3s")
		runs++
		started()
		server.Kill()
		crashes.Add(1)
		o := done()
		wantExit(t, o, 70)
		up()
		// The slot survived in the server's data directory, and the next run heals it.
		if rec, ok := tierOf(t, c).Holders["web-1"]; !ok || rec.State != "running" {
			t.Fatalf("after the restart: web-1 %+v (held %v), want its slot still held", rec, ok)
		}
		next, _ := run(0, "60s")
		runs++
		o = next()
		wantExit(t, o, 0)
		if !strings.Contains(o.stderr.String(), "re-entered") {
			t.Errorf("the next run did not re-enter:\n%s", o)
		}
	})
	if s := tierOf(t, c); s.RunningKeys != 0 || len(s.Queue) != 0 || s.Current != 0 {
		t.Errorf("left behind: current %d, %d slots, %d waiters", s.Current, s.RunningKeys, len(s.Queue))
	}
	if n := rec.starts(t)["web-1"]; n != runs {
		t.Errorf("the command started %d times in %d runs", n, runs)
	}
}
