package main

import (
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// Every flag that more than one command has is declared here, once: same name, default,
// environment variable and check wherever it appears.

// defaultConsulTimeout is how long Consul may keep failing before a command gives up (within
// 1.5 × of it, see internal/retry). Long enough for a leader election and a restart of the
// local agent; a person at a terminal is told at once when nothing listens at all.
const defaultConsulTimeout = time.Minute

// env is the flag's environment variable: TIERLOCK_<NAME>.
func env(name string) []string { return []string{"TIERLOCK_" + name} }

func prefixFlag() cli.Flag {
	return &cli.StringFlag{Name: "prefix", Value: schema.DefaultPrefix, Usage: "Consul KV prefix of all tiers", EnvVars: env("PREFIX")}
}

// tierFlag is --tier of a command that works in one tier (required) or looks at the fleet. A
// fleet-wide command (status, check) reads no TIERLOCK_TIER: that names the host's own tier,
// for run, and is in the environment of every shell that read the settings file; a check
// that took it would say OK for one tier while another is critical.
func tierFlag(required bool) cli.Flag {
	if !required {
		return &cli.StringFlag{Name: "tier", Usage: "the tier, ENVIRONMENT/SERVICE (default: every tier under the prefix; TIERLOCK_TIER is not read)"}
	}
	return &cli.StringFlag{Name: "tier", Usage: "the tier, ENVIRONMENT/SERVICE (required)", EnvVars: env("TIER")}
}

func consulTimeoutFlag() cli.Flag {
	return &cli.DurationFlag{Name: "consul-timeout", Value: defaultConsulTimeout, Usage: "how long Consul may keep failing before giving up", EnvVars: env("CONSUL_TIMEOUT")}
}

func defaultMaxFlag() cli.Flag {
	return &cli.IntFlag{Name: "default-max", Value: lock.DefaultMaxConcurrent, Usage: "max_concurrent of a tier that has none stored", EnvVars: env("DEFAULT_MAX")}
}

// logFlags are the flags every command that logs has.
func logFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "log-format", Value: "text", Usage: "log format: text or json", EnvVars: env("LOG_FORMAT")},
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "log level: debug, info, warn, error", EnvVars: env("LOG_LEVEL")},
	}
}

func configFlag() cli.Flag {
	return &cli.StringFlag{Name: "config", Value: DefaultConfigFile, EnvVars: []string{configEnv},
		Usage: "settings file of NAME=value lines, as tierlock.service reads it; the environment and flags override it"}
}

// prefixOf is the checked --prefix.
func prefixOf(c *cli.Context) (string, error) {
	prefix := c.String("prefix")
	if err := schema.ValidatePrefix(prefix); err != nil {
		return "", usage("--prefix: %w", err)
	}
	return prefix, nil
}

// consulTimeoutOf is the checked --consul-timeout.
func consulTimeoutOf(c *cli.Context) (time.Duration, error) {
	timeout := c.Duration("consul-timeout")
	if timeout <= 0 {
		return 0, usage("--consul-timeout %s must be positive", timeout)
	}
	return timeout, nil
}
