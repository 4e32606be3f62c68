package runner

import (
	"context"
	"errors"

	"github.com/tierlock/tierlock/internal/consulclient"
	"github.com/tierlock/tierlock/internal/hostfs"
	"github.com/tierlock/tierlock/lock"
)

// Kind is how a run ended. A Job decides it once, where it happens; the CLI maps each kind
// to its exit code, log line and metric label in one table.
type Kind int

const (
	// NotRun: the command did not run; Outcome.Why says why.
	NotRun Kind = iota
	// Succeeded: the command succeeded (and its health check passed) and its slot is free.
	Succeeded
	// Failed: the command failed, or could not start. Its slot stays held (state failed).
	Failed
	// Unhealthy: the command succeeded but its health check never passed. Its slot stays
	// held (state failed, unhealthy).
	Unhealthy
	// Interrupted: a signal or the timeout stopped the command. Its slot stays held.
	Interrupted
	// NotReleased: the command succeeded but its slot could not be released. It stays held;
	// the holder's next run re-enters it and releases it.
	NotReleased
)

// Why is why a run did not run.
type Why int

const (
	// Refused: a person must change something (bad stored values or names, a revision or
	// instance id that could not be found, Consul refusing by ACL or TLS); trying again will
	// not help.
	Refused Why = iota
	// Unavailable: Consul failed in a way that may pass (refused or reset connections,
	// timeouts, 429, 5xx) for the whole of the retry budget.
	Unavailable
	// Stopped: a signal came before the command started.
	Stopped
	// LocallyBusy: another tierlock run for the tier holds this host's lock.
	LocallyBusy
	// Disabled: the tier's max_concurrent is 0.
	Disabled
	// Full: no slot came free within the wait.
	Full
	// HeldBack: the tier's rollout did not admit this host's revision within the wait.
	HeldBack
	// Halted: this host's revision is halted in the tier.
	Halted
)

// WhyNot classifies err, which kept a command from running (or an operator command from
// doing its work).
func WhyNot(err error) Why {
	for _, c := range []struct {
		err error
		why Why
	}{
		{ErrStopped, Stopped}, {hostfs.ErrBusy, LocallyBusy}, {lock.ErrDisabled, Disabled},
		{lock.ErrNoSlot, Full}, {lock.ErrHeldBack, HeldBack}, {lock.ErrHalted, Halted},
	} {
		if errors.Is(err, c.err) {
			return c.why
		}
	}
	// Refusals are checked first: a refusal by TLS can look like a failed connection.
	if decided(err) || errors.Is(err, ErrNoRevision) || errors.Is(err, ErrNoInstanceID) ||
		consulclient.ACLProblem(err) != "" || consulclient.TLSProblem(err) != "" ||
		!consulclient.Retryable(context.Background(), err) {
		return Refused
	}
	return Unavailable
}

// kindOf is the kind of a run that ended with err, the command having run (ran) or not.
func kindOf(err error, ran bool) Kind {
	var failed *CommandError
	switch {
	case !ran:
		return NotRun
	case err == nil:
		return Succeeded
	case errors.Is(err, ErrNotReleased):
		return NotReleased
	case errors.As(err, &failed) && failed.Unhealthy:
		return Unhealthy
	case errors.As(err, &failed) && failed.Result.Interrupted():
		return Interrupted
	}
	return Failed
}
