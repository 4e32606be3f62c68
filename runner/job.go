package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/tierlock/tierlock/internal/retry"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// Errors a Job's Outcome carries besides lock's (ErrDisabled, ErrNoSlot, ...) and Consul's.
var (
	// ErrStopped: a signal came before the command started. Nothing ran; whatever the
	// acquisition may have taken was undone.
	ErrStopped = errors.New("runner: stopped before the command started; nothing ran")
	// ErrNotReleased: the command succeeded, but its slot could not be released (Consul kept
	// failing, or a signal ended the retries). The slot stays held; the holder's next run
	// re-enters it and releases it.
	ErrNotReleased = errors.New("runner: the command succeeded but its slot could not be released")
)

// CommandError is a command that did not succeed: it failed, or it was interrupted. Its slot
// stays held.
type CommandError struct {
	Result Result
	// Code is the exit code to report: the command's, or 128 + the signal tierlock sent when
	// the command was interrupted but claimed success (it trapped the signal and exited 0,
	// which does not mean it finished its work).
	Code int
	// Start is why the command could not be started (found on $PATH but not executable,
	// say); Code is then 126, as a shell reports it.
	Start error
	// Unhealthy: the command succeeded but the health check did not pass within its timeout;
	// Health is how its last try ended, and Code is its exit code (1 if it did not end).
	Unhealthy bool
	Health    Result
}

func (e *CommandError) Error() string {
	if e.Unhealthy {
		return fmt.Sprintf("runner: command succeeded but its health check did not pass (exit %d)", e.Code)
	}
	if e.Start != nil {
		return fmt.Sprintf("runner: command could not start: %v", e.Start)
	}
	if e.Result.Interrupted() {
		return fmt.Sprintf("runner: command interrupted (exit %d)", e.Code)
	}
	return fmt.Sprintf("runner: command failed (exit %d)", e.Code)
}

// Slots is what a Job needs of lock.Semaphore.
type Slots interface {
	Acquire(ctx context.Context, req lock.Request) (*lock.Slot, error)
	Release(ctx context.Context, slot *lock.Slot) error
	MarkFailed(ctx context.Context, slot *lock.Slot, code int) error
	MarkInterrupted(ctx context.Context, slot *lock.Slot, code *int) error
	MarkUnhealthy(ctx context.Context, slot *lock.Slot, code int) error
	Abandon(ctx context.Context, holder, runID string) error
}

// Health is a check that must pass after the command succeeds for the run to count as a
// success: it is run until it exits 0 or Timeout passes, Interval apart. Each try is stopped
// at what is left of Timeout. A run whose check never passes keeps its slot, as a failure
// ("unhealthy"), and counts as a failure of its revision.
type Health struct {
	Command  Command
	Timeout  time.Duration
	Interval time.Duration // default 5s
}

// Job is one run of a command in a slot of a tier: take the host's lock of the tier, splay,
// complete the record, take the slot (or re-enter the one an earlier run of the holder left
// held), run the command, and record how it ended: released on success, held as failed or
// interrupted otherwise. It does not log: its Outcome says what happened, and Notify and the
// retry policy's Notify say it as it happens.
type Job struct {
	Slots   Slots
	Request lock.Request
	// Command is what to run. Its Signals are the Job's.
	Command Command
	// Success reports whether an exit code counts as success. Default: 0 only.
	Success func(code int) bool
	// Retry is the policy for Consul errors. Taking the slot is one operation with a budget
	// of its own; recording the outcome is another.
	Retry retry.Policy
	// Signals are SIGINT and SIGTERM as they arrive. Before the command starts, one stops the
	// run (ErrStopped); while it runs, they are forwarded to it; while the outcome is being
	// recorded, one ends the retries at once (a slot left held is safe, a stuck run is not).
	Signals <-chan os.Signal
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Host is the host's side before the slot: local lock, splay, the record's facts.
	Host Host
	// Health, if set, must pass after the command succeeds (see Health).
	Health *Health
	// Notify, if set, is told what happens as it happens (see Event), for the log.
	Notify func(Event)
}

// Outcome is how a Job ended.
type Outcome struct {
	// Kind is how it ended; Why, when it did not run, says why.
	Kind Kind
	Why  Why
	// Err is nil when the command succeeded and its slot is free. Otherwise it is why nothing
	// ran (an error of lock, of Consul, or ErrStopped), a *CommandError, or ErrNotReleased.
	Err error
	// Slot is the slot the command ran in; nil when it did not run.
	Slot *lock.Slot
	// Waited is the time it took to get the slot, or to give up.
	Waited time.Duration
	// Result is how the command ended, when it ran.
	Result Result
	// Recording is why the outcome could not be recorded as it should have been: the failure
	// or interruption not written (the slot is held all the same), what the acquisition may
	// have taken not undone (the next run re-enters it), or lock.ErrNotHeld after a success,
	// when someone else (an operator, the reaper) had freed the slot already.
	Recording error
	// Signal is the signal that stopped the run before the command, or ended the retries
	// that record the outcome; nil if none did.
	Signal os.Signal
}

// Ran reports whether the command ran.
func (o Outcome) Ran() bool { return o.Slot != nil }

// Run runs the job. It returns once the outcome is recorded, or could not be.
func (j *Job) Run(ctx context.Context) (out Outcome) {
	defer func() {
		out.Kind = kindOf(out.Err, out.Ran())
		if out.Kind == NotRun {
			out.Why = WhyNot(out.Err)
		}
	}()
	slot, unlock := j.take(ctx, &out)
	defer unlock()
	if slot == nil {
		return out
	}
	out.Slot = slot
	j.notify(Event{Kind: Acquired, Slot: slot, Duration: out.Waited})

	cmd := j.Command
	cmd.Signals = j.Signals
	cmd.Env = CommandEnv(orEnviron(cmd.Env), j.Host.PassConsulToken)
	res, startErr := Run(ctx, cmd)
	if startErr != nil {
		// Found but not startable (permissions, say): a failure like any other.
		res = Result{ExitCode: 126}
	}
	var health *Result
	if j.Health != nil && !res.Interrupted() && startErr == nil && j.succeeded(res.ExitCode) {
		h, sig := j.checkHealth(ctx)
		if sig != nil {
			// A signal while the check ran: the run was stopped, as if during the command.
			res.Forwarded = sig
		}
		health = h
	}
	out.Result = res
	out.Err, out.Recording, out.Signal = j.record(ctx, slot, res, health)
	var failed *CommandError
	if errors.As(out.Err, &failed) {
		failed.Start = startErr
	}
	return out
}

// take is the run until its command may start: the host side, then the slot. Until then a
// signal stops the run: nothing runs, and what the acquisition may have taken is undone. It
// returns nil when the command must not run, with out saying why; unlock is always to be
// called.
func (j *Job) take(ctx context.Context, out *Outcome) (slot *lock.Slot, unlock func()) {
	before, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := OnSignal(j.Signals, cancel)
	defer stop()
	stopped := func() bool { return before.Err() != nil && ctx.Err() == nil }
	req, unlock, err := j.prepare(before, stopped)
	if err != nil {
		out.Err = err
		if errors.Is(err, ErrStopped) {
			out.Signal = stop()
			out.Err = fmt.Errorf("%w: %v", ErrStopped, out.Signal)
		}
		return nil, unlock
	}
	budget := j.Retry.Budget()
	slot, err = j.acquire(before, budget, req, out)
	if out.Signal = stop(); out.Signal == nil && err == nil {
		return slot, unlock
	}
	out.Err = err
	if out.Signal != nil {
		out.Err = fmt.Errorf("%w: %v", ErrStopped, out.Signal)
	}
	if !decided(err) {
		// The answer may have been lost after Consul committed, or the slot is ours and
		// unused: undo it, within the budget of the acquisition it undoes (after Consul
		// failed for the whole of that, one more look, not a budget of its own).
		out.Recording = budget.Do(context.WithoutCancel(ctx), "undo the slot taken", func(ctx context.Context) error {
			return j.Slots.Abandon(ctx, req.Holder, req.RunID)
		})
	}
	return nil, unlock
}

// acquire takes the slot within the retry budget, telling Notify the first time it waits.
func (j *Job) acquire(ctx context.Context, budget *retry.Budget, req lock.Request, out *Outcome) (*lock.Slot, error) {
	asked := j.now()
	defer func() { out.Waited = j.now().Sub(asked) }()
	waiting := false
	req.Waiting = func(s *lock.Snapshot) {
		if !waiting {
			waiting = true
			j.notify(Event{Kind: Waiting, Tier: s, Revision: req.Revision, HeldBack: s.Decide(req.Holder, req.Revision) == lock.HeldBack})
		}
	}
	var slot *lock.Slot
	err := budget.Do(ctx, "acquire", func(ctx context.Context) (err error) {
		slot, err = j.Slots.Acquire(ctx, req)
		return err
	})
	return slot, err
}

func (j *Job) now() time.Time {
	if j.Now == nil {
		return time.Now()
	}
	return j.Now()
}

func (j *Job) notify(e Event) {
	if j.Notify != nil {
		j.Notify(e)
	}
}

// record writes the command's outcome: release on success, keep the slot otherwise. It runs
// whatever happens to ctx, with a budget of its own, so that a signal never strands a slot
// half-written; but a signal while it retries ends the retries at once: the slot stays held,
// which is safe.
func (j *Job) record(ctx context.Context, slot *lock.Slot, res Result, health *Result) (err, recording error, sig os.Signal) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := OnSignal(j.Signals, cancel)
	defer stop()
	budget := j.Retry.Budget()
	success := j.succeeded
	switch {
	case health != nil && !res.Interrupted():
		recording = budget.Do(ctx, "mark unhealthy", func(ctx context.Context) error { return j.Slots.MarkUnhealthy(ctx, slot, res.ExitCode) })
		code := health.Code()
		if code == 0 || health.Interrupted() {
			code = 1
		}
		return &CommandError{Result: res, Code: code, Unhealthy: true, Health: *health}, recording, stop()
	case res.Interrupted():
		// Checked first: once a signal was sent or forwarded, the exit code says little.
		var code *int
		if res.Signal == 0 {
			code = &res.ExitCode
		}
		recording = budget.Do(ctx, "mark interrupted", func(ctx context.Context) error { return j.Slots.MarkInterrupted(ctx, slot, code) })
		exit := res.Code()
		if res.Signal == 0 && success(res.ExitCode) {
			exit = 128 + int(sentSignal(res))
		}
		return &CommandError{Result: res, Code: exit}, recording, stop()
	case success(res.ExitCode):
		err := budget.Do(ctx, "release", func(ctx context.Context) error { return j.Slots.Release(ctx, slot) })
		switch {
		case err == nil:
			return nil, nil, nil
		case errors.Is(err, lock.ErrNotHeld):
			return nil, err, nil
		}
		return fmt.Errorf("%w: %w", ErrNotReleased, err), nil, stop()
	}
	recording = budget.Do(ctx, "mark failed", func(ctx context.Context) error { return j.Slots.MarkFailed(ctx, slot, res.ExitCode) })
	return &CommandError{Result: res, Code: res.Code()}, recording, stop()
}

// succeeded reports whether the command's exit code counts as success.
func (j *Job) succeeded(code int) bool {
	if j.Success == nil {
		return code == 0
	}
	return j.Success(code)
}

// checkHealth runs the health check until it passes or its timeout passes. It returns nil
// when it passed, else how its last try ended; or the signal that stopped it.
func (j *Job) checkHealth(ctx context.Context) (*Result, os.Signal) {
	now := j.Now
	if now == nil {
		now = time.Now
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := OnSignal(j.Signals, cancel)
	interval := j.Health.Interval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	deadline := now().Add(j.Health.Timeout)
	env := CommandEnv(orEnviron(j.Health.Command.Env), j.Host.PassConsulToken)
	var last Result
	for {
		left := deadline.Sub(now())
		if left <= 0 {
			return &last, stop()
		}
		c := j.Health.Command
		c.Timeout, c.Signals, c.Env = left, nil, env
		if c.KillGrace <= 0 {
			c.KillGrace = 5 * time.Second
		}
		res, err := Run(ctx, c)
		if err != nil {
			res = Result{ExitCode: 126}
		}
		if ctx.Err() != nil {
			return &res, stop()
		}
		if err == nil && !res.Interrupted() && res.ExitCode == 0 {
			return nil, stop()
		}
		last = res
		select {
		case <-ctx.Done():
			return &last, stop()
		case <-time.After(min(interval, max(deadline.Sub(now()), 0))):
		}
	}
}

// decided reports whether Acquire refused on what it read, having written nothing: there is
// nothing to undo.
func decided(err error) bool {
	for _, e := range []error{lock.ErrDisabled, lock.ErrNoSlot, lock.ErrInvalidConfig, schema.ErrInvalidName, lock.ErrRejected, lock.ErrTooManyKeys, lock.ErrHalted, lock.ErrHeldBack} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// sentSignal is the signal tierlock sent or forwarded to the command: the first one
// forwarded, else SIGTERM (the timeout's).
func sentSignal(res Result) syscall.Signal {
	if s, ok := res.Forwarded.(syscall.Signal); ok {
		return s
	}
	return syscall.SIGTERM
}

// OnSignal calls cancel on the first signal from signals until stop is called; stop returns
// that signal, or nil. Signals after stop are left for whoever reads signals next (the
// command's forwarding).
func OnSignal(signals <-chan os.Signal, cancel func()) (stop func() os.Signal) {
	done, finished := make(chan struct{}), make(chan struct{})
	var got os.Signal
	go func() {
		defer close(finished)
		select {
		case got = <-signals:
			cancel()
		case <-done:
		}
	}()
	var stopped os.Signal
	once := false
	return func() os.Signal {
		if !once {
			once = true
			close(done)
			<-finished
			stopped = got
		}
		return stopped
	}
}
