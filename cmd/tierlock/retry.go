package main

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tierlock/tierlock/internal/consulclient"
	bounded "github.com/tierlock/tierlock/internal/retry"
	"github.com/tierlock/tierlock/lock"
)

// consulRetry retries Consul operations that fail for reasons that may pass, by the policy of
// internal/retry: backoff with jitter, and from the first failure of an operation, giving up
// within 1.5 × --consul-timeout whatever succeeds in between (a read that works while every
// write fails does not buy more time). Operations done with one consulRetry share its budget:
// a command is one operation. A run hands the policy to runner.Job, which gives taking the
// slot and recording the outcome a budget each.
type consulRetry struct {
	policy bounded.Policy
	budget *bounded.Budget
	log    *logrus.Entry
}

func (a *App) newRetry(timeout time.Duration, log *logrus.Entry) *consulRetry {
	r := &consulRetry{log: log}
	r.policy = bounded.Policy{
		Timeout: timeout, Request: consulclient.RequestTimeout(timeout), Now: a.Now,
		Notify: func(what string, err error, next time.Duration) {
			r.log.WithError(err).Warnf("%s: consul error, retrying in %s", what, next.Round(time.Millisecond))
		},
	}
	r.budget = r.policy.Budget()
	return r
}

// refusedBudget is how long a command a person types (status, check, the operator commands)
// keeps trying while every connection is refused: nothing listens at CONSUL_HTTP_ADDR, and
// that is worth saying at once. Timeouts, resets, 429s and 5xx keep the whole budget.
const refusedBudget = 5 * time.Second

// interactive gives r the short budget for refused connections.
func (r *consulRetry) interactive() *consulRetry {
	r.policy.Refused = min(refusedBudget, r.policy.Timeout)
	r.budget = r.policy.Budget()
	return r
}

func (r *consulRetry) do(ctx context.Context, what string, op func(context.Context) error) error {
	return r.budget.Do(ctx, what, op)
}

// readTier reads the tier, retrying Consul errors.
func readTier(ctx context.Context, sem *lock.Semaphore, retry *consulRetry, what string) (snap *lock.Snapshot, err error) {
	err = retry.do(ctx, what, func(ctx context.Context) (err error) {
		snap, err = sem.Read(ctx)
		return err
	})
	return snap, err
}
