package main

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/tierlock/tierlock/internal/safetext"
	"github.com/tierlock/tierlock/lock/schema"
	"github.com/tierlock/tierlock/monitor"
)

// forgetCommand drops a host that left a tier (moved to another, say) from the tier's
// convergence records, so that check stops expecting it to converge there. Its slot and queue
// entry, if any, are left alone: release and reap are for those.
func (a *App) forgetCommand() *cli.Command {
	return &cli.Command{
		Name:  "forget",
		Usage: "drop a host that left the tier from its convergence records (converged/<holder>); nothing else changes",
		Flags: operatorFlags(&cli.StringFlag{Name: "holder", Usage: "the holder to forget (required)"}, reasonFlag()),
		Action: func(c *cli.Context) error {
			holder, err := holderFlag(c)
			if err != nil {
				return err
			}
			o, err := a.newOperator(c, true)
			if err != nil {
				return err
			}
			var gone schema.Convergence
			var found bool
			err = o.retry.do(c.Context, "forget", func(ctx context.Context) (err error) {
				// Idempotent: a retry after a lost answer finds nothing and says so below.
				c, f, err := o.sem.Forget(ctx, holder)
				if f {
					gone, found = c, true
				}
				return err
			})
			if err != nil {
				return fail(err)
			}
			if !found {
				fmt.Fprintf(a.Stdout, "%s: %s has no convergence record; nothing to forget\n", o.tier, safetext.Text(holder))
				return nil
			}
			what := "an unreadable record"
			if !gone.ConvergedAt.IsZero() {
				what = fmt.Sprintf("last converged %s ago, run %s", monitor.Age(max0(a.Now().Sub(gone.ConvergedAt))), gone.RunID)
			}
			fmt.Fprintf(a.Stdout, "%s: forgot %s (%s)\n", o.tier, safetext.Text(holder), safetext.Text(what))
			return nil
		},
	}
}
