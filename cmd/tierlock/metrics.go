package main

import (
	"errors"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tierlock/tierlock/runner"
)

// runReport is what --metrics-file records of a run.
type runReport struct {
	result   string        // success, failed, interrupted; empty when the command never ran
	duration time.Duration // the command's run time
	waited   time.Duration // time spent getting the slot
}

// record takes the report's figures from how the job ended.
func (r *runReport) record(out runner.Outcome) {
	r.waited = out.Waited
	if !out.Ran() {
		return
	}
	r.duration = out.Result.Duration
	switch {
	case out.Result.Interrupted():
		r.result = "interrupted"
	case out.Err == nil, errors.Is(out.Err, runner.ErrNotReleased):
		r.result = "success" // write makes a success whose slot is still held an error
	default:
		r.result = "failed"
	}
}

var runResults = []string{"success", "failed", "interrupted", "skipped", "error"}

// write replaces path atomically (a temporary file renamed over it), so the textfile collector
// never reads half a file; see writeFileAtomic for why it never follows a link.
func (r runReport) write(path, tier string, code int, now time.Time) error {
	result := r.result
	if result == "" {
		result = "error"
		if code == exitTempFail {
			result = "skipped"
		}
	}
	if result == "success" && code == exitSoftware {
		result = "error" // the command succeeded but its slot is still held
	}
	reg := prometheus.NewRegistry()
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, append([]string{"tier"}, labels...))
		reg.MustRegister(g)
		return g
	}
	gauge("tierlock_run_last_exit_code", "Exit code of tierlock's last run.").WithLabelValues(tier).Set(float64(code))
	res := gauge("tierlock_run_last_result", "1 for the result of the last run: success, failed, interrupted, skipped (nothing ran) or error.", "result")
	for _, name := range runResults {
		v := 0.0
		if name == result {
			v = 1
		}
		res.WithLabelValues(tier, name).Set(v)
	}
	gauge("tierlock_run_last_duration_seconds", "Run time of the last run's command (0 if it did not run).").WithLabelValues(tier).Set(r.duration.Seconds())
	gauge("tierlock_run_last_wait_seconds", "Time the last run waited for its slot.").WithLabelValues(tier).Set(r.waited.Seconds())
	gauge("tierlock_run_last_timestamp_seconds", "When the last run ended, in Unix seconds.").WithLabelValues(tier).Set(float64(now.Unix()))
	// Not prometheus.WriteToTextfile: it chmods its temporary file by path, so whoever can
	// write the directory could have root make a file of their choosing world-readable.
	return writeFileAtomic(path, 0o644, func(w io.Writer) error { return writeMetrics(w, reg) })
}
