package main

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/tierlock/tierlock/internal/consulclient"
	"github.com/tierlock/tierlock/internal/imds"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/runner"
)

func (a *App) runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "run a command (default chef-client) in a slot of the tier",
		ArgsUsage: "[-- COMMAND ARGS...]",
		Flags:     runFlags(),
		Action: func(c *cli.Context) error {
			logger, err := a.newLogger(c)
			if err != nil {
				return exitWith(exitConfig, err)
			}
			o, err := parseRunOptions(c)
			if err != nil {
				return exitWith(exitConfig, err)
			}
			var rep runReport
			code := a.run(c.Context, logger, o, &rep)
			if o.metricsFile != "" {
				if err := rep.write(o.metricsFile, o.tier, code, a.Now()); err != nil {
					logger.WithError(err).Error("--metrics-file: could not write it")
				}
			}
			if code != exitOK {
				return exitWith(code, nil)
			}
			return nil
		},
	}
}

// run is `tierlock run` after its flags were checked: SPEC.md's steps 1 to 9. It returns the
// exit code.
func (a *App) run(ctx context.Context, logger *logrus.Logger, o runOptions, rep *runReport) int {
	runID := newRunID()
	log := logger.WithFields(logrus.Fields{"run_id": runID, "tier": o.tier, "holder": o.holder})

	unlock, err := lockLocally(o.stateDir, o.tier)
	if errors.Is(err, errLocallyBusy) {
		log.Warn(err)
		return exitTempFail
	}
	if err != nil {
		log.Error(err)
		return exitConfig
	}
	defer unlock()

	// Until the command starts, a signal means: stop, nothing ran.
	before, cancel := context.WithCancel(ctx)
	defer cancel()
	stopWatching := a.cancelOnSignal(cancel)

	if o.splay > 0 {
		d := rand.N(o.splay)
		log.Debugf("splay: sleeping %s", d.Round(time.Millisecond))
		select {
		case <-before.Done():
			log.Warnf("stopped by %v before starting; nothing ran", stopWatching())
			return exitTempFail
		case <-time.After(d):
		}
	}

	client, err := consulclient.New()
	if err != nil {
		log.Error(err)
		return exitConfig
	}
	retry := a.newRetry(o.consulTimeout, log)
	sem, err := lock.New(client.KV(), lock.Options{
		Prefix: o.prefix, Tier: o.tier, DefaultMax: o.defaultMax, QueueOrder: o.queueOrder,
		RequestTimeout: consulclient.RequestTimeout(o.consulTimeout), Now: a.Now, Sessions: client.Session(),
	})
	if err != nil {
		log.Error(err)
		return exitConfig
	}
	if o.dryRun {
		return a.dryRun(before, log, sem, retry, o)
	}

	instanceID := o.instanceID
	if instanceID == "imds" {
		if instanceID, err = imds.InstanceID(before, imds.Endpoint()); err != nil {
			log.Errorf("--instance-id imds: %v", err)
			return exitConfig
		}
		if err := lock.ValidateName("instance id", instanceID); err != nil {
			log.Errorf("--instance-id imds: %v", err)
			return exitConfig
		}
	}
	hostname, _ := os.Hostname()
	node := a.nodeName(before, log, client, o)
	req := lock.Request{
		Record: lock.Record{
			Holder: o.holder, Hostname: hostname, InstanceID: instanceID, Node: node, PID: os.Getpid(),
			Command: strings.Join(o.command, " "), RunID: runID, Version: "tierlock " + a.Build.Version,
		},
		WaitUntil: a.Now().Add(o.wait),
	}
	waiting := false
	req.Waiting = func(s *lock.Snapshot) {
		if !waiting {
			waiting = true
			log.Infof("tier full (%d of %d slots held), waiting up to %s", s.Held(), s.Max, o.wait)
		}
	}

	asked := a.Now()
	var slot *lock.Slot
	err = retry.do(before, "acquire", func(ctx context.Context) (err error) {
		slot, err = sem.Acquire(ctx, req)
		return err
	})
	sig := stopWatching()
	if err != nil {
		return a.notAcquired(ctx, log, sem, retry, req.Record, err, sig)
	}
	if sig != nil {
		log.Warnf("stopped by %v before the command started; nothing ran", sig)
		a.abandon(ctx, log, sem, retry, req.Record)
		return exitTempFail
	}
	rep.waited = a.Now().Sub(asked)
	log = log.WithField("attempt", slot.Attempts)
	if slot.Reentered {
		log.Infof("re-entered the slot an earlier run left held (waited %s)", a.Now().Sub(asked).Round(time.Millisecond))
	} else {
		log.Infof("slot acquired (waited %s)", a.Now().Sub(asked).Round(time.Millisecond))
	}

	res, err := runner.Run(ctx, runner.Command{
		Path: o.path, Args: o.command[1:], Env: commandEnv(os.Environ(), o.passConsulToken),
		Stdin: os.Stdin, Stdout: a.Stdout, Stderr: a.Stderr,
		Timeout: o.timeout, KillGrace: o.killGrace, Signals: a.Signals,
	})
	if err != nil {
		// Found on $PATH but not startable (permissions, say): a failure like any other.
		log.Error(err)
		res = runner.Result{ExitCode: 126}
	}
	rep.duration = res.Duration
	rep.result = "failed"
	switch {
	case res.Interrupted():
		rep.result = "interrupted"
	case o.successCodes[res.ExitCode]:
		rep.result = "success"
	}
	return a.finish(ctx, log, sem, retry, slot, res, o)
}

// finish records the command's outcome: release on success, keep the slot otherwise. It runs
// whatever happens to ctx, with its own bound, so a signal never strands a slot half-written.
func (a *App) finish(ctx context.Context, log *logrus.Entry, sem *lock.Semaphore, retry *consulRetry,
	slot *lock.Slot, res runner.Result, o runOptions) int {
	// Recording the outcome is an operation of its own, with a budget of its own. It does not
	// stop when ctx does (a signal must not strand a slot half-written), but a SIGINT or
	// SIGTERM while it retries ends the retries at once: the slot stays held, which is safe.
	retry = retry.fresh(log)
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stopWatching := a.cancelOnSignal(cancel)
	defer stopWatching()
	log = log.WithFields(logrus.Fields{"exit_code": res.Code(), "duration": res.Duration.Round(time.Millisecond).String()})
	switch {
	case res.Interrupted():
		// Checked first: once a signal was sent or forwarded, the command's exit code says
		// little (a script that traps TERM and exits 0 did not finish its work).
		var code *int
		if res.Signal == 0 {
			code = &res.ExitCode
		}
		how := "by a signal"
		if res.TimedOut {
			how = fmt.Sprintf("by the --timeout of %s", o.timeout)
		}
		err := retry.do(ctx, "mark interrupted", func(ctx context.Context) error { return sem.MarkInterrupted(ctx, slot, code) })
		if err != nil {
			log.WithError(explain(err)).Error("could not record the interruption; the slot stays held")
		}
		log.Warnf("command interrupted %s; slot stays held (state interrupted)", how)
		if res.Signal == 0 && o.successCodes[res.ExitCode] {
			// It caught the signal and said it succeeded: exit as if the signal had ended it,
			// so that nothing above takes the run for a success.
			return 128 + int(sentSignal(res))
		}
	case o.successCodes[res.ExitCode]:
		attempts := 0
		err := retry.do(ctx, "release", func(ctx context.Context) error { attempts++; return sem.Release(ctx, slot) })
		switch {
		case errors.Is(err, lock.ErrNotHeld) && attempts > 1:
			// Release frees only this run's slot, so it is gone: most likely freed by the
			// earlier attempt, whose answer was lost.
			log.Info("command succeeded; slot released (an earlier attempt's answer was lost)")
		case errors.Is(err, lock.ErrNotHeld):
			log.Warn("command succeeded; its slot was already freed (by an operator or the reaper?)")
		case err != nil && stopWatching() != nil:
			log.WithError(err).Errorf("command succeeded but %v stopped the release; the slot stays held and the next run re-enters and releases it", stopWatching())
			return exitSoftware
		case err != nil:
			log.WithError(explain(err)).Error("command succeeded but the slot could not be released; it stays held and the next run re-enters and releases it")
			return exitSoftware
		default:
			log.Info("command succeeded; slot released")
		}
		return exitOK
	default:
		err := retry.do(ctx, "mark failed", func(ctx context.Context) error { return sem.MarkFailed(ctx, slot, res.ExitCode) })
		if err != nil {
			log.WithError(explain(err)).Error("could not record the failure; the slot stays held")
		}
		log.Error("command failed; slot stays held (state failed) until a run succeeds or an operator releases it")
	}
	return res.Code()
}

// sentSignal is the signal tierlock sent or forwarded to the command: the first one forwarded,
// else SIGTERM (the timeout's).
func sentSignal(res runner.Result) syscall.Signal {
	if s, ok := res.Forwarded.(syscall.Signal); ok {
		return s
	}
	return syscall.SIGTERM
}

// notAcquired turns an Acquire error into an exit code, cleaning up after an attempt whose
// outcome is unknown.
func (a *App) notAcquired(ctx context.Context, log *logrus.Entry, sem *lock.Semaphore, retry *consulRetry,
	rec lock.Record, err error, sig os.Signal) int {
	err = explain(err)
	var denied *refusal
	switch {
	case errors.Is(err, lock.ErrDisabled):
		log.Info("tier disabled (max_concurrent 0); nothing ran")
		return exitTempFail
	case errors.As(err, &denied):
		// Refused before anything was written: there is nothing to undo.
		log.WithError(err).Error("nothing ran")
		return exitConfig
	case errors.Is(err, lock.ErrNoSlot):
		log.WithError(err).Warn("no slot within --wait; nothing ran")
		return exitTempFail
	case errors.Is(err, lock.ErrInvalidConfig), errors.Is(err, lock.ErrInvalidName), errors.Is(err, lock.ErrRejected):
		log.WithError(err).Error("nothing ran")
		return exitConfig
	}
	if sig != nil {
		log.Warnf("stopped by %v while waiting for a slot; nothing ran", sig)
	} else {
		log.WithError(err).Error("consul unavailable; nothing ran")
	}
	a.abandon(ctx, log, sem, retry, rec)
	if !consulclient.Retryable(context.Background(), err) && sig == nil {
		return exitConfig // a refusal such as a 403: retrying on the next timer will not help
	}
	return exitTempFail
}

// abandon undoes an acquisition that may have committed without our knowing (the answer was
// lost, or a signal came): a fresh slot is released, a re-entered one marked interrupted.
//
// It shares the budget of the acquisition it undoes: after Consul failed for the whole of it,
// the look gets one attempt within the same bound, not a budget of its own.
func (a *App) abandon(ctx context.Context, log *logrus.Entry, sem *lock.Semaphore, retry *consulRetry, rec lock.Record) {
	ctx = context.WithoutCancel(ctx)
	snap, err := readTier(ctx, sem, retry, "check for a slot taken")
	if err != nil {
		log.WithError(err).Warn("could not check whether a slot was taken; if one was, the next run re-enters it")
		return
	}
	held, ok := snap.Holders[rec.Holder]
	if !ok || held.RunID != rec.RunID {
		return
	}
	slot := &lock.Slot{Record: held}
	if held.Attempts == 1 {
		err = retry.do(ctx, "release", func(ctx context.Context) error { return sem.Release(ctx, slot) })
	} else {
		err = retry.do(ctx, "mark interrupted", func(ctx context.Context) error { return sem.MarkInterrupted(ctx, slot, nil) })
	}
	if err != nil {
		log.WithError(err).Warn("could not undo the slot taken; the next run re-enters it")
	}
}

// nodeName asks the local Consul agent for this host's node name, recorded in the slot so that
// `tierlock reap --consul-catalog` can tell when the host is gone. It is best effort: a slot
// without a node is still a slot, the catalog reaper just never judges it.
//
// It is asked once, within a quarter of --consul-timeout: with the acquisition's 1.25 × after
// its first failure, a Consul that stalls everything still sees the run end within 1.5 ×.
func (a *App) nodeName(ctx context.Context, log *logrus.Entry, client *api.Client, o runOptions) string {
	ctx, cancel := context.WithTimeout(ctx, min(consulclient.RequestTimeout(o.consulTimeout), o.consulTimeout/4))
	defer cancel()
	node, err := consulclient.NodeName(ctx, client)
	if err != nil {
		log.WithError(explain(err)).Warn("the slot records no Consul node: `tierlock reap --consul-catalog` will not judge it")
	}
	return node
}

// dryRun reads the tier and says what run would do. Exit 0 if it would run now, 75 if it would
// skip or wait, 78 if the tier is misconfigured.
func (a *App) dryRun(ctx context.Context, log *logrus.Entry, sem *lock.Semaphore, retry *consulRetry, o runOptions) int {
	snap, err := readTier(ctx, sem, retry, "read")
	if err != nil {
		log.WithError(err).Error("consul unavailable")
		return exitTempFail
	}
	if err := snap.Err(); err != nil {
		log.WithError(err).Error("tier misconfigured")
		return exitConfig
	}
	limit := fmt.Sprint(snap.Max)
	if snap.Max < 0 {
		limit = "unlimited"
	}
	d := snap.Decide(o.holder)
	what := map[lock.Decision]string{
		lock.Disabled: "would skip: the tier is disabled",
		lock.Reenter:  "would re-enter the slot it already holds and run",
		lock.Take:     "would take a slot and run",
		lock.Wait:     fmt.Sprintf("would wait up to %s for a slot, then run", o.wait),
	}[d]
	fmt.Fprintf(a.Stdout, "dry run: tier %s (max %s, %d held): %s %s %q\n",
		o.tier, limit, snap.Held(), o.holder, what, strings.Join(o.command, " "))
	if d == lock.Take || d == lock.Reenter {
		return exitOK
	}
	return exitTempFail
}

// readTier reads the tier, retrying Consul errors.
func readTier(ctx context.Context, sem *lock.Semaphore, retry *consulRetry, what string) (snap *lock.Snapshot, err error) {
	err = retry.do(ctx, what, func(ctx context.Context) (err error) {
		snap, err = sem.Read(ctx)
		return err
	})
	return snap, err
}

// cancelOnSignal cancels on the first SIGINT or SIGTERM until stop is called; stop returns
// that signal, or nil. Signals after stop are left for the runner to forward.
func (a *App) cancelOnSignal(cancel func()) (stop func() os.Signal) {
	done, finished := make(chan struct{}), make(chan struct{})
	var got os.Signal
	go func() {
		defer close(finished)
		select {
		case got = <-a.Signals:
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

// newRunID names one run in logs and in its record.
func newRunID() string {
	b := make([]byte, 4)
	_, _ = cryptorand.Read(b)
	return hex.EncodeToString(b)
}
