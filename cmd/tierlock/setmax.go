package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/tierlock/tierlock/lock"
)

func (a *App) setMaxCommand() *cli.Command {
	return &cli.Command{
		Name:      "set-max",
		Usage:     "set a tier's max_concurrent: N > 0, 0 (disabled) or -1 / unlimited",
		ArgsUsage: "N   (write -1 as `unlimited` or after --: set-max --tier T -- -1)",
		Flags:     operatorFlags(reasonFlag()),
		Action: func(c *cli.Context) error {
			n, err := maxArg(c, false)
			if err != nil {
				return err
			}
			o, err := a.newOperator(c, true)
			if err != nil {
				return err
			}
			before, err := o.change(c.Context, "set-max", func(ctx context.Context) (*lock.Snapshot, error) { return o.sem.SetMax(ctx, *n) })
			if err != nil {
				return err
			}
			if before.MaxSet && before.Max == *n {
				fmt.Fprintf(a.Stdout, "%s: max_concurrent is already %s; nothing changed\n", o.tier, maxText(before))
				return nil
			}
			fmt.Fprintf(a.Stdout, "%s: max_concurrent %s -> %s\n", o.tier, maxText(before), maxText(&lock.Snapshot{Max: *n, MaxSet: true}))
			return nil
		},
	}
}

func (a *App) disableCommand() *cli.Command {
	return &cli.Command{
		Name:  "disable",
		Usage: "stop every run in a tier (max_concurrent 0; the old value is kept for enable)",
		Flags: operatorFlags(reasonFlag()),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usage("disable takes no arguments, got %q", c.Args().Slice())
			}
			o, err := a.newOperator(c, true)
			if err != nil {
				return err
			}
			before, err := o.change(c.Context, "disable", o.sem.Disable)
			if err != nil {
				return err
			}
			if before.Disabled() {
				fmt.Fprintf(a.Stdout, "%s: already disabled; nothing changed\n", o.tier)
				return nil
			}
			saved := "enable will remove max_concurrent again (back to the runs' --default-max)"
			if before.MaxSet {
				saved = fmt.Sprintf("%d saved in max_saved for enable", before.Max)
			}
			fmt.Fprintf(a.Stdout, "%s: max_concurrent %s -> 0 (disabled); %s\n", o.tier, maxText(before), saved)
			return nil
		},
	}
}

func (a *App) enableCommand() *cli.Command {
	return &cli.Command{
		Name:      "enable",
		Usage:     "let a disabled tier run again, with N slots or the value disable saved",
		ArgsUsage: "[N]",
		Flags:     operatorFlags(reasonFlag()),
		Action: func(c *cli.Context) error {
			n, err := maxArg(c, true)
			if err != nil {
				return err
			}
			if n != nil && *n == 0 {
				return usage("enable 0 would leave the tier disabled: give N > 0 or -1")
			}
			o, err := a.newOperator(c, true)
			if err != nil {
				return err
			}
			before, err := o.change(c.Context, "enable", func(ctx context.Context) (*lock.Snapshot, error) { return o.sem.Enable(ctx, n) })
			if err != nil {
				return err
			}
			after, err := o.read(c.Context)
			if err != nil {
				return err
			}
			if maxText(before) == maxText(after) {
				fmt.Fprintf(a.Stdout, "%s: max_concurrent is %s; nothing changed\n", o.tier, maxText(after))
				return nil
			}
			fmt.Fprintf(a.Stdout, "%s: max_concurrent %s -> %s\n", o.tier, maxText(before), maxText(after))
			return nil
		},
	}
}

// maxArg parses the N of set-max and enable: an integer ≥ -1, or "unlimited".
func maxArg(c *cli.Context, optional bool) (*int, error) {
	switch {
	case c.NArg() == 0 && optional:
		return nil, nil
	case c.NArg() != 1:
		return nil, usage("want exactly one N (a number ≥ -1, or unlimited), got %q", c.Args().Slice())
	}
	arg := c.Args().First()
	if arg == "unlimited" {
		n := -1
		return &n, nil
	}
	n, err := strconv.Atoi(arg)
	if err != nil || n < -1 {
		return nil, usage("N %q: want -1 (unlimited), 0 (disabled) or a number of slots", arg)
	}
	return &n, nil
}

// change runs one write with retries and returns the snapshot it was based on. When an
// attempt fails after sending its write, the write may have applied without our hearing it:
// the next attempt then finds nothing left to change, so the snapshot that attempt was based
// on is the one that tells what changed.
func (o *operator) change(ctx context.Context, what string, write func(context.Context) (*lock.Snapshot, error)) (*lock.Snapshot, error) {
	var before *lock.Snapshot
	err := o.retry.do(ctx, what, func(ctx context.Context) error {
		snap, err := write(ctx)
		if before == nil {
			before = snap
		}
		return err
	})
	if err != nil {
		return nil, fail(err)
	}
	return before, nil
}

// read reads the operator's tier with retries.
func (o *operator) read(ctx context.Context) (*lock.Snapshot, error) {
	snap, err := readTier(ctx, o.sem, o.retry, "read")
	if err != nil {
		return nil, fail(err)
	}
	return snap, nil
}
