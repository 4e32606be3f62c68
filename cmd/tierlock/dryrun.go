package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/tierlock/tierlock/internal/consulclient"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/runner"
)

// dryRun reads the tier and says what run would do: exit 0 if it would run now, else what the
// run would end with (75 if it would skip or wait; 78 if the tier is misconfigured, or
// Consul refuses), through the same table. It takes nothing, not even the host's lock of the
// tier, and does not splay.
func (a *App) dryRun(ctx context.Context, log *logrus.Entry, o runOptions) error {
	client, err := consulclient.New()
	var sem *lock.Semaphore
	if err == nil {
		sem, err = a.semaphore(client, o)
	}
	if err != nil {
		log.Error(err)
		return &said{err: refuse(err)}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer runner.OnSignal(a.Signals, cancel)()
	snap, err := readTier(ctx, sem, a.newRetry(o.consulTimeout, log), "read")
	if err == nil {
		err = snap.Err()
	}
	rev := o.revision
	if err == nil && len(o.revisionCommand) > 0 {
		rev, err = runner.Revision(ctx, *a.revisionCommand(o))
	}
	if err != nil {
		out := runner.Outcome{Kind: runner.NotRun, Why: whyNot(err), Err: err}
		logEnding(log, out, o)
		return &runEnded{out: out}
	}
	limit := fmt.Sprint(snap.Max)
	if snap.Max < 0 {
		limit = "unlimited"
	}
	d := snap.Decide(o.holder, rev)
	what := map[lock.Decision]string{
		lock.Halted:   fmt.Sprintf("would skip: revision %s is halted", rev),
		lock.HeldBack: fmt.Sprintf("would wait up to %s for the rollout to admit revision %s", o.wait, rev),
		lock.Disabled: "would skip: the tier is disabled",
		lock.Reenter:  "would re-enter the slot it already holds and run",
		lock.Take:     "would take a slot and run",
		lock.Wait:     fmt.Sprintf("would wait up to %s for a slot, then run", o.wait),
	}[d]
	fmt.Fprintf(a.Stdout, "dry run: tier %s (max %s, %d held): %s %s %q\n",
		o.tier, limit, snap.Held(), o.holder, what, strings.Join(o.command, " "))
	if why, ok := wouldNot[d]; ok {
		return &runEnded{out: runner.Outcome{Kind: runner.NotRun, Why: why}}
	}
	return nil
}

// wouldNot is why a run would not run now, by what the lock would decide.
var wouldNot = map[lock.Decision]runner.Why{
	lock.Halted: runner.Halted, lock.HeldBack: runner.HeldBack, lock.Disabled: runner.Disabled, lock.Wait: runner.Full,
}
