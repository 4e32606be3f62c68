package main

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/tierlock/tierlock/internal/consulclient"
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
				return refuse(err)
			}
			o, err := parseRunOptions(c)
			if err != nil {
				return refuse(err)
			}
			if o.dryRun {
				return a.dryRun(c.Context, logger.WithFields(logrus.Fields{"tier": o.tier, "holder": o.holder}), o)
			}
			out := a.run(c.Context, logger, o)
			if o.metricsFile != "" {
				if err := writeRunMetrics(o.metricsFile, o.tier, out, a.Now()); err != nil {
					logger.WithError(err).Error("--metrics-file: could not write it")
				}
			}
			if out.Kind != runner.Succeeded {
				return &runEnded{out: out}
			}
			return nil
		},
	}
}

// run is `tierlock run` after its flags were checked (docs/operating.md): a runner.Job takes
// the tier's lock on this host, splays, completes the record, takes the slot, runs the
// command and records how it ended. run logs it as it happens, and how it ended.
func (a *App) run(ctx context.Context, logger *logrus.Logger, o runOptions) runner.Outcome {
	runID := newRunID()
	log := logger.WithFields(logrus.Fields{"run_id": runID, "tier": o.tier, "holder": o.holder})
	client, err := consulclient.New()
	var job *runner.Job
	if err == nil {
		job, err = a.newJob(client, o, runID, a.newRetry(o.consulTimeout, log))
	}
	if err != nil { // the client's settings or the tier's names: nothing to try again
		out := runner.Outcome{Kind: runner.NotRun, Why: runner.Refused, Err: err}
		logEnding(log, out, o)
		return out
	}
	job.Notify = logEvent(log, o)
	out := job.Run(ctx)
	logEnding(log, out, o)
	return out
}

// logEnding says how the run ended, in its row's words (outcome.go).
func logEnding(log *logrus.Entry, out runner.Outcome, o runOptions) {
	r := ending(out)
	if out.Ran() {
		log = log.WithFields(logrus.Fields{"attempt": out.Slot.Attempts, "exit_code": out.Result.Code(),
			"duration": out.Result.Duration.Round(time.Millisecond).String()})
	}
	var failed *runner.CommandError
	if errors.As(out.Err, &failed) && failed.Start != nil {
		log.Error(failed.Start)
	}
	switch {
	case out.Kind == runner.Succeeded && out.Recording != nil:
		log.Warn(r.unrecorded) // instead of "released": the slot was no longer this run's
		return
	case out.Recording != nil && out.Kind != runner.NotRun:
		log.WithError(explain(out.Recording)).Error(r.unrecorded)
	}
	switch {
	case out.Kind == runner.Unhealthy:
		log = log.WithField("health_exit_code", failed.Health.Code())
	case out.Kind == runner.NotReleased && out.Signal == nil:
		log = log.WithError(explain(errors.Unwrap(out.Err)))
	case out.Kind == runner.NotReleased:
		log = log.WithError(out.Err)
	case out.Kind == runner.NotRun && out.Why != runner.Stopped && out.Why != runner.Disabled:
		log = log.WithError(explain(out.Err))
	}
	line := r.line
	if strings.Contains(line, "%s") {
		line = fmt.Sprintf(line, detail(out, o))
	}
	log.Log(r.level, line)
	if out.Recording != nil && out.Kind == runner.NotRun {
		log.WithError(explain(out.Recording)).Warn(r.unrecorded)
	}
}

// newRunID names one run in logs and in its record.
func newRunID() string {
	b := make([]byte, 4)
	_, _ = cryptorand.Read(b)
	return hex.EncodeToString(b)
}
