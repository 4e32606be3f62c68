package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/tierlock/tierlock/internal/safetext"
)

func (a *App) repairCommand() *cli.Command {
	return &cli.Command{
		Name:  "repair",
		Usage: "set a tier's current to the number of its running/ keys",
		Flags: operatorFlags(),
		Action: func(c *cli.Context) error {
			o, err := a.newOperator(c, true)
			if err != nil {
				return err
			}
			before, err := o.change(c.Context, "repair", o.sem.Repair)
			if err != nil {
				return err
			}
			after, err := o.read(c.Context)
			if err != nil {
				return err
			}
			if !before.Drift() && len(before.Problems) == len(after.Problems) {
				fmt.Fprintf(a.Stdout, "%s: current %d matches %d running/ keys; nothing changed\n", o.tier, after.Current, after.RunningKeys)
			} else {
				fmt.Fprintf(a.Stdout, "%s: current %d -> %d (%d running/ keys)\n", o.tier, before.Current, after.Current, after.RunningKeys)
			}
			if err := after.Err(); err != nil {
				fmt.Fprintf(a.Stdout, "%s: repair does not fix other stored values: %s\n", o.tier, safetext.Text(err.Error()))
			}
			return nil
		},
	}
}
