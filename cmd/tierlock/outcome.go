package main

import (
	"errors"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/tierlock/tierlock/internal/consulclient"
	"github.com/tierlock/tierlock/monitor"
	"github.com/tierlock/tierlock/runner"
)

// How every command ends comes out of this file: runner decides a run's kind of ending where
// it happens (runner.Kind, and runner.Why when nothing ran), and the tables below put each
// kind to a shell (the exit code), a person (the log line) and Prometheus (the result label
// of --metrics-file). The other commands' errors are classified the same way (exitCode).

// Exit codes (sysexits.h), as documented in docs/operating.md. A failed command of run exits
// with the command's own code (ownCode); `check` exits with its Nagios status.
const (
	exitOK       = 0
	exitSoftware = 70 // the command succeeded but its slot could not be released
	exitTempFail = 75 // skipped, nothing ran; or Consul unavailable: try again later
	exitConfig   = 78 // bad flags, invalid stored values, bad names, refused by Consul
	ownCode      = -1
)

// row is how one kind of ending is put.
type row struct {
	code  int
	level logrus.Level
	// line is the log line; a %s in it is the ending's detail (see detail).
	line string
	// result is the tierlock_run_last_result label.
	result string
	// unrecorded is said when the outcome could not be recorded as it should have been
	// (Outcome.Recording).
	unrecorded string
}

var ran = map[runner.Kind]row{
	runner.Succeeded: {exitOK, logrus.InfoLevel, "command succeeded; slot released", "success",
		"command succeeded; its slot was already freed (by an operator or the reaper?)"},
	runner.Failed: {ownCode, logrus.ErrorLevel, "command failed; slot stays held (state failed) until a run succeeds or an operator releases it", "failed",
		"could not record the failure; the slot stays held"},
	runner.Unhealthy: {ownCode, logrus.ErrorLevel, "command succeeded but its health check did not pass within --health-timeout %s; slot stays held (state unhealthy)", "failed",
		"could not record the failed health check; the slot stays held"},
	runner.Interrupted: {ownCode, logrus.WarnLevel, "command interrupted %s; slot stays held (state interrupted)", "interrupted",
		"could not record the interruption; the slot stays held"},
	runner.NotReleased: {exitSoftware, logrus.ErrorLevel, "command succeeded but %s; it stays held and the next run re-enters and releases it", "error", ""},
}

// undone is said of a run that did not run whose acquisition could not be undone.
const undone = "could not undo what the acquisition may have taken; if it took the slot, the next run re-enters it"

// notRun are the runs, and the commands, that did not do their work: 75 when the next try may
// find it otherwise, 78 when a person must change something first.
var notRun = map[runner.Why]row{
	runner.Refused:     {exitConfig, logrus.ErrorLevel, "nothing ran", "error", undone},
	runner.Unavailable: {exitTempFail, logrus.ErrorLevel, "consul unavailable; nothing ran", "skipped", undone},
	runner.Stopped:     {exitTempFail, logrus.WarnLevel, "stopped by %s before the command started; nothing ran", "skipped", undone},
	runner.LocallyBusy: {exitTempFail, logrus.WarnLevel, "another tierlock run for this tier is active on this host; nothing ran", "skipped", undone},
	runner.Disabled:    {exitTempFail, logrus.InfoLevel, "tier disabled (max_concurrent 0); nothing ran", "skipped", undone},
	runner.Full:        {exitTempFail, logrus.WarnLevel, "no slot within --wait; nothing ran", "skipped", undone},
	runner.HeldBack:    {exitTempFail, logrus.WarnLevel, "the rollout did not admit this host within --wait; nothing ran", "skipped", undone},
	runner.Halted:      {exitTempFail, logrus.ErrorLevel, "the revision is halted in this tier; nothing ran", "skipped", undone},
}

// ending is out's row, with its exit code: the command's own where the row says so.
func ending(out runner.Outcome) row {
	if out.Kind == runner.NotRun {
		return notRun[out.Why]
	}
	r := ran[out.Kind]
	var failed *runner.CommandError
	if r.code == ownCode && errors.As(out.Err, &failed) {
		r.code = failed.Code
	}
	return r
}

// detail is what fills the %s of out's log line.
func detail(out runner.Outcome, o runOptions) string {
	switch {
	case out.Kind == runner.NotRun && out.Signal != nil:
		return out.Signal.String()
	case out.Kind == runner.NotRun:
		return "a signal"
	case out.Kind == runner.Unhealthy:
		return o.healthTimeout.String()
	case out.Kind == runner.Interrupted && out.Result.TimedOut && out.Result.Forwarded == nil:
		return fmt.Sprintf("by the --timeout of %s", o.timeout)
	case out.Kind == runner.Interrupted:
		return "by a signal"
	case out.Kind == runner.NotReleased && out.Signal != nil:
		return fmt.Sprintf("%v stopped the release", out.Signal)
	}
	return "the slot could not be released"
}

// exitCode is the exit code of a command that returned err.
func exitCode(err error) int {
	var (
		status *pluginStatus
		ended  *runEnded
	)
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &status):
		return int(status.status)
	case errors.As(err, &ended):
		return ending(ended.out).code
	}
	return notRun[whyNot(err)].code
}

// whyNot is why err kept a command from doing its work.
func whyNot(err error) runner.Why {
	var (
		refused *refusal
		bad     *badInput
	)
	if errors.As(err, &refused) || errors.As(err, &bad) {
		return runner.Refused
	}
	return runner.WhyNot(err)
}

// unavailable reports whether err is Consul failing in a way that may pass.
func unavailable(err error) bool {
	return whyNot(err) == runner.Unavailable
}

// fail is err as a command's error: explained (see explain), and said to be Consul's
// unavailability when it is one.
func fail(err error) error {
	if err == nil {
		return nil
	}
	err = explain(err)
	if unavailable(err) {
		return fmt.Errorf("consul unavailable: %w", err)
	}
	return err
}

// badInput is a bad flag, argument or setting: a person must change it (exit 78).
type badInput struct{ err error }

func (e *badInput) Error() string { return e.err.Error() }
func (e *badInput) Unwrap() error { return e.err }

// refuse is err as bad input.
func refuse(err error) error { return &badInput{err: err} }

// usage is a bad flag or argument, named.
func usage(format string, args ...any) error { return refuse(fmt.Errorf(format, args...)) }

// runEnded is a run that did not succeed, already logged: its exit code is its row's.
type runEnded struct{ out runner.Outcome }

func (e *runEnded) Error() string { return fmt.Sprintf("run ended: %v", e.out.Err) }

// pluginStatus is `check`'s Nagios status, already printed: the plugin's exit code is its
// status by the plugin API's definition.
type pluginStatus struct{ status monitor.Status }

func (e *pluginStatus) Error() string { return fmt.Sprintf("status %d", e.status) }

// said is err, already logged: nothing more is printed, and the exit code is err's.
type said struct{ err error }

func (e *said) Error() string { return e.err.Error() }
func (e *said) Unwrap() error { return e.err }

// message is what is printed of err, or "" when it has been said already.
func message(err error) string {
	var (
		s      *said
		ended  *runEnded
		status *pluginStatus
	)
	if errors.As(err, &s) || errors.As(err, &ended) || errors.As(err, &status) {
		return ""
	}
	return err.Error()
}

// explain puts Consul's refusals by ACL and TLS failures in one sentence that names what to
// fix (consulclient.ACLProblem, TLSProblem), keeping the error underneath for errors.Is;
// other errors pass unchanged.
func explain(err error) error {
	p := consulclient.ACLProblem(err)
	if p == "" {
		p = consulclient.TLSProblem(err)
	}
	if p != "" {
		return &refusal{msg: p, err: err}
	}
	return err
}

// refusal is an error explain explained: a configuration problem, not an outage.
type refusal struct {
	msg string
	err error
}

func (e *refusal) Error() string { return e.msg }
func (e *refusal) Unwrap() error { return e.err }
