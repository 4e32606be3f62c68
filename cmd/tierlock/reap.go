package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/tierlock/tierlock/internal/consulclient"
	"github.com/tierlock/tierlock/internal/safetext"
	"github.com/tierlock/tierlock/lock/schema"
	"github.com/tierlock/tierlock/monitor"
	"github.com/tierlock/tierlock/runner"
)

// defaultGrace is how long a node may be missing from the catalog, or its serfHealth critical,
// before reap --consul-catalog frees its slots: long enough for a reboot, a short partition or
// an agent renamed between two runs.
const defaultGrace = time.Hour

func (a *App) reapCommand() *cli.Command {
	return &cli.Command{
		Name:      "reap",
		Usage:     "free every slot, queue entry and convergence record of a dead host, in every tier",
		UsageText: "tierlock reap --instance-id ID | --holder H | --consul-catalog [--grace DUR] [--dry-run]",
		// The target is never read from the environment: TIERLOCK_INSTANCE_ID and
		// TIERLOCK_HOLDER describe the host itself, for run, and must not free its own slots.
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "instance-id", Usage: "free the slots recorded with this instance id (or held under it as a name)"},
			&cli.StringFlag{Name: "holder", Usage: "free the slots held by this holder"},
			&cli.BoolFlag{Name: "consul-catalog", Usage: "free the slots whose Consul node has been out of the catalog or critical for --grace"},
			&cli.DurationFlag{Name: "grace", Value: defaultGrace, Usage: "with --consul-catalog: how long a node may be out of the catalog or critical", EnvVars: env("GRACE")},
			&cli.BoolFlag{Name: "dry-run", Usage: "print what would be freed, free nothing", EnvVars: env("DRY_RUN")},
			prefixFlag(), consulTimeoutFlag(),
		}, logFlags()...),
		Action: func(c *cli.Context) error {
			logger, err := a.newLogger(c)
			if err != nil {
				return refuse(err)
			}
			o, err := parseReapOptions(c)
			if err != nil {
				return refuse(err)
			}
			return a.reap(c.Context, logger.WithField("command", "reap"), o)
		},
	}
}

// reapOptions are reap's flags, checked.
type reapOptions struct {
	prefix               string
	match                monitor.Match
	target               string // what match selects, for people: "instance i-0abc"
	catalog, dryRun      bool
	grace, consulTimeout time.Duration
}

func parseReapOptions(c *cli.Context) (reapOptions, error) {
	o := reapOptions{
		prefix: c.String("prefix"), catalog: c.Bool("consul-catalog"), dryRun: c.Bool("dry-run"),
		grace: c.Duration("grace"), consulTimeout: c.Duration("consul-timeout"),
	}
	var given []string
	for _, name := range []string{"instance-id", "holder", "consul-catalog"} {
		if c.IsSet(name) {
			given = append(given, "--"+name)
		}
	}
	if len(given) != 1 {
		return o, fmt.Errorf("reap: give exactly one of --instance-id, --holder or --consul-catalog (got %s)", orNone(given))
	}
	switch {
	case c.IsSet("instance-id"):
		id := c.String("instance-id")
		if err := schema.ValidateName("instance id", id); err != nil {
			return o, fmt.Errorf("--instance-id: %w", err)
		}
		o.match, o.target = monitor.ByInstance(id), "instance "+id
	case c.IsSet("holder"):
		h := c.String("holder")
		if err := schema.ValidateName("holder", h); err != nil {
			return o, fmt.Errorf("--holder: %w", err)
		}
		o.match, o.target = monitor.ByHolder(h), "holder "+h
	case !o.catalog:
		return o, fmt.Errorf("reap: --consul-catalog=false selects nothing; give --instance-id, --holder or --consul-catalog")
	}
	if c.IsSet("grace") && !o.catalog {
		return o, fmt.Errorf("--grace %s only applies to --consul-catalog", o.grace)
	}
	if o.grace < 0 {
		return o, fmt.Errorf("--grace %s is negative", o.grace)
	}
	if _, err := prefixOf(c); err != nil {
		return o, err
	}
	if _, err := consulTimeoutOf(c); err != nil {
		return o, err
	}
	return o, nil
}

func orNone(flags []string) string {
	if len(flags) == 0 {
		return "none"
	}
	return strings.Join(flags, " and ")
}

// reap frees (or, with --dry-run, lists) the slots of a dead host and prints them. It logs
// what went wrong, and returns it (nil also when there was nothing to free): exit 75 when
// Consul stayed unreachable or a signal stopped it, 78 when Consul refused (ACL).
func (a *App) reap(ctx context.Context, log *logrus.Entry, o reapOptions) error {
	client, err := consulclient.New()
	if err != nil {
		log.Error(err)
		return &said{refuse(err)}
	}
	retry := a.newRetry(o.consulTimeout, log)
	reaper, err := monitor.NewReaper(client.KV(), monitor.Options{
		Prefix: o.prefix, RequestTimeout: consulclient.RequestTimeout(o.consulTimeout), Now: a.Now,
	})
	if err != nil {
		log.Error(err)
		return &said{refuse(err)}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopWatching := runner.OnSignal(a.Signals, cancel)
	var freed []monitor.Freed
	var verdicts []monitor.NodeVerdict
	var unread []error
	switch {
	case o.catalog:
		// Reaping is idempotent, so a failed attempt is simply made again; what an attempt
		// freed before failing is kept for the report.
		err = retry.do(ctx, "reap", func(ctx context.Context) error {
			res, err := reaper.ReapCatalog(ctx, client.Catalog(), client.Health(), monitor.CatalogOptions{Grace: o.grace, DryRun: o.dryRun})
			verdicts = res.Verdicts
			if o.dryRun {
				freed = res.Freed // a dry run reports its last look only
			} else {
				freed = append(freed, res.Freed...)
			}
			return err
		})
	case o.dryRun:
		err = retry.do(ctx, "reap", func(ctx context.Context) error {
			rep, err := reaper.Find(ctx, o.match)
			freed, unread = rep.Freed, rep.Unread // a dry run reports its last look only
			return err
		})
	default:
		var rep monitor.Report
		rep, err = reaper.Reap(ctx, o.match, retry.do)
		freed, unread = rep.Freed, rep.Unread
	}
	sig := stopWatching()
	for _, u := range unread {
		log.WithError(explain(u)).Warn("tier not read: a slot there, if any, is not freed")
	}
	var hidden []string
	for _, v := range verdicts {
		if v.Hidden {
			hidden = append(hidden, v.Node)
		}
	}
	a.printReaped(a.Stdout, o, freed, verdicts, err == nil && len(hidden) == 0)
	switch {
	case err == nil && len(hidden) > 0:
		// The reaper cannot do its job with this token: that must not pass as "nothing to free".
		err = fmt.Errorf("consul refused the token: it lacks node:read on %s (the catalog hid them); give the reaper node_prefix \"\" { policy = \"read\" }",
			strings.Join(hidden, ", "))
		log.Error(err)
		return &said{refuse(err)}
	case err == nil:
		return nil
	case sig != nil:
		log.WithError(err).Warnf("stopped by %v", sig)
		return &said{fmt.Errorf("%w: %v", runner.ErrStopped, sig)}
	}
	if err = explain(err); unavailable(err) {
		log.WithError(err).Error("consul unavailable")
	} else {
		log.WithError(err).Error("consul refused the reaping")
	}
	return &said{err}
}

// printReaped writes one line per slot freed (or that would be), and, for the catalog, one
// line per node that is dead or on its way. complete says the reaping read every tier: only
// then may it say there was nothing to free.
func (a *App) printReaped(w io.Writer, o reapOptions, freed []monitor.Freed, verdicts []monitor.NodeVerdict, complete bool) {
	for _, v := range verdicts {
		if v.Reason != "alive" {
			fmt.Fprintf(w, "node %s: %s\n", safetext.Text(v.Node), safetext.Text(v.Reason))
		}
	}
	verb := "freed"
	if o.dryRun {
		verb = "would free"
	}
	for _, f := range freed {
		var about []string
		switch {
		case f.Queued:
			about = append(about, "queue entry")
		case f.Converged:
			about = append(about, "convergence record")
		}
		if f.State != "" {
			about = append(about, "state "+safetext.Text(string(f.State)))
		}
		if f.InstanceID != "" {
			about = append(about, "instance "+safetext.Text(f.InstanceID))
		}
		if f.Node != "" {
			about = append(about, "node "+safetext.Text(f.Node))
		}
		switch {
		case f.Queued && !f.StartedAt.IsZero():
			about = append(about, "waiting since "+f.StartedAt.UTC().Format(time.RFC3339))
		case f.Converged && !f.StartedAt.IsZero():
			about = append(about, "converged "+f.StartedAt.UTC().Format(time.RFC3339))
		case !f.StartedAt.IsZero():
			about = append(about, "started "+f.StartedAt.UTC().Format(time.RFC3339))
		}
		if len(about) == 0 {
			about = append(about, "unreadable value")
		}
		fmt.Fprintf(w, "%s %s %s (%s)\n", verb, safetext.Text(f.Tier), safetext.Text(f.Holder), strings.Join(about, ", "))
	}
	if len(freed) == 0 && complete {
		target := o.target
		if o.catalog {
			target = "a node that is gone"
		}
		fmt.Fprintf(w, "nothing to free: no slot, queue entry or convergence record belongs to %s\n", target)
	}
}
