package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/tierlock/tierlock/internal/consulclient"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/runner"
)

// Every command's error comes out through exitCode: this file is the one place that says which
// failure is which exit code, and how it is put to a person.

// Exit codes (sysexits.h), as documented in docs/operating.md. A failed command of run exits
// with the command's own code.
const (
	exitOK       = 0
	exitSoftware = 70 // the command succeeded but its slot could not be released
	exitTempFail = 75 // skipped, nothing ran; or Consul unavailable: try again later
	exitConfig   = 78 // bad flags, invalid stored values, bad names, refused by Consul
)

// exitCode is the exit code of a command that returned err.
func exitCode(err error) int {
	var (
		ee      *exitError
		failed  *runner.CommandError
		refused *refusal
	)
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code // decided where it happened: a Nagios status, a usage error
	case errors.As(err, &failed):
		return failed.Code
	case errors.Is(err, runner.ErrNotReleased):
		return exitSoftware
	case errors.Is(err, runner.ErrStopped), errors.Is(err, errLocallyBusy),
		errors.Is(err, lock.ErrDisabled), errors.Is(err, lock.ErrNoSlot),
		errors.Is(err, lock.ErrHalted), errors.Is(err, lock.ErrHeldBack):
		return exitTempFail // nothing ran, and the next timer may find it otherwise
	case errors.As(err, &refused), errors.Is(err, lock.ErrInvalidConfig), errors.Is(err, lock.ErrInvalidName),
		errors.Is(err, lock.ErrRejected), errors.Is(err, lock.ErrTooManyKeys):
		return exitConfig // a person must change something: trying again will not help
	case unavailable(err):
		return exitTempFail
	}
	return exitConfig
}

// unavailable reports whether err is Consul failing in a way that may pass (refused or reset
// connections, timeouts, 429, 5xx), rather than refusing.
func unavailable(err error) bool {
	return consulclient.Retryable(context.Background(), err)
}

// fail is err as a command's error: explained (see explain), and said to be Consul's
// unavailability when it is one.
func fail(err error) error {
	if err == nil {
		return nil
	}
	err = explain(err)
	if exitCode(err) == exitTempFail && unavailable(err) {
		return fmt.Errorf("consul unavailable: %w", err)
	}
	return err
}

// exitError is an error with its exit code decided where it happened; err nil means there is
// nothing more to print (the command has said it, or logged it).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

func exitWith(code int, err error) error { return &exitError{code: code, err: err} }

// usage is a bad flag or argument: exit 78, naming it.
func usage(format string, args ...any) error {
	return exitWith(exitConfig, fmt.Errorf(format, args...))
}

// message is what is printed of err, or "" when it has been said already.
func message(err error) string {
	var ee *exitError
	if errors.As(err, &ee) && ee.err == nil {
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
