package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tierlock/tierlock/internal/safetext"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
	"github.com/tierlock/tierlock/monitor"
)

// rolloutLine is a tier's rollout in one line, for a run's log. A run reads its own
// convergence record and not the others', so the line leaves out how many hosts are on it.
func rolloutLine(s *lock.Snapshot) string {
	v := monitor.Rollout(s, time.Now())
	if v != nil {
		v.Hosts = 0
	}
	return v.Line()
}

// rolloutCommand is `tierlock rollout`: look at and steer a tier's progressive rollout
// (docs/rollout.md).
func (a *App) rolloutCommand() *cli.Command {
	steer := func(name, action, help string, extra ...cli.Flag) *cli.Command {
		return &cli.Command{
			Name: name, Usage: help, ArgsUsage: "REVISION",
			Flags: operatorFlags(append([]cli.Flag{reasonFlag()}, extra...)...),
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return usage("rollout %s takes one REVISION, got %q", name, c.Args().Slice())
				}
				rev := c.Args().First()
				if err := schema.ValidateRevision(rev); err != nil {
					return usage("%v", err)
				}
				act := action
				if c.Bool("full") {
					act = lock.SteerPromoteFull
				}
				return a.steer(c, act, rev)
			},
		}
	}
	return &cli.Command{
		Name:  "rollout",
		Usage: "look at or steer a tier's progressive rollout (one host first, then batches; halted on failure)",
		Subcommands: []*cli.Command{
			{
				Name: "status", Usage: "print the tier's rollout", Flags: operatorFlags(),
				Action: func(c *cli.Context) error {
					o, err := a.newOperator(c, true)
					if err != nil {
						return err
					}
					snap, err := o.read(c.Context)
					if err != nil {
						return err
					}
					a.printRollout(o.tier, snap)
					return nil
				},
			},
			{
				Name:  "policy",
				Usage: "set the tier's rollout schedule: --schedule 1,2,5,max --bake 15m --failures 1 [--after staging/web]",
				Flags: operatorFlags(reasonFlag(),
					&cli.StringFlag{Name: "schedule", Value: "double", Usage: "movers per step, comma-separated, max last (no limit but max_concurrent); double: 1,2,4,..."},
					&cli.DurationFlag{Name: "bake", Usage: "how long after a step's last success the next step waits"},
					&cli.IntFlag{Name: "failures", Value: 1, Usage: "failures of a revision that halt it"},
					&cli.StringFlag{Name: "after", Usage: "another tier (ENV/SERVICE): a revision starts here only once it has completed there"}),
				Action: func(c *cli.Context) error {
					if c.NArg() > 0 {
						return usage("rollout policy takes no arguments, got %q", c.Args().Slice())
					}
					sched, err := schema.ParseSchedule(c.String("schedule"))
					if err != nil {
						return usage("--schedule: %v", err)
					}
					p := schema.Policy{Schedule: sched, Bake: c.Duration("bake"), Failures: c.Int("failures"), After: c.String("after")}
					if err := p.Validate(); err != nil {
						return usage("%v", err)
					}
					o, err := a.newOperator(c, true)
					if err != nil {
						return err
					}
					if p.After == o.tier {
						return usage("--after %s: a tier cannot come after itself", p.After)
					}
					if _, err := o.change(c.Context, "rollout policy", func(ctx context.Context) (*lock.Snapshot, error) { return o.sem.SetPolicy(ctx, p) }); err != nil {
						return err
					}
					after := ""
					if p.After != "" {
						after = ", after " + p.After
					}
					fmt.Fprintf(a.Stdout, "%s: rollout policy: schedule %s, bake %s, halt at %d failure(s)%s\n", o.tier, schema.FormatSchedule(p.Schedule), p.Bake, p.Failures, after)
					return nil
				},
			},
			steer("halt", lock.SteerHalt, "halt a revision in the tier: no host moves to it until resumed"),
			steer("resume", lock.SteerResume, "resume a halted revision: it starts again at the canary"),
			steer("promote", lock.SteerPromote, "open the revision's next step now (no bake); --full: skip the rest of the schedule",
				&cli.BoolFlag{Name: "full", Usage: "skip the rest of the schedule (a hotfix: no canary)"}),
			steer("forget", lock.SteerForget, "drop a revision from the tier's rollout record: its next mover starts at the canary"),
		},
	}
}

// steer applies an operator's action to a revision's rollout and prints the result.
func (a *App) steer(c *cli.Context, action, rev string) error {
	o, err := a.newOperator(c, true)
	if err != nil {
		return err
	}
	before, err := o.change(c.Context, "rollout "+action, func(ctx context.Context) (*lock.Snapshot, error) { return o.sem.Steer(ctx, action, rev) })
	if err != nil {
		if errors.Is(err, lock.ErrSteer) {
			return refuse(err)
		}
		return err
	}
	after, err := o.read(c.Context)
	if err != nil {
		return err
	}
	if before != nil && before.Rollout.Revision == after.Rollout.Revision && before.Rollout.State == after.Rollout.State &&
		before.Rollout.Step == after.Rollout.Step && before.Rollout.Full == after.Rollout.Full && len(before.Rollout.Past) == len(after.Rollout.Past) {
		fmt.Fprintf(a.Stdout, "%s: rollout %s %s: nothing changed\n", o.tier, action, safetext.Text(rev))
	}
	a.printRollout(o.tier, after)
	return nil
}

// printRollout prints the tier's rollout and the revisions it remembers.
func (a *App) printRollout(tier string, snap *lock.Snapshot) {
	now := a.Now()
	fmt.Fprintf(a.Stdout, "%s: %s\n", tier, safetext.Text(monitor.Rollout(snap, now).Line()))
	p := snap.Policy
	fmt.Fprintf(a.Stdout, "%s: policy: schedule %s, bake %s, halt at %d failure(s)", tier, schema.FormatSchedule(p.Schedule), p.Bake, p.Failures)
	if p.After != "" {
		fmt.Fprintf(a.Stdout, ", after %s", p.After)
	}
	fmt.Fprintln(a.Stdout)
	for _, past := range snap.Rollout.Past {
		done := ""
		if past.Completed {
			done = ", completed"
		}
		fmt.Fprintf(a.Stdout, "%s: earlier: %s %s%s (%d successes, %d failures)\n", tier, safetext.Text(past.Revision), past.State, done, past.Successes, past.Failures)
	}
}

// revisionLast moves the REVISION of `tierlock rollout halt|resume|promote|forget` behind the
// flags, so that `rollout resume --tier T REV --reason why` reads as written: urfave/cli stops
// reading flags at the first argument. Every flag of those commands takes a value but --full
// and --help; a "--" ends the flags as usual.
func revisionLast(args []string) []string {
	if len(args) < 3 || args[1] != "rollout" || !slices.Contains([]string{"halt", "resume", "promote", "forget"}, args[2]) {
		return args
	}
	out := slices.Clone(args[:3])
	var positional []string
	rest := args[3:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		switch {
		case a == "--":
			positional = append(positional, rest[i+1:]...)
			i = len(rest)
		case strings.HasPrefix(a, "-") && a != "-":
			out = append(out, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && !slices.Contains([]string{"full", "help", "h"}, name) && i+1 < len(rest) {
				i++
				out = append(out, rest[i])
			}
		default:
			positional = append(positional, a)
		}
	}
	if len(positional) > 0 {
		out = append(append(out, "--"), positional...)
	}
	return out
}
