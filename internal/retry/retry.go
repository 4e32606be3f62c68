// Package retry is tierlock's one policy for Consul errors that may pass (connection refused
// or reset, timeouts, 429, 5xx): exponential backoff with jitter, bounded from an operation's
// first failure, whatever succeeds in between. cmd/tierlock and cmd/tierlock-reaper both use
// it, so a run, an operator command, `reap` and the Lambda give up within the same bound.
package retry

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/tierlock/tierlock/internal/consulclient"
)

// ErrExhausted is wrapped by the error of an operation that gave up because Consul kept
// failing for its whole budget; the last Consul error is wrapped too.
var ErrExhausted = errors.New("retry: consul kept failing")

// Overrun is how far past its Timeout a Budget lets an attempt in flight run: no attempt
// starts after Timeout from the first failure, and none runs past Timeout × Overrun. What
// is left of 1.5 × Timeout is for the caller to record the outcome and exit.
const Overrun = 1.25

// Policy is how one command retries.
type Policy struct {
	// Timeout is the budget: from an operation's first failure, it gives up within
	// Timeout × Overrun. Required.
	Timeout time.Duration
	// Request bounds one Consul request. A failure is dated from when its request may have
	// started (a stall fails only when the request times out), so the budget counts the time
	// the failing request hung. Zero: failures are dated when they are seen.
	Request time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Sleep waits d or until ctx is done. Default: a timer.
	Sleep func(ctx context.Context, d time.Duration) error
	// Notify, if set, is told of each failure that will be retried, and after how long.
	Notify func(what string, err error, next time.Duration)
	// Retryable says which errors may pass. Default consulclient.Retryable.
	Retryable func(ctx context.Context, err error) bool
	// Refused, if positive, is a shorter budget while every failure so far is a refused
	// connection: nothing listens at the address, which a person at a terminal wants to hear
	// within seconds, not after the whole Timeout. Any other failure restores Timeout.
	Refused time.Duration
}

// Budget is the allowance of one operation (or of several that share it, such as taking a
// slot and then checking whether a lost answer took one). It is not safe for concurrent use.
type Budget struct {
	p     Policy
	first time.Time // the first failure; zero until one
	other bool      // a failure other than a refused connection was seen
}

// Budget returns a fresh budget: nothing has failed yet.
func (p Policy) Budget() *Budget {
	if p.Now == nil {
		p.Now = time.Now
	}
	if p.Sleep == nil {
		p.Sleep = sleep
	}
	if p.Retryable == nil {
		p.Retryable = consulclient.Retryable
	}
	return &Budget{p: p}
}

// Timeout is the policy's budget.
func (b *Budget) Timeout() time.Duration { return b.p.Timeout }

// Do runs op until it succeeds, fails in a way retrying cannot help, ctx is done, or the
// budget is spent (ErrExhausted, with the last error). Once the budget has a first failure,
// every attempt runs under a deadline of first failure + Timeout × Overrun, so an attempt
// that reads fine and then hangs on a write cannot outlast the bound. A budget spent by an
// earlier Do still allows one attempt, within that same deadline.
func (b *Budget) Do(ctx context.Context, what string, op func(context.Context) error) error {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.MaxElapsedTime = 100*time.Millisecond, 5*time.Second, 0
	bo.Reset()
	for {
		start := b.p.Now()
		err := b.attempt(ctx, op)
		if err == nil {
			return nil
		}
		if !b.p.Retryable(ctx, err) {
			return err
		}
		now := b.p.Now()
		if b.first.IsZero() {
			b.first = start
			if b.p.Request > 0 && now.Add(-b.p.Request).After(start) {
				b.first = now.Add(-b.p.Request)
			}
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			b.other = true
		}
		next := bo.NextBackOff()
		if b.p.Refused > 0 && !b.other && now.Add(next).After(b.first.Add(b.p.Refused)) {
			return fmt.Errorf("%s: %w: connections refused for %s (is the Consul agent running at CONSUL_HTTP_ADDR?): %w",
				what, ErrExhausted, b.p.Refused, err)
		}
		if now.Add(next).After(b.first.Add(b.p.Timeout)) {
			return fmt.Errorf("%s: %w for longer than %s: %w", what, ErrExhausted, b.p.Timeout, err)
		}
		if b.p.Notify != nil {
			b.p.Notify(what, err, next)
		}
		if serr := b.p.Sleep(ctx, next); serr != nil {
			return fmt.Errorf("%s: stopped while retrying (%w): %w", what, serr, err)
		}
	}
}

// attempt runs op once, under the budget's deadline once something has failed.
func (b *Budget) attempt(ctx context.Context, op func(context.Context) error) error {
	if b.first.IsZero() {
		return op(ctx)
	}
	hard := b.first.Add(time.Duration(float64(b.p.Timeout) * Overrun))
	// The deadline is on the real clock: the context's timers run on it.
	ctx, cancel := context.WithTimeout(ctx, hard.Sub(b.p.Now()))
	defer cancel()
	return op(ctx)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
