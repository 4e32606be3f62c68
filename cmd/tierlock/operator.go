package main

import (
	"fmt"
	"io"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/tierlock/tierlock/internal/consulclient"
	"github.com/tierlock/tierlock/internal/safelog"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// The operator commands (status, set-max, disable, enable, release, repair) share their
// flags, their Consul client and their exit codes: 0 done (also when there was nothing to
// change), 78 bad input or a refusal, 75 Consul unavailable.

// operatorFlags are the flags of a command that changes one tier.
func operatorFlags(extra ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{tierFlag(true), prefixFlag(), consulTimeoutFlag()}, extra...)
}

// holderFlag is the checked --holder of release and forget: required, and a valid name.
func holderFlag(c *cli.Context) (string, error) {
	holder := c.String("holder")
	if holder == "" {
		return "", usage("--holder is required")
	}
	if err := schema.ValidateName("holder", holder); err != nil {
		return "", usage("--holder: %w", err)
	}
	return holder, nil
}

// operator is what a command that reads or changes tiers needs.
type operator struct {
	prefix, tier string
	retry        *consulRetry
	kv           lock.KV
	sem          *lock.Semaphore // nil when no --tier was given
}

// newOperator checks the common flags and connects to Consul. Retry warnings go to stderr.
func (a *App) newOperator(c *cli.Context, tierRequired bool) (*operator, error) {
	prefix, err := prefixOf(c)
	if err != nil {
		return nil, err
	}
	o := &operator{prefix: prefix, tier: c.String("tier")}
	if o.tier == "" && tierRequired {
		return nil, usage("--tier is required (ENVIRONMENT/SERVICE)")
	}
	if o.tier != "" {
		if err := schema.ValidateTier(o.tier); err != nil {
			return nil, usage("--tier: %w", err)
		}
	}
	timeout, err := consulTimeoutOf(c)
	if err != nil {
		return nil, err
	}
	client, err := consulclient.New()
	if err != nil {
		return nil, refuse(err)
	}
	logger := logrus.New()
	logger.Out = a.Stderr
	safelog.Wrap(logger)
	o.retry = a.newRetry(timeout, logrus.NewEntry(logger).WithField("tier", o.tier)).interactive()
	o.kv = client.KV()
	note, err := a.operatorNote(c, client.ACL(), consulclient.RequestTimeout(timeout))
	if err != nil {
		return nil, refuse(err)
	}
	if o.tier != "" {
		o.sem, err = lock.New(o.kv, lock.Options{Prefix: o.prefix, Tier: o.tier, DefaultMax: lock.DefaultMaxConcurrent,
			RequestTimeout: consulclient.RequestTimeout(timeout), Now: a.Now, Note: note})
		if err != nil {
			return nil, refuse(err)
		}
	}
	return o, nil
}

// maxText is max_concurrent as operators say it.
func maxText(s *lock.Snapshot) string {
	switch {
	case !s.MaxSet:
		return fmt.Sprintf("%d (default)", s.Max)
	case s.Max == 0:
		return "0 (disabled)"
	case s.Max < 0:
		return "-1 (unlimited)"
	}
	return fmt.Sprint(s.Max)
}

// quietLog discards retry warnings, for output that must stay one format (the Nagios check).
func quietLog() *logrus.Entry {
	l := logrus.New()
	l.Out = io.Discard
	return logrus.NewEntry(l)
}
