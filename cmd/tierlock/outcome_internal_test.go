package main

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/tierlock/tierlock/internal/hostfs"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/monitor"
	"github.com/tierlock/tierlock/runner"
)

// Every kind of ending has its row, with a log line and a metric label Prometheus knows.
func TestEveryEndingHasARow(t *testing.T) {
	check := func(name string, r row, ok bool) {
		if !ok || r.line == "" || r.result == "" {
			t.Errorf("%s: row %+v (present %v)", name, r, ok)
		}
		known := false
		for _, res := range runResults {
			known = known || res == r.result
		}
		if !known {
			t.Errorf("%s: result %q is not one of %v", name, r.result, runResults)
		}
	}
	for k := runner.Succeeded; k <= runner.NotReleased; k++ {
		r, ok := ran[k]
		check(fmt.Sprint("kind ", k), r, ok)
	}
	for w := runner.Refused; w <= runner.Halted; w++ {
		r, ok := notRun[w]
		check(fmt.Sprint("why ", w), r, ok)
	}
}

func TestExitCodes(t *testing.T) {
	refusedConn := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"success", nil, 0},
		{"command failed", &runEnded{runner.Outcome{Kind: runner.Failed, Err: &runner.CommandError{Code: 3}}}, 3},
		{"unhealthy", &runEnded{runner.Outcome{Kind: runner.Unhealthy, Err: &runner.CommandError{Code: 1, Unhealthy: true}}}, 1},
		{"interrupted", &runEnded{runner.Outcome{Kind: runner.Interrupted, Err: &runner.CommandError{Code: 143}}}, 143},
		{"not released", &runEnded{runner.Outcome{Kind: runner.NotReleased, Err: runner.ErrNotReleased}}, 70},
		{"full", &runEnded{runner.Outcome{Kind: runner.NotRun, Why: runner.Full}}, 75},
		{"disabled", lock.ErrDisabled, 75},
		{"halted", fmt.Errorf("x: %w", lock.ErrHalted), 75},
		{"held back", lock.ErrHeldBack, 75},
		{"locally busy", hostfs.ErrBusy, 75},
		{"stopped", runner.ErrStopped, 75},
		{"consul refuses connections", refusedConn, 75},
		{"bad stored value", lock.ErrInvalidConfig, 78},
		{"no revision", runner.ErrNoRevision, 78},
		{"no instance id", runner.ErrNoInstanceID, 78},
		{"bad flag", usage("--wait %q: bad", "x"), 78},
		{"bad flag that wraps a retryable error", refuse(refusedConn), 78},
		{"said already", &said{lock.ErrNoSlot}, 75},
		{"nagios critical", &pluginStatus{monitor.Critical}, 2},
		{"anything else", errors.New("boom"), 78},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := exitCode(tc.err); got != tc.want {
				t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}
