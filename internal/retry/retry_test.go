package retry

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when slept on or told to.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }
func (c *fakeClock) sleep(_ context.Context, d time.Duration) error {
	c.t = c.t.Add(d)
	return nil
}

var errFlaky = errors.New("flaky")

func policy(c *fakeClock, timeout, request time.Duration) Policy {
	return Policy{Timeout: timeout, Request: request, Now: c.now, Sleep: c.sleep,
		Retryable: func(ctx context.Context, err error) bool { return ctx.Err() == nil && errors.Is(err, errFlaky) }}
}

// However each attempt fails (at once, after a successful read, or after hanging for the
// request timeout), the operation gives up within Timeout × Overrun of its first failure.
func TestBudgetBoundsAFailingOperation(t *testing.T) {
	const timeout = 10 * time.Second
	cases := []struct {
		name    string
		request time.Duration // the request bound
		takes   time.Duration // how long each attempt takes before failing
	}{
		{"refused at once", 3 * time.Second, 0},
		{"a read succeeds, then the write fails", 3 * time.Second, 50 * time.Millisecond},
		{"every request stalls until its timeout", 3333 * time.Millisecond, 3333 * time.Millisecond},
		{"a slow answer", 3 * time.Second, 2 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clock := &fakeClock{t: time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)}
			start := clock.t
			b := policy(clock, timeout, c.request).Budget()
			attempts := 0
			err := b.Do(context.Background(), "acquire", func(ctx context.Context) error {
				attempts++
				clock.t = clock.t.Add(c.takes)
				return errFlaky
			})
			if !errors.Is(err, ErrExhausted) || !errors.Is(err, errFlaky) {
				t.Fatalf("err = %v, want ErrExhausted wrapping the last error", err)
			}
			took := clock.t.Sub(start)
			if bound := time.Duration(float64(timeout) * Overrun); took > bound {
				t.Errorf("gave up after %s (%d attempts), want within %s", took, attempts, bound)
			}
			if took < timeout-5*time.Second-c.takes || attempts < 2 {
				t.Errorf("gave up after %s and %d attempts: too soon", took, attempts)
			}
		})
	}
}

// Every attempt after the first failure runs under the budget's deadline.
func TestBudgetDeadlinesAttemptsAfterAFailure(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	b := policy(clock, time.Minute, 0).Budget()
	var deadlines []bool
	_ = b.Do(context.Background(), "op", func(ctx context.Context) error {
		_, ok := ctx.Deadline()
		deadlines = append(deadlines, ok)
		if len(deadlines) == 3 {
			return nil
		}
		return errFlaky
	})
	if len(deadlines) != 3 || deadlines[0] || !deadlines[1] || !deadlines[2] {
		t.Errorf("deadlines of the attempts: %v, want none on the first, one on each retry", deadlines)
	}
}

// A budget spent by one operation leaves a later one (the look for a slot a lost answer
// took) only what is left of it, not a second budget: at least one attempt, and nothing
// past the same bound.
func TestBudgetIsShared(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	start := clock.t
	b := policy(clock, 10*time.Second, 0).Budget()
	fail := func(context.Context) error { clock.t = clock.t.Add(10 * time.Millisecond); return errFlaky }
	if err := b.Do(context.Background(), "acquire", fail); !errors.Is(err, ErrExhausted) {
		t.Fatal(err)
	}
	clock.t = start.Add(10 * time.Second)
	attempts := 0
	err := b.Do(context.Background(), "check", func(ctx context.Context) error { attempts++; return fail(ctx) })
	if !errors.Is(err, ErrExhausted) || attempts != 1 {
		t.Errorf("the second operation after the budget ran out: %d attempts, %v; want 1 and ErrExhausted", attempts, err)
	}
}

func TestBudgetStopsAtOnce(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	permanent := errors.New("permission denied")
	b := policy(clock, time.Minute, 0).Budget()
	attempts := 0
	if err := b.Do(context.Background(), "op", func(context.Context) error { attempts++; return permanent }); err != permanent || attempts != 1 {
		t.Errorf("a refusal: %d attempts, %v", attempts, err)
	}
	// A cancelled context (a signal) ends the retries during the backoff.
	ctx, cancel := context.WithCancel(context.Background())
	p := policy(clock, time.Minute, 0)
	p.Sleep = func(ctx context.Context, d time.Duration) error { cancel(); return ctx.Err() }
	attempts = 0
	err := p.Budget().Do(ctx, "release", func(context.Context) error { attempts++; return errFlaky })
	if !errors.Is(err, context.Canceled) || attempts != 1 {
		t.Errorf("cancelled while backing off: %d attempts, %v", attempts, err)
	}
}

// A refused connection gives up after Refused; any other failure restores the whole budget.
func TestBudgetRefused(t *testing.T) {
	refused := fmt.Errorf("dial: %w", syscall.ECONNREFUSED)
	for _, tc := range []struct {
		name string
		errs []error // the failures, in turn; the last repeats
		max  time.Duration
		min  time.Duration
	}{
		{name: "refused only", errs: []error{refused}, min: 2 * time.Second, max: 5 * time.Second},
		{name: "refused then timeouts", errs: []error{refused, refused, errFlaky}, min: 50 * time.Second, max: 60 * time.Second},
		{name: "timeouts only", errs: []error{errFlaky}, min: 50 * time.Second, max: 60 * time.Second},
	} {
		// Backoff's jitter decides how far short of the budget the last retry stops: at most
		// one interval (5 s at the most) short, never past it.
		t.Run(tc.name, func(t *testing.T) {
			c := &fakeClock{t: time.Unix(1e9, 0)}
			p := policy(c, time.Minute, 0)
			p.Refused = 5 * time.Second
			p.Retryable = func(context.Context, error) bool { return true }
			start, i := c.now(), 0
			err := p.Budget().Do(context.Background(), "read", func(context.Context) error {
				e := tc.errs[min(i, len(tc.errs)-1)]
				i++
				return e
			})
			if !errors.Is(err, ErrExhausted) {
				t.Fatalf("err %v", err)
			}
			if took := c.now().Sub(start); took < tc.min || took > tc.max {
				t.Errorf("gave up after %s, want %s..%s", took, tc.min, tc.max)
			}
		})
	}
}
