package main

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"time"
	"unicode"

	"github.com/hashicorp/consul/api"
	"github.com/urfave/cli/v2"

	"github.com/tierlock/tierlock/lock/schema"
)

// reasonFlag is --reason of the commands that change a tier by hand (set-max, disable,
// release, forget): what they record beside who, where and when.
func reasonFlag() cli.Flag {
	return &cli.StringFlag{Name: "reason", Usage: "why, recorded in the tier with who, where and when (status and check show it)", EnvVars: env("REASON")}
}

// operatorNote is the note a tier-changing command records, or nil for a command without
// --reason. Every such change is recorded, with or without a reason: who (see operatorName),
// as which uid, from where, when, and with ACLs on, the token Consul knows the change by.
func (a *App) operatorNote(c *cli.Context, acl *api.ACL, timeout time.Duration) (*schema.Note, error) {
	if !slices.ContainsFunc(c.Command.Flags, func(f cli.Flag) bool { return slices.Contains(f.Names(), "reason") }) {
		return nil, nil
	}
	reason := c.String("reason")
	if len(reason) > schema.MaxReason {
		return nil, fmt.Errorf("--reason of %d bytes: at most %d (a sentence or a ticket)", len(reason), schema.MaxReason)
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
	uid := os.Getuid()
	return &schema.Note{Reason: reason, By: operatorName(uid, os.Geteuid(), os.Getenv, user.LookupId), UID: &uid,
		Host: host, At: a.Now().UTC(), Token: tokenInfo(c.Context, acl, timeout)}, nil
}

// operatorName is the person behind the command. The environment is anyone's to write, so it
// is believed only where it cannot lie about more than its writer already is: root under sudo
// (sudo sets SUDO_USER, and root could write any note anyway) names the person who typed
// sudo; everyone else is the account of their real uid, whatever USER, LOGNAME or SUDO_USER
// say (USER=mallory SUDO_USER=alice at uid 1001 records uid 1001's name).
func operatorName(uid, euid int, getenv func(string) string, lookup func(string) (*user.User, error)) string {
	if uid == 0 && euid == 0 {
		if s := getenv("SUDO_USER"); s != "" && getenv("SUDO_UID") != "" {
			return s
		}
	}
	if u, err := lookup(strconv.Itoa(uid)); err == nil && u.Username != "" {
		return u.Username
	}
	return fmt.Sprintf("uid %d", uid)
}

// tokenInfo is the ACL token this command writes with, as Consul describes it: the one name
// of the writer that Consul, not the writer, vouches for. Nil when ACLs are off or Consul does
// not say (the change itself then succeeds or fails on its own).
func tokenInfo(ctx context.Context, acl *api.ACL, timeout time.Duration) *schema.TokenInfo {
	if acl == nil {
		return nil
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tok, _, err := acl.TokenReadSelf((&api.QueryOptions{}).WithContext(ctx))
	if err != nil || tok == nil || tok.AccessorID == "" {
		return nil
	}
	return &schema.TokenInfo{AccessorID: tok.AccessorID, Description: tok.Description}
}
