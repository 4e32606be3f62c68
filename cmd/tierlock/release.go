package main

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/urfave/cli/v2"

	"github.com/tierlock/tierlock/internal/safetext"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/monitor"
)

func (a *App) releaseCommand() *cli.Command {
	return &cli.Command{
		Name:  "release",
		Usage: "free one held slot (after a person has looked at why it failed)",
		Flags: operatorFlags(&cli.StringFlag{Name: "holder", Usage: "the holder whose slot to free (required)"}, reasonFlag()),
		Action: func(c *cli.Context) error {
			holder, err := holderFlag(c)
			if err != nil {
				return err
			}
			o, err := a.newOperator(c, true)
			if err != nil {
				return err
			}
			snap, err := o.read(c.Context)
			if err != nil {
				return err
			}
			if !snap.Exists() {
				return usage("tier %s does not exist under %s/ (no keys)", o.tier, o.prefix)
			}
			seen, readable := snap.Holders[holder]
			if !readable && !slices.Contains(snap.Unreadable(), holder) {
				fmt.Fprintf(a.Stdout, "%s: %s holds no slot; nothing changed\n", o.tier, holder)
				return nil
			}
			// The release frees the run seen here and no other: a retry after a lost answer
			// must not free a slot that a new run of the host took in between.
			freed, attempts := seen, 0
			err = o.retry.do(c.Context, "release", func(ctx context.Context) (err error) {
				attempts++
				freed, err = o.sem.ForceRelease(ctx, holder, seen.RunID)
				return err
			})
			lost := errors.Is(err, lock.ErrNotHeld) && attempts > 1 // an earlier attempt freed it
			if lost {
				freed = seen
			} else if err != nil && !errors.Is(err, lock.ErrNotHeld) {
				return fail(err)
			}
			after, rerr := o.read(c.Context)
			if rerr != nil {
				return rerr
			}
			now, holds := after.Holders[holder]
			switch {
			case err != nil && !lost:
				fmt.Fprintf(a.Stdout, "%s: %s's slot was freed meanwhile; nothing changed\n", o.tier, holder)
			default:
				what := "an unreadable value"
				if freed.State != "" {
					what = fmt.Sprintf("%s, attempt %d, started %s ago", freed.State, freed.Attempts, monitor.Age(a.Now().Sub(freed.StartedAt)))
					if freed.ExitCode != nil {
						what = fmt.Sprintf("%s, exit %d", what, *freed.ExitCode)
					}
				}
				fmt.Fprintf(a.Stdout, "%s: released %s (%s); current %d -> %d\n", o.tier, holder, safetext.Text(what), snap.Current, after.Current)
			}
			if holds && now.RunID != seen.RunID {
				fmt.Fprintf(a.Stdout, "%s: %s holds a new slot now (run %s, %s), left alone\n", o.tier, holder,
					safetext.Text(now.RunID), safetext.Text(string(now.State)))
			}
			return nil
		},
	}
}
