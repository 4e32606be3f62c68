package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
	"github.com/tierlock/tierlock/runner"
)

// runOptions are run's flags, checked.
type runOptions struct {
	prefix, tier, holder, instanceID, stateDir string
	metricsFile                                string
	wait, splay, timeout, killGrace            time.Duration
	consulTimeout, queueTTL                    time.Duration
	successCodes                               map[int]bool
	defaultMax                                 int
	queueOrder                                 lock.QueueOrder
	dryRun                                     bool
	passConsulToken                            bool
	command                                    []string // as given
	path                                       string   // command[0] resolved on $PATH
	// The rollout: the revision given, or the command that prints it (run once per run,
	// within revisionTimeout); the health check and its timeout.
	revision                       string
	revisionCommand, healthCommand []string
	revisionTimeout, healthTimeout time.Duration
	healthInterval                 time.Duration
}

func runFlags() []cli.Flag {
	return append([]cli.Flag{
		tierFlag(true), prefixFlag(),
		&cli.StringFlag{Name: "holder", Usage: "this host's name in the tier (default: the hostname)", EnvVars: env("HOLDER")},
		&cli.DurationFlag{Name: "wait", Value: 10 * time.Minute, Usage: "how long to wait for a free slot before giving up (exit 75)", EnvVars: env("WAIT")},
		&cli.StringFlag{Name: "queue-order", Value: string(lock.OrderConverged), Usage: "how waiters rank: converged (least recently converged first, then arrival) or arrival (strict FIFO)", EnvVars: env("QUEUE_ORDER")},
		&cli.DurationFlag{Name: "queue-ttl", Value: lock.DefaultQueueTTL, Usage: "TTL of the Consul session that keeps this host's place in line: a waiter that dies leaves the line within twice this, and one that waits renews it once per TTL (10s to 24h)", EnvVars: env("QUEUE_TTL")},
		&cli.DurationFlag{Name: "splay", Usage: "sleep a random time up to this before starting", EnvVars: env("SPLAY")},
		&cli.DurationFlag{Name: "timeout", Value: 2 * time.Hour, Usage: "stop the command after this long (SIGTERM, then SIGKILL); 0: never", EnvVars: env("TIMEOUT")},
		&cli.DurationFlag{Name: "kill-grace", Value: runner.DefaultKillGrace, Usage: "time between SIGTERM and SIGKILL when stopping the command", EnvVars: env("KILL_GRACE")},
		&cli.IntSliceFlag{Name: "success-codes", Usage: "exit codes besides 0 that count as success, e.g. 35 (chef: reboot scheduled)", EnvVars: env("SUCCESS_CODES")},
		defaultMaxFlag(), consulTimeoutFlag(),
		&cli.StringFlag{Name: "state-dir", Value: "/run/tierlock", Usage: "directory of the per-tier local lock files", EnvVars: env("STATE_DIR")},
		&cli.StringFlag{Name: "instance-id", Usage: "instance id to record, or imds to ask the EC2 metadata service", EnvVars: env("INSTANCE_ID")},
		&cli.StringFlag{Name: "metrics-file", Usage: "after each run, write its result here for node_exporter's textfile collector (*.prom)", EnvVars: env("METRICS_FILE")},
		&cli.BoolFlag{Name: "dry-run", Usage: "decide and print, take nothing, run nothing", EnvVars: env("DRY_RUN")},
		&cli.BoolFlag{Name: "pass-consul-token", Usage: "leave CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE and CONSUL_HTTP_AUTH in the command's environment (by default they are removed)", EnvVars: env("PASS_CONSUL_TOKEN")},
		&cli.StringFlag{Name: "command", Usage: "command line to run when none follows --: split into words as sh does, nothing expanded (default: chef-client)", EnvVars: env("COMMAND")},
		&cli.StringFlag{Name: "revision", Usage: "the revision of the configuration this run applies (a git SHA, a Policyfile revision_id): the run takes part in the tier's progressive rollout (docs/rollout.md)", EnvVars: env("REVISION")},
		&cli.StringFlag{Name: "revision-command", Usage: "command line that prints the revision (e.g. 'git -C /var/chef rev-parse HEAD'), split as --command is; it must succeed and print one within --revision-timeout, or nothing runs (exit 78)", EnvVars: env("REVISION_COMMAND")},
		&cli.DurationFlag{Name: "revision-timeout", Value: time.Minute, Usage: "how long --revision-command may take", EnvVars: env("REVISION_TIMEOUT")},
		&cli.StringFlag{Name: "health-command", Usage: "command line that must exit 0 after the command succeeds for the run to count as a success; retried until --health-timeout, otherwise the slot is held as unhealthy", EnvVars: env("HEALTH_COMMAND")},
		&cli.DurationFlag{Name: "health-timeout", Value: 5 * time.Minute, Usage: "how long the health command has to pass", EnvVars: env("HEALTH_TIMEOUT")},
		&cli.DurationFlag{Name: "health-interval", Value: 5 * time.Second, Usage: "time between tries of the health command", EnvVars: env("HEALTH_INTERVAL")},
	}, logFlags()...)
}

// parseRunOptions checks every flag before anything touches Consul or the host.
func parseRunOptions(c *cli.Context) (runOptions, error) {
	o := runOptions{
		prefix: c.String("prefix"), tier: c.String("tier"), holder: c.String("holder"),
		instanceID: c.String("instance-id"), stateDir: c.String("state-dir"), metricsFile: c.String("metrics-file"),
		wait: c.Duration("wait"), splay: c.Duration("splay"), timeout: c.Duration("timeout"),
		killGrace: c.Duration("kill-grace"), consulTimeout: c.Duration("consul-timeout"), queueTTL: c.Duration("queue-ttl"),
		defaultMax: c.Int("default-max"), dryRun: c.Bool("dry-run"), passConsulToken: c.Bool("pass-consul-token"),
		command: c.Args().Slice(), successCodes: map[int]bool{0: true},
	}
	if o.tier == "" {
		return o, fmt.Errorf("--tier is required (ENVIRONMENT/SERVICE, or TIERLOCK_TIER)")
	}
	if err := schema.ValidateTier(o.tier); err != nil {
		return o, fmt.Errorf("--tier: %w", err)
	}
	if _, err := prefixOf(c); err != nil {
		return o, err
	}
	if o.holder == "" {
		h, err := os.Hostname()
		if err != nil {
			return o, fmt.Errorf("no --holder given and no hostname: %w", err)
		}
		o.holder = h
	}
	if err := schema.ValidateName("holder", o.holder); err != nil {
		return o, fmt.Errorf("--holder: %w", err)
	}
	if o.instanceID != "" && o.instanceID != "imds" {
		if err := schema.ValidateName("instance id", o.instanceID); err != nil {
			return o, fmt.Errorf("--instance-id: %w", err)
		}
	}
	for name, d := range map[string]time.Duration{"wait": o.wait, "splay": o.splay, "timeout": o.timeout, "kill-grace": o.killGrace} {
		if d < 0 {
			return o, fmt.Errorf("--%s %s is negative", name, d)
		}
	}
	if err := lock.ValidateQueueTTL(o.queueTTL); err != nil {
		return o, fmt.Errorf("--queue-ttl %s: %w", o.queueTTL, err)
	}
	order, err := lock.ParseQueueOrder(c.String("queue-order"))
	if err != nil {
		return o, fmt.Errorf("--queue-order: %w", err)
	}
	o.queueOrder = order
	if _, err := consulTimeoutOf(c); err != nil {
		return o, err
	}
	if o.defaultMax < -1 {
		return o, fmt.Errorf("--default-max %d is below -1 (-1 unlimited, 0 disabled, N at most N)", o.defaultMax)
	}
	for _, code := range c.IntSlice("success-codes") {
		if code < 1 || code > 255 {
			return o, fmt.Errorf("--success-codes: %d is not an exit code (1-255)", code)
		}
		o.successCodes[code] = true
	}
	// A command after -- is the more specific: it wins over --command and TIERLOCK_COMMAND,
	// which the packaged unit and cron line read from /etc/default/tierlock.
	if line := c.String("command"); len(o.command) == 0 && line != "" {
		words, err := splitCommand(line)
		if err != nil {
			return o, fmt.Errorf("--command %q: %w", line, err)
		}
		o.command = words
	}
	if len(o.command) == 0 {
		o.command = []string{"chef-client"}
	}
	if err := parseRolloutOptions(c, &o); err != nil {
		return o, err
	}
	path, err := exec.LookPath(o.command[0])
	if err != nil {
		return o, fmt.Errorf("command %q: %w", o.command[0], err)
	}
	o.path = path
	return o, nil
}

// splitCommand splits --command into words with sh's quoting: blanks separate words, 'single
// quotes' keep everything, "double quotes" keep everything but \\ \" \$ \` escapes, a
// backslash outside quotes keeps the next character. No shell runs, so nothing is expanded: an
// unquoted character a shell would act on ($ ` | & ; < > ( ) or a newline) is an error rather
// than a silent surprise; `sh -c '...'` gets a real shell.
func splitCommand(line string) ([]string, error) {
	var (
		words  []string
		word   strings.Builder
		inWord bool
	)
	end := func() {
		if inWord {
			words = append(words, word.String())
			word.Reset()
			inWord = false
		}
	}
	for i := 0; i < len(line); i++ {
		switch ch := line[i]; ch {
		case ' ', '\t':
			end()
		case '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated ' at byte %d", i)
			}
			word.WriteString(line[i+1 : i+1+j])
			inWord, i = true, i+1+j
		case '"':
			start := i
			for i++; ; i++ {
				if i >= len(line) {
					return nil, fmt.Errorf("unterminated \" at byte %d", start)
				}
				c := line[i]
				if c == '"' {
					break
				}
				if c == '$' || c == '`' {
					return nil, fmt.Errorf("%q at byte %d would be expanded by a shell, and tierlock runs none: escape it with \\ or use single quotes", c, i)
				}
				if c == '\\' && i+1 < len(line) && strings.IndexByte("\\\"$`\n", line[i+1]) >= 0 {
					i++
					if line[i] == '\n' {
						continue // a line continuation, as in sh
					}
					c = line[i]
				}
				word.WriteByte(c)
			}
			inWord = true
		case '\\':
			if i+1 >= len(line) {
				return nil, fmt.Errorf("trailing \\")
			}
			i++
			if line[i] != '\n' {
				word.WriteByte(line[i])
				inWord = true
			}
		case '$', '`', '|', '&', ';', '<', '>', '(', ')', '\n':
			return nil, fmt.Errorf("unquoted %q at byte %d: tierlock runs no shell; quote it, or run sh -c '...'", ch, i)
		default:
			word.WriteByte(ch)
			inWord = true
		}
	}
	end()
	if len(words) == 0 {
		return nil, fmt.Errorf("no command in it")
	}
	return words, nil
}

// parseRolloutOptions checks --revision, --revision-command and the health check.
func parseRolloutOptions(c *cli.Context, o *runOptions) error {
	o.revision = c.String("revision")
	o.revisionTimeout, o.healthTimeout, o.healthInterval = c.Duration("revision-timeout"), c.Duration("health-timeout"), c.Duration("health-interval")
	line := c.String("revision-command")
	switch {
	case o.revision != "" && line != "":
		return fmt.Errorf("--revision %q and --revision-command: give one of them", o.revision)
	case o.revision != "":
		if err := schema.ValidateRevision(o.revision); err != nil {
			return fmt.Errorf("--revision: %w", err)
		}
	case line != "":
		var err error
		if o.revisionCommand, err = commandFlag("revision-command", line); err != nil {
			return err
		}
	}
	if line := c.String("health-command"); line != "" {
		var err error
		if o.healthCommand, err = commandFlag("health-command", line); err != nil {
			return err
		}
	}
	for name, d := range map[string]time.Duration{"revision-timeout": o.revisionTimeout, "health-timeout": o.healthTimeout, "health-interval": o.healthInterval} {
		if d <= 0 {
			return fmt.Errorf("--%s %s: want more than 0", name, d)
		}
	}
	return nil
}

// commandFlag is the command line a flag names, split as --command is, its program found.
func commandFlag(name, line string) ([]string, error) {
	words, err := splitCommand(line)
	if err != nil {
		return nil, fmt.Errorf("--%s %q: %w", name, line, err)
	}
	if _, err := exec.LookPath(words[0]); err != nil {
		return nil, fmt.Errorf("--%s: %w", name, err)
	}
	return words, nil
}
