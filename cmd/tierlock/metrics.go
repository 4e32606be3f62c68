package main

import (
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tierlock/tierlock/internal/hostfs"
	"github.com/tierlock/tierlock/runner"
)

var runResults = []string{"success", "failed", "interrupted", "skipped", "error"}

// writeRunMetrics writes what --metrics-file records of a run: its exit code and result (both
// from its row of outcome.go), its run time and wait. It replaces path atomically, so the
// textfile collector never reads half a file (hostfs.WriteFileAtomic, which never follows a
// link).
func writeRunMetrics(path, tier string, out runner.Outcome, now time.Time) error {
	r := ending(out)
	code, result := r.code, r.result
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
	gauge("tierlock_run_last_duration_seconds", "Run time of the last run's command (0 if it did not run).").WithLabelValues(tier).Set(out.Result.Duration.Seconds())
	gauge("tierlock_run_last_wait_seconds", "Time the last run waited for its slot.").WithLabelValues(tier).Set(out.Waited.Seconds())
	gauge("tierlock_run_last_timestamp_seconds", "When the last run ended, in Unix seconds.").WithLabelValues(tier).Set(float64(now.Unix()))
	// Not prometheus.WriteToTextfile: it chmods its temporary file by path, so whoever can
	// write the directory could have root make a file of their choosing world-readable.
	return hostfs.WriteFileAtomic(path, 0o644, func(w io.Writer) error { return writeMetrics(w, reg) })
}
