package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// manCommand prints the man page, generated from the command definitions by urfave/cli, so
// it never drifts from --help. Hidden: `make man` and the packages use it, people read the
// result with `man tierlock`.
func (a *App) manCommand() *cli.Command {
	return &cli.Command{
		Name:   "man",
		Usage:  "print the man page (roff, section 8)",
		Hidden: true,
		Action: func(c *cli.Context) error {
			page, err := c.App.ToMan()
			if err != nil {
				return fmt.Errorf("man: %w", err)
			}
			fmt.Fprint(a.Stdout, page)
			return nil
		},
	}
}
