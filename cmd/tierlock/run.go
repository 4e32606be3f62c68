package main

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
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

// run is `tierlock run` after its flags were checked (docs/operating.md): hold the tier's
// local lock, splay, describe the run, and hand it to a runner.Job. It logs what happened
// and returns the exit code.
func (a *App) run(ctx context.Context, logger *logrus.Logger, o runOptions, rep *runReport) int {
	runID := newRunID()
	log := logger.WithFields(logrus.Fields{"run_id": runID, "tier": o.tier, "holder": o.holder})

	unlock, err := lockLocally(o.stateDir, o.tier)
	if err != nil {
		return logged(log, err)
	}
	defer unlock()
	client, err := consulclient.New()
	if err != nil {
		return logged(log, err)
	}
	retry := a.newRetry(o.consulTimeout, log)
	sem, err := lock.New(client.KV(), lock.Options{
		Prefix: o.prefix, Tier: o.tier, DefaultMax: o.defaultMax, QueueOrder: o.queueOrder, QueueTTL: o.queueTTL,
		RequestTimeout: consulclient.RequestTimeout(o.consulTimeout), Now: a.Now, Sessions: client.Session(),
	})
	if err != nil {
		return logged(log, err)
	}

	// Until the job starts, a signal means: stop, nothing ran.
	before, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := runner.OnSignal(a.Signals, cancel)
	if o.splay > 0 {
		d := rand.N(o.splay)
		log.Debugf("splay: sleeping %s", d.Round(time.Millisecond))
		select {
		case <-before.Done():
		case <-time.After(d):
		}
	}
	if sig := stop(); sig != nil {
		log.Warnf("stopped by %v before starting; nothing ran", sig)
		return exitTempFail
	}
	if o.dryRun {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		defer runner.OnSignal(a.Signals, cancel)()
		return a.dryRun(ctx, log, sem, retry, o)
	}
	req, err := a.describe(ctx, log, client, o, runID)
	if err != nil {
		return logged(log, err)
	}

	job := &runner.Job{
		Slots: sem, Request: req, Retry: retry.policy, Signals: a.Signals, Now: a.Now,
		Command: runner.Command{
			Path: o.path, Args: o.command[1:], Env: commandEnv(os.Environ(), o.passConsulToken),
			Stdin: os.Stdin, Stdout: a.Stdout, Stderr: a.Stderr, Timeout: o.timeout, KillGrace: o.killGrace,
		},
		Success: func(code int) bool { return o.successCodes[code] },
		Acquired: func(slot *lock.Slot, waited time.Duration) {
			what := "slot acquired"
			if slot.Reentered {
				what = "re-entered the slot an earlier run left held"
			}
			l := log.WithField("attempt", slot.Attempts)
			if slot.Revision != "" {
				l = l.WithField("revision", slot.Revision)
				if slot.Batch != nil {
					what += fmt.Sprintf(" as a mover to %s (rollout step %d)", slot.Revision, *slot.Batch)
				}
			}
			l.Infof("%s (waited %s)", what, waited.Round(time.Millisecond))
		},
	}
	if len(o.healthCommand) > 0 {
		path, _ := exec.LookPath(o.healthCommand[0])
		job.Health = &runner.Health{Timeout: o.healthTimeout, Interval: o.healthInterval, Command: runner.Command{
			Path: path, Args: o.healthCommand[1:], Env: commandEnv(os.Environ(), o.passConsulToken),
			Stdout: a.Stdout, Stderr: a.Stderr,
		}}
	}
	waiting := false
	job.Request.Waiting = func(s *lock.Snapshot) {
		if !waiting {
			waiting = true
			if d := s.Decide(o.holder, req.Revision); d == lock.HeldBack {
				log.Infof("revision %s: the rollout (%s) does not admit this host yet, waiting up to %s", req.Revision, rolloutLine(s), o.wait)
			} else {
				log.Infof("tier full (%d of %d slots held), waiting up to %s", s.Held(), s.Max, o.wait)
			}
			if newer := s.Newer(); len(newer) > 0 {
				log.Warnf("the tier has hosts of a newer waiting protocol than this tierlock's %d (%s): they are ranked, but this host hands them no slot; they take their own", lock.Protocol, strings.Join(newer, ", "))
			}
		}
	}
	out := job.Run(ctx)
	rep.record(out)
	return logOutcome(log, out, o)
}

// describe is the run's record: who, where, what, and the instance and Consul node the
// reapers judge it by. A signal while it asks stops the run.
func (a *App) describe(ctx context.Context, log *logrus.Entry, client *api.Client, o runOptions, runID string) (lock.Request, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := runner.OnSignal(a.Signals, cancel)
	defer stop()
	instanceID := o.instanceID
	if instanceID == "imds" {
		id, err := imds.InstanceID(ctx, imds.Endpoint())
		if err == nil {
			err = lock.ValidateName("instance id", id)
		}
		if sig := stop(); sig != nil {
			return lock.Request{}, fmt.Errorf("%w: %v", runner.ErrStopped, sig)
		}
		if err != nil {
			return lock.Request{}, usage("--instance-id imds: %v", err)
		}
		instanceID = id
	}
	revision, err := a.revisionOf(ctx, o)
	if sig := stop(); sig != nil {
		return lock.Request{}, fmt.Errorf("%w: %v", runner.ErrStopped, sig)
	}
	if err != nil {
		return lock.Request{}, err
	}
	hostname, _ := os.Hostname()
	node := a.nodeName(ctx, log, client, o)
	if sig := stop(); sig != nil {
		return lock.Request{}, fmt.Errorf("%w: %v", runner.ErrStopped, sig)
	}
	return lock.Request{
		Record: lock.Record{
			Holder: o.holder, Hostname: hostname, InstanceID: instanceID, Node: node, PID: os.Getpid(),
			Command: strings.Join(o.command, " "), RunID: runID, Version: "tierlock " + a.Build.Version,
			Revision: revision,
		},
		WaitUntil: a.Now().Add(o.wait),
	}, nil
}

// logged logs err, which stopped the run before the job, and returns its exit code.
func logged(log *logrus.Entry, err error) int {
	code := exitCode(err)
	if code == exitTempFail { // stopped by a signal, or another run holds the local lock
		log.Warn(err)
	} else {
		log.Error(message(err))
	}
	return code
}

// logOutcome says how the job ended, and returns the exit code.
func logOutcome(log *logrus.Entry, out runner.Outcome, o runOptions) int {
	if !out.Ran() {
		logNotRun(log, out)
		return exitCode(out.Err)
	}
	res := out.Result
	log = log.WithFields(logrus.Fields{"attempt": out.Slot.Attempts, "exit_code": res.Code(), "duration": res.Duration.Round(time.Millisecond).String()})
	failed := (*runner.CommandError)(nil)
	if errors.As(out.Err, &failed) && failed.Start != nil {
		log.Error(failed.Start)
	}
	switch {
	case res.Interrupted():
		if out.Recording != nil {
			log.WithError(explain(out.Recording)).Error("could not record the interruption; the slot stays held")
		}
		how := "by a signal"
		if res.TimedOut {
			how = fmt.Sprintf("by the --timeout of %s", o.timeout)
		}
		log.Warnf("command interrupted %s; slot stays held (state interrupted)", how)
	case out.Err == nil && out.Recording != nil:
		log.Warn("command succeeded; its slot was already freed (by an operator or the reaper?)")
	case out.Err == nil:
		log.Info("command succeeded; slot released")
	case errors.Is(out.Err, runner.ErrNotReleased) && out.Signal != nil:
		log.WithError(out.Err).Errorf("command succeeded but %v stopped the release; the slot stays held and the next run re-enters and releases it", out.Signal)
	case errors.As(out.Err, &failed) && failed.Unhealthy:
		if out.Recording != nil {
			log.WithError(explain(out.Recording)).Error("could not record the failed health check; the slot stays held")
		}
		log.WithField("health_exit_code", failed.Health.Code()).Errorf("command succeeded but its health check did not pass within --health-timeout %s; slot stays held (state unhealthy)", o.healthTimeout)
	case errors.Is(out.Err, runner.ErrNotReleased):
		log.WithError(explain(errors.Unwrap(out.Err))).Error("command succeeded but the slot could not be released; it stays held and the next run re-enters and releases it")
	default:
		if out.Recording != nil {
			log.WithError(explain(out.Recording)).Error("could not record the failure; the slot stays held")
		}
		log.Error("command failed; slot stays held (state failed) until a run succeeds or an operator releases it")
	}
	return exitCode(out.Err)
}

// logNotRun says why the command did not run.
func logNotRun(log *logrus.Entry, out runner.Outcome) {
	err := explain(out.Err)
	var refused *refusal
	switch {
	case out.Signal != nil:
		log.Warnf("stopped by %v before the command started; nothing ran", out.Signal)
	case errors.Is(err, lock.ErrDisabled):
		log.Info("tier disabled (max_concurrent 0); nothing ran")
	case errors.Is(err, lock.ErrNoSlot):
		log.WithError(err).Warn("no slot within --wait; nothing ran")
	case errors.Is(err, lock.ErrHalted):
		log.WithError(err).Error("the revision is halted in this tier; nothing ran")
	case errors.Is(err, lock.ErrHeldBack):
		log.WithError(err).Warn("the rollout did not admit this host within --wait; nothing ran")
	case errors.As(err, &refused), exitCode(err) == exitConfig:
		log.WithError(err).Error("nothing ran")
	default:
		log.WithError(err).Error("consul unavailable; nothing ran")
	}
	if out.Recording != nil {
		log.WithError(explain(out.Recording)).Warn("could not undo what the acquisition may have taken; if it took the slot, the next run re-enters it")
	}
}

// nodeName is this host's Consul node name, recorded in the slot so that `tierlock reap
// --consul-catalog` can tell when the host is gone. It is best effort: a slot without a node
// is still a slot, the catalog reaper just never judges it.
//
// The agent is asked at every run, never a name kept from an earlier one: an agent renamed
// between runs (a first chef run that sets the hostname and restarts it) would otherwise have
// the slot name a node that is gone, and the catalog reaper free a live host's failed slot.
// The agent answers /v1/agent/self itself: it costs the servers nothing. It is asked within a
// quarter of --consul-timeout: with the acquisition's 1.25 × after its first failure, a
// Consul that stalls everything still sees the run end within 1.5 ×.
func (a *App) nodeName(ctx context.Context, log *logrus.Entry, client *api.Client, o runOptions) string {
	ctx, cancel := context.WithTimeout(ctx, min(consulclient.RequestTimeout(o.consulTimeout), o.consulTimeout/4))
	defer cancel()
	node, err := consulclient.NodeName(ctx, client)
	if err != nil {
		log.WithError(explain(err)).Warn("the slot records no Consul node: `tierlock reap --consul-catalog` will not judge it")
		return ""
	}
	return node
}

// dryRun reads the tier and says what run would do. Exit 0 if it would run now, 75 if it would
// skip or wait, 78 if the tier is misconfigured; a read that fails exits as a real run's would
// (75 when Consul may come back, 78 when it refuses: an ACL, TLS), through the same mapping.
func (a *App) dryRun(ctx context.Context, log *logrus.Entry, sem *lock.Semaphore, retry *consulRetry, o runOptions) int {
	snap, err := readTier(ctx, sem, retry, "read")
	if err != nil {
		logNotRun(log, runner.Outcome{Err: err})
		return exitCode(explain(err))
	}
	if err := snap.Err(); err != nil {
		log.WithError(err).Error("tier misconfigured")
		return exitConfig
	}
	limit := fmt.Sprint(snap.Max)
	if snap.Max < 0 {
		limit = "unlimited"
	}
	rev, err := a.revisionOf(ctx, o)
	if err != nil {
		log.Error(message(err))
		return exitCode(err)
	}
	d := snap.Decide(o.holder, rev)
	what := map[lock.Decision]string{
		lock.Halted:   fmt.Sprintf("would skip: revision %s is halted", rev),
		lock.HeldBack: fmt.Sprintf("would wait up to %s for the rollout to admit revision %s", o.wait, rev),
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

// revisionOf is the revision this run applies: --revision, or what --revision-command
// prints (trimmed), within --revision-timeout. A command that fails, times out or prints
// nothing usable stops the run (exit 78): a run that names no revision would bypass the
// rollout.
func (a *App) revisionOf(ctx context.Context, o runOptions) (string, error) {
	if len(o.revisionCommand) == 0 {
		return o.revision, nil
	}
	path, _ := exec.LookPath(o.revisionCommand[0])
	rev, err := runner.Revision(ctx, runner.Command{Path: path, Args: o.revisionCommand[1:], Env: commandEnv(os.Environ(), false),
		Stderr: a.Stderr, Timeout: o.revisionTimeout})
	if err != nil {
		return "", usage("--revision-command %q (--revision-timeout %s): %v; nothing ran", strings.Join(o.revisionCommand, " "), o.revisionTimeout, err)
	}
	return rev, nil
}

// newRunID names one run in logs and in its record.
func newRunID() string {
	b := make([]byte, 4)
	_, _ = cryptorand.Read(b)
	return hex.EncodeToString(b)
}
