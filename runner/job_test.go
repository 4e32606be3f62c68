package runner_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/retry"
	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/internal/testkit/consulagent"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
	"github.com/tierlock/tierlock/runner"
)

// One real Consul agent for the package's Job tests, started by the first that needs it.
var agent consulagent.Lazy

func TestMain(m *testing.M) {
	code := m.Run()
	agent.Stop()
	os.Exit(code)
}

// tierOf is a semaphore for prod/web under the test's own prefix, with max_concurrent max.
func tierOf(t *testing.T, max string) (*lock.Semaphore, *api.KV, string) {
	t.Helper()
	client := agent.Client(t)
	prefix := testkit.Prefix(t)
	if _, err := client.KV().Put(&api.KVPair{Key: prefix + "/prod/web/max_concurrent", Value: []byte(max)}, nil); err != nil {
		t.Fatal(err)
	}
	sem, err := lock.New(client.KV(), lock.Options{Prefix: prefix, Tier: "prod/web", DefaultMax: 1, Sessions: client.Session()})
	if err != nil {
		t.Fatal(err)
	}
	return sem, client.KV(), prefix + "/prod/web/"
}

func newJob(sem runner.Slots, runID, script string) *runner.Job {
	return &runner.Job{
		Slots:   sem,
		Request: lock.Request{Record: schema.Record{Holder: "web-1", RunID: runID}},
		Command: sh(script),
		Retry:   retry.Policy{Timeout: 5 * time.Second},
		Signals: make(chan os.Signal, 1),
	}
}

// held returns web-1's slot as stored, if any.
func held(t *testing.T, sem *lock.Semaphore) (schema.Record, bool) {
	t.Helper()
	snap, err := sem.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if snap.Current != snap.Held() {
		t.Errorf("current %d, but %d running/ keys", snap.Current, snap.Held())
	}
	rec, ok := snap.Holders["web-1"]
	return rec, ok
}

func TestJobOutcomes(t *testing.T) {
	tests := []struct {
		name     string
		script   string
		success  []int
		code     int // exitCode's input: the CommandError's Code, or 0
		state    schema.State
		released bool
	}{
		{name: "success releases", script: "exit 0", released: true},
		{name: "a success code releases", script: "exit 35", success: []int{0, 35}, released: true},
		{name: "failure holds", script: "exit 3", code: 3, state: schema.StateFailed},
		{name: "a signal holds", script: "kill -TERM $$", code: 143, state: schema.StateInterrupted},
		{name: "not startable holds", script: "", code: 126, state: schema.StateFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sem, _, _ := tierOf(t, "1")
			job := newJob(sem, "r1", tt.script)
			if tt.script == "" {
				job.Command = runner.Command{Path: t.TempDir()} // a directory: found, not startable
			}
			if tt.success != nil {
				job.Success = func(code int) bool { return code == tt.success[0] || code == tt.success[1] }
			}
			var acquired *lock.Slot
			job.Notify = func(e runner.Event) {
				if e.Kind == runner.Acquired {
					acquired = e.Slot
				}
			}
			out := job.Run(context.Background())
			if !out.Ran() || acquired == nil || acquired.RunID != "r1" {
				t.Fatalf("outcome %+v: the command did not run in a slot", out)
			}
			var failed *runner.CommandError
			switch {
			case tt.released && out.Err != nil:
				t.Errorf("err = %v, want nil", out.Err)
			case !tt.released && (!errors.As(out.Err, &failed) || failed.Code != tt.code):
				t.Errorf("err = %v, want a CommandError with code %d", out.Err, tt.code)
			}
			if out.Recording != nil {
				t.Errorf("recording: %v", out.Recording)
			}
			rec, ok := held(t, sem)
			if ok == tt.released || (ok && rec.State != tt.state) {
				t.Errorf("slot after the run: %+v (held %v), want released %v, state %q", rec, ok, tt.released, tt.state)
			}
		})
	}
}

// A command that traps the signal and exits 0 did not finish its work: interrupted, and the
// code is 128 + the signal, not 0.
func TestJobTrappedSignalIsInterrupted(t *testing.T) {
	sem, _, _ := tierOf(t, "1")
	job := newJob(sem, "r1", `trap 'exit 0' TERM; echo ready; while :; do sleep 0.05; done`)
	signals := make(chan os.Signal, 1)
	job.Signals = signals
	// The signal goes once the trap is set, which the script says: not after a guessed sleep.
	ready := &sayReady{ready: make(chan struct{})}
	job.Command.Stdout = ready
	job.Notify = func(e runner.Event) {
		if e.Kind == runner.Acquired {
			go func() { <-ready.ready; signals <- syscall.SIGTERM }()
		}
	}
	out := job.Run(context.Background())
	var failed *runner.CommandError
	if !errors.As(out.Err, &failed) || failed.Code != 143 || !out.Result.Interrupted() {
		t.Fatalf("outcome %+v, want interrupted with code 143", out)
	}
	if rec, ok := held(t, sem); !ok || rec.State != schema.StateInterrupted {
		t.Errorf("slot %+v (held %v), want held, interrupted", rec, ok)
	}
}

// A signal before the command starts stops the run: nothing runs, and no slot is left taken.
func TestJobStoppedBeforeCommand(t *testing.T) {
	sem, _, _ := tierOf(t, "1")
	job := newJob(sem, "r1", "echo ran; exit 0")
	signals := make(chan os.Signal, 1)
	signals <- syscall.SIGTERM
	job.Signals = signals
	out := job.Run(context.Background())
	if !errors.Is(out.Err, runner.ErrStopped) || out.Ran() || out.Signal != syscall.SIGTERM {
		t.Fatalf("outcome %+v, want ErrStopped by SIGTERM, nothing ran", out)
	}
	if rec, ok := held(t, sem); ok {
		t.Errorf("a slot stayed taken: %+v", rec)
	}
}

// A disabled tier and a full one are refused before anything is written: nothing to undo.
func TestJobNotRun(t *testing.T) {
	for _, tt := range []struct {
		max  string
		want error
	}{{"0", lock.ErrDisabled}, {"1", lock.ErrNoSlot}} {
		t.Run(tt.max, func(t *testing.T) {
			sem, kv, base := tierOf(t, tt.max)
			if tt.max == "1" {
				if _, err := sem.Acquire(context.Background(), lock.Request{Record: schema.Record{Holder: "web-2", RunID: "r0"}}); err != nil {
					t.Fatal(err)
				}
			}
			out := newJob(sem, "r1", "exit 0").Run(context.Background())
			if !errors.Is(out.Err, tt.want) || out.Ran() || out.Recording != nil {
				t.Errorf("outcome %+v, want %v and nothing undone", out, tt.want)
			}
			if p, _, _ := kv.Get(base+"running/web-1", nil); p != nil {
				t.Errorf("web-1 holds a slot")
			}
		})
	}
}

// lostAnswers is the real semaphore whose first Release answer is lost after Consul applied
// it, as a connection reset after the commit would lose it.
type lostAnswers struct {
	*lock.Semaphore
	lost bool
}

var errLost = errors.New("connection reset after the commit")

func (l *lostAnswers) Release(ctx context.Context, slot *lock.Slot) error {
	err := l.Semaphore.Release(ctx, slot)
	if err == nil && !l.lost {
		l.lost = true
		return errLost
	}
	return err
}

// A release whose answer was lost is retried, and the retry finds the slot released by this
// run: a success, not "freed by someone else".
func TestJobReleaseAnswerLost(t *testing.T) {
	sem, _, _ := tierOf(t, "1")
	slots := &lostAnswers{Semaphore: sem}
	job := newJob(slots, "r1", "exit 0")
	job.Retry.Retryable = func(_ context.Context, err error) bool { return errors.Is(err, errLost) }
	out := job.Run(context.Background())
	if !slots.lost || out.Err != nil || out.Recording != nil {
		t.Fatalf("outcome %+v (answer lost: %v), want a clean success", out, slots.lost)
	}
	if _, ok := held(t, sem); ok {
		t.Error("the slot is still held")
	}
}

// Freed by someone else while the command ran: a success all the same, with ErrNotHeld said.
func TestJobSlotFreedByOthers(t *testing.T) {
	sem, _, _ := tierOf(t, "1")
	job := newJob(sem, "r1", "exit 0")
	job.Notify = func(e runner.Event) {
		if e.Kind != runner.Acquired {
			return
		}
		if _, err := sem.ForceRelease(context.Background(), "web-1", "r1"); err != nil {
			t.Error(err)
		}
	}
	out := job.Run(context.Background())
	if out.Err != nil || !errors.Is(out.Recording, lock.ErrNotHeld) {
		t.Errorf("outcome %+v, want success with recording ErrNotHeld", out)
	}
}

// sayReady closes ready once the command has written "ready".
type sayReady struct {
	mu    sync.Mutex
	seen  []byte
	ready chan struct{}
}

func (w *sayReady) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	had := bytes.Contains(w.seen, []byte("ready"))
	w.seen = append(w.seen, p...)
	if !had && bytes.Contains(w.seen, []byte("ready")) {
		close(w.ready)
	}
	return len(p), nil
}
