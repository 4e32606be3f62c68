package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/urfave/cli/v2"

	"github.com/tierlock/tierlock/internal/consulclient"
	"github.com/tierlock/tierlock/internal/safetext"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/monitor"
)

func (a *App) checkCommand() *cli.Command {
	unknown := func(format string, args ...any) error {
		// The reason may quote a stored key: no line or perfdata of its own.
		fmt.Fprintf(a.Stdout, "TIERLOCK UNKNOWN - %s\n", safetext.Plugin(fmt.Sprintf(format, args...)))
		return &pluginStatus{monitor.Unknown}
	}
	return &cli.Command{
		Name:  "check",
		Usage: "Nagios plugin: alert on slots held too long, failed runs, drift and invalid settings",
		Description: "Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. A running slot warns past -w and is critical\n" +
			"past -c; a failed or interrupted one warns at once and is critical past -c. -w and -c take\n" +
			"durations (90m, 2h) or Nagios ranges in seconds (3600, 10:, ~:7200, @0:60). A host whose last\n" +
			"successful run (its converged/ record) is older than --converge-warning warns, older than\n" +
			"--converge-critical is critical; the hosts are named. Disabled tiers are exempt.",
		Flags: []cli.Flag{
			tierFlag(false), prefixFlag(),
			&cli.StringFlag{Name: "warning", Aliases: []string{"w"}, Value: "1h", Usage: "age of a held slot that warns"},
			&cli.StringFlag{Name: "critical", Aliases: []string{"c"}, Value: "2h", Usage: "age of a held slot that is critical"},
			&cli.DurationFlag{Name: "rollout-warning", Value: monitor.DefaultRolloutWarn, Usage: "how long a rollout's canary may go without a success before it warns"},
			&cli.DurationFlag{Name: "queue-warning", Value: monitor.DefaultQueueWarn, Usage: "how long the first waiter of a tier may wait before it warns (run's --wait default plus a margin)"},
			&cli.StringFlag{Name: "converge-warning", Value: "4h", Usage: "age of a host's last convergence that warns"},
			&cli.StringFlag{Name: "converge-critical", Value: "24h", Usage: "age of a host's last convergence that is critical"},
			&cli.DurationFlag{Name: "timeout", Aliases: []string{"t"}, Value: 10 * time.Second, Usage: "give up (UNKNOWN) after this long"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "a line for every tier, not only problem tiers"},
			&cli.DurationFlag{Name: "disabled-warning", Usage: "warn about a tier disabled for longer than this (0: never)"},
			defaultMaxFlag(),
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return unknown("%v", err)
		},
		Action: func(c *cli.Context) error {
			var th monitor.Thresholds
			var err error
			if th.Warn, err = monitor.ParseRange(c.String("warning")); err != nil {
				return unknown("-w: %v", err)
			}
			if th.Crit, err = monitor.ParseRange(c.String("critical")); err != nil {
				return unknown("-c: %v", err)
			}
			if th.Rollout = c.Duration("rollout-warning"); th.Rollout <= 0 {
				return unknown("--rollout-warning %s must be positive", th.Rollout)
			}
			if th.Queue = c.Duration("queue-warning"); th.Queue <= 0 {
				return unknown("--queue-warning %s must be positive", th.Queue)
			}
			if th.ConvergeWarn, err = monitor.ParseRange(c.String("converge-warning")); err != nil {
				return unknown("--converge-warning: %v", err)
			}
			if th.ConvergeCrit, err = monitor.ParseRange(c.String("converge-critical")); err != nil {
				return unknown("--converge-critical: %v", err)
			}
			if th.DisabledWarn = c.Duration("disabled-warning"); th.DisabledWarn < 0 {
				return unknown("--disabled-warning %s must not be negative", th.DisabledWarn)
			}
			timeout := c.Duration("timeout")
			if timeout <= 0 {
				return unknown("-t %s must be positive", timeout)
			}
			ctx, cancel := context.WithTimeout(c.Context, timeout)
			defer cancel()
			snaps, err := a.readTiers(ctx, c, timeout)
			switch {
			case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
				return unknown("no answer from Consul within %s", timeout)
			case err != nil:
				return unknown("%v", err)
			}
			v := monitor.Judge(snaps, a.Now(), th)
			fmt.Fprint(a.Stdout, v.Output(c.Bool("verbose")))
			if v.Status != monitor.OK {
				return &pluginStatus{v.Status}
			}
			return nil
		},
	}
}

// readTiers reads --tier, or every tier under --prefix, retrying Consul errors within timeout.
func (a *App) readTiers(ctx context.Context, c *cli.Context, timeout time.Duration) ([]*lock.Snapshot, error) {
	client, err := consulclient.New()
	if err != nil {
		return nil, err
	}
	return a.readTiersWith(ctx, c, client, timeout)
}

// readTiersWith is readTiers through client, for a caller that reads again and again (the
// watch) and keeps one client, and with it its connection, for all of them.
func (a *App) readTiersWith(ctx context.Context, c *cli.Context, client *api.Client, timeout time.Duration) ([]*lock.Snapshot, error) {
	tier := c.String("tier")
	prefix, err := prefixOf(c)
	if err != nil {
		return nil, err
	}
	retry := a.newRetry(timeout, quietLog()).interactive()
	opts := lock.Options{Prefix: prefix, Tier: tier, DefaultMax: c.Int("default-max"), RequestTimeout: consulclient.RequestTimeout(timeout), Now: a.Now}
	kv := client.KV()
	if tier == "" {
		var snaps []*lock.Snapshot
		err := retry.do(ctx, "read", func(ctx context.Context) (err error) {
			snaps, err = lock.ReadAll(ctx, kv, opts)
			return err
		})
		return snaps, explain(err)
	}
	sem, err := lock.New(kv, opts)
	if err != nil {
		return nil, fmt.Errorf("--tier: %w", err)
	}
	snap, err := readTier(ctx, sem, retry, "read")
	if err != nil {
		return nil, explain(err)
	}
	if !snap.Exists() {
		return nil, fmt.Errorf("tier %s has no keys under %s/", tier, prefix)
	}
	return []*lock.Snapshot{snap}, nil
}
