package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/sirupsen/logrus"

	"github.com/tierlock/tierlock/internal/consulclient"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
	"github.com/tierlock/tierlock/runner"
)

// newJob is the runner.Job that `tierlock run` hands the run to: the tier's semaphore, the
// record's facts, the host side (local lock, splay, instance id, node, revision) and the
// commands, from the flags.
func (a *App) newJob(client *api.Client, o runOptions, runID string, retry *consulRetry) (*runner.Job, error) {
	sem, err := a.semaphore(client, o)
	if err != nil {
		return nil, err
	}
	job := &runner.Job{
		Slots: sem, Retry: retry.policy, Signals: a.Signals, Now: a.Now,
		Request: lock.Request{Record: schema.Record{
			Holder: o.holder, Command: strings.Join(o.command, " "), RunID: runID, Version: "tierlock " + a.Build.Version,
			Revision: o.revision,
		}},
		Host: runner.Host{
			StateDir: o.stateDir, Tier: o.tier, Splay: o.splay, InstanceID: o.instanceID, Wait: o.wait,
			PassConsulToken: o.passConsulToken,
			Node: func(ctx context.Context) (string, error) {
				// Within a quarter of --consul-timeout: with the acquisition's 1.25 × after
				// its first failure, a Consul that stalls everything still sees the run end
				// within 1.5 ×. The agent answers it itself: it costs the servers nothing.
				ctx, cancel := context.WithTimeout(ctx, min(consulclient.RequestTimeout(o.consulTimeout), o.consulTimeout/4))
				defer cancel()
				return consulclient.NodeName(ctx, client)
			},
		},
		Command: runner.Command{
			Path: o.path, Args: o.command[1:], Stdin: os.Stdin, Stdout: a.Stdout, Stderr: a.Stderr,
			Timeout: o.timeout, KillGrace: o.killGrace,
		},
		Success: func(code int) bool { return o.successCodes[code] },
	}
	job.Host.RevisionCommand = a.revisionCommand(o)
	if len(o.healthCommand) > 0 {
		path, _ := exec.LookPath(o.healthCommand[0])
		job.Health = &runner.Health{Timeout: o.healthTimeout, Interval: o.healthInterval, Command: runner.Command{
			Path: path, Args: o.healthCommand[1:], Stdout: a.Stdout, Stderr: a.Stderr,
		}}
	}
	return job, nil
}

// semaphore is the run's tier.
func (a *App) semaphore(client *api.Client, o runOptions) (*lock.Semaphore, error) {
	return lock.New(client.KV(), lock.Options{
		Prefix: o.prefix, Tier: o.tier, DefaultMax: o.defaultMax, QueueOrder: o.queueOrder, QueueTTL: o.queueTTL,
		RequestTimeout: consulclient.RequestTimeout(o.consulTimeout), Now: a.Now, Sessions: client.Session(),
		Retryable: consulclient.Retryable,
	})
}

// revisionCommand is --revision-command as the runner runs it, or nil.
func (a *App) revisionCommand(o runOptions) *runner.Command {
	if len(o.revisionCommand) == 0 {
		return nil
	}
	path, _ := exec.LookPath(o.revisionCommand[0])
	return &runner.Command{Path: path, Args: o.revisionCommand[1:], Stderr: a.Stderr, Timeout: o.revisionTimeout}
}

// logEvent logs what the run reports as it happens.
func logEvent(log *logrus.Entry, o runOptions) func(runner.Event) {
	return func(e runner.Event) {
		switch e.Kind {
		case runner.Splaying:
			log.Debugf("splay: sleeping %s", e.Duration.Round(time.Millisecond))
		case runner.NoNode:
			log.WithError(explain(e.Err)).Warn("the slot records no Consul node: `tierlock reap --consul-catalog` will not judge it")
		case runner.Waiting:
			s := e.Tier
			if e.HeldBack {
				log.Infof("revision %s: the rollout (%s) does not admit this host yet, waiting up to %s", e.Revision, rolloutLine(s), o.wait)
			} else {
				log.Infof("tier full (%d of %d slots held), waiting up to %s", s.Held(), s.Max, o.wait)
			}
			if newer := s.Newer(); len(newer) > 0 {
				log.Warnf("the tier has hosts of a newer waiting protocol than this tierlock's %d (%s): they are ranked, but this host hands them no slot; they take their own", schema.Protocol, strings.Join(newer, ", "))
			}
		case runner.Acquired:
			slot, what := e.Slot, "slot acquired"
			if slot.Reentered {
				what = "re-entered the slot an earlier run left held"
			}
			l := log.WithField("attempt", slot.Attempts)
			if slot.Revision != "" {
				l = l.WithField("revision", slot.Revision)
				if slot.Batch != nil {
					what += fmt.Sprintf(" as a mover to %s (rollout step %d)", slot.Revision, *slot.Batch)
				}
			}
			l.Infof("%s (waited %s)", what, e.Duration.Round(time.Millisecond))
		}
	}
}
