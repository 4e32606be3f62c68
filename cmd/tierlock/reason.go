package main

import (
	"fmt"
	"os"
	"slices"
	"unicode"

	"github.com/urfave/cli/v2"

	"github.com/tierlock/tierlock/lock"
)

// reasonFlag is --reason of the commands that change a tier by hand (set-max, disable,
// release, forget): what they record beside who, where and when.
func reasonFlag() cli.Flag {
	return &cli.StringFlag{Name: "reason", Usage: "why, recorded in the tier with who, where and when (status and check show it)", EnvVars: env("REASON")}
}

// operatorNote is the note a tier-changing command records, or nil for a command without
// --reason. Every such change is recorded, with or without a reason.
func (a *App) operatorNote(c *cli.Context) (*lock.Note, error) {
	if !slices.ContainsFunc(c.Command.Flags, func(f cli.Flag) bool { return slices.Contains(f.Names(), "reason") }) {
		return nil, nil
	}
	reason := c.String("reason")
	if len(reason) > lock.MaxReason {
		return nil, fmt.Errorf("--reason of %d bytes: at most %d (a sentence or a ticket)", len(reason), lock.MaxReason)
	}
	for _, r := range reason {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return nil, fmt.Errorf("--reason %q: control characters or invalid UTF-8 (one line of text, please)", reason)
		}
	}
	host, err := os.Hostname()
	if err != nil {
		host = ""
	}
	return &lock.Note{Reason: reason, By: operatorName(), Host: host, At: a.Now().UTC()}, nil
}

// operatorName is the person behind the command: under sudo the one who typed it, not root.
func operatorName() string {
	for _, v := range []string{"SUDO_USER", "USER", "LOGNAME"} {
		if s := os.Getenv(v); s != "" {
			return s
		}
	}
	return fmt.Sprintf("uid %d", os.Getuid())
}
