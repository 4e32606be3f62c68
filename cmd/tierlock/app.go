package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/tierlock/tierlock/internal/safelog"
	"github.com/tierlock/tierlock/internal/safetext"
)

// Build describes this binary.
type Build struct {
	Version, Commit, Date string
}

// App is tierlock's command line: main only wires it, tests run it in-process.
type App struct {
	Stdout, Stderr io.Writer
	// Signals are SIGINT and SIGTERM as they arrive.
	Signals <-chan os.Signal
	Now     func() time.Time
	Build   Build
}

// description is the man page's DESCRIPTION (and the end of --help): what the flags alone do
// not say.
const description = `tierlock takes a slot of the tier in Consul KV, runs the command (chef-client by default),
frees the slot when the command succeeds and keeps it when the command fails, so a bad change
stops spreading once max_concurrent hosts of the tier have failed.

Every flag can also be set in the environment: --tier is TIERLOCK_TIER, --wait is
TIERLOCK_WAIT, --success-codes is TIERLOCK_SUCCESS_CODES, and so on. Consul's address, token
and TLS settings come from Consul's own variables: CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN_FILE,
CONSUL_CACERT and the others. tierlock reads them, as tierlock.service does, from
/etc/default/tierlock (or --config FILE, TIERLOCK_CONFIG), meaning what systemd's
EnvironmentFile= makes of it: only TIERLOCK_ and CONSUL_ names; as root, only a file owned by
root that no one else can write. The environment and the flags override the file. status and
check read no TIERLOCK_TIER: they cover every tier unless --tier is given. tierlock.timer runs
the service every 15 minutes once enabled.

Exit status of run: 0 the command succeeded and its slot was released; the command's own code
when it failed (the slot stays held); 75 skipped, nothing ran (tier disabled, no slot within
--wait, another run on this host, Consul unreachable); 78 configuration error; 70 the command
succeeded but the slot could not be released.`

// cliApp is the command line's definition: what Run runs, and what the man page and the shell
// completion are generated from.
func (a *App) cliApp() *cli.App {
	app := &cli.App{
		Name:        "tierlock",
		Usage:       "run chef-client (or any command) on only a few hosts of a tier at a time",
		Description: description,
		Version:     a.Build.Version,
		Writer:      a.Stdout, ErrWriter: a.Stderr,
		// urfave/cli answers --generate-bash-completion from the definitions below; the
		// scripts `tierlock completion` prints only ask it.
		EnableBashCompletion: true,
		Commands: []*cli.Command{
			a.runCommand(),
			a.statusCommand(),
			a.setMaxCommand(),
			a.disableCommand(),
			a.rolloutCommand(),
			a.enableCommand(),
			a.releaseCommand(),
			a.repairCommand(),
			a.checkCommand(),
			a.reapCommand(),
			a.forgetCommand(),
			a.aclPolicyCommand(),
			a.versionCommand(),
			a.completionCommand(),
			a.manCommand(),
		},
		// Exit codes are ours to choose, not cli's.
		ExitErrHandler: func(*cli.Context, error) {},
	}
	// main reads the settings file before cli parses anything (see applyConfig); the flag is
	// declared here so that --help, the man page and completion know it.
	for _, cmd := range app.Commands {
		switch cmd.Name {
		case "version", "completion", "man":
		default:
			cmd.Flags = append(cmd.Flags, configFlag())
		}
	}
	return app
}

// tokenFlags are flags people reach for to hand a Consul token over. A token on the command
// line is readable by every user of the host (ps, /proc, shell history), so tierlock has no
// such flag and names the safe ways instead.
var tokenFlags = []string{"token", "consul-token", "http-token", "acl-token", "consul-http-token"}

// tokenFlag returns the token flag among args (before "--"), without its value, or "".
func tokenFlag(args []string) string {
	for _, arg := range args {
		if arg == "--" {
			return ""
		}
		name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if strings.HasPrefix(arg, "-") && slices.Contains(tokenFlags, strings.ToLower(name)) {
			return "--" + name
		}
	}
	return ""
}

// completionFlag is the last argument of every request the completion scripts make.
const completionFlag = "--generate-bash-completion"

// completing tells a completion request from a command line. For a request, ask is what
// urfave/cli may answer it from, or nil when "--" is on the line before the word being
// completed: every word after it is the command's, and there is nothing of ours to offer.
// The word being completed (the last before the request) is not a separator even when it is
// "--": that is a user asking for the long flags.
func completing(args []string) (request bool, ask []string) {
	if len(args) < 2 || args[len(args)-1] != completionFlag {
		return false, nil
	}
	words := args[1 : len(args)-1]
	if n := len(words); n > 0 && words[n-1] == "--" {
		words = words[:n-1]
	}
	if slices.Contains(words, "--") {
		return true, nil
	}
	return true, append(append([]string{args[0]}, words...), completionFlag)
}

// disarm makes every action of cmds (and of their subcommands) a no-op, so that a completion
// request can only ever print candidates, whatever urfave/cli decides to do with the line.
func disarm(cmds []*cli.Command) {
	for _, cmd := range cmds {
		cmd.Action = func(*cli.Context) error { return nil }
		cmd.Before, cmd.After = nil, nil
		disarm(cmd.Subcommands)
	}
}

// Run runs the command line args and returns the exit code.
func (a *App) Run(ctx context.Context, args []string) int {
	// TAB must never run anything. urfave/cli stops treating the request as one once "--" is
	// on the line, and would run the command (take a slot, run chef-client); so tierlock
	// answers such a request itself, with no candidates (the shell then completes file
	// names). Any other request goes to urfave/cli with every action disarmed, so that no
	// path through it can reach Consul or start a process.
	if request, ask := completing(args); request {
		if ask == nil {
			return exitCode(nil)
		}
		app := a.cliApp()
		disarm(app.Commands)
		app.Action = func(*cli.Context) error { return nil }
		app.Before, app.After = nil, nil
		app.Writer, app.ErrWriter = a.Stdout, io.Discard
		_ = app.RunContext(ctx, ask)
		return exitCode(nil)
	}
	var err error
	if f := tokenFlag(args); f != "" {
		err = usage("%s: a Consul token is never given on the command line, where every user of the "+
			"host can read it (ps, /proc, shell history); name a file holding it in CONSUL_HTTP_TOKEN_FILE "+
			"(or set CONSUL_HTTP_TOKEN)", f)
	} else {
		err = a.cliApp().RunContext(ctx, revisionLast(args))
	}
	if err != nil {
		if msg := message(err); msg != "" {
			fmt.Fprintf(a.Stderr, "tierlock: %s\n", safetext.Text(msg))
		}
	}
	return exitCode(err)
}

// newLogger builds the logger from --log-format and --log-level. Logs go to stderr, so the
// command's own output on stdout stays clean.
func (a *App) newLogger(c *cli.Context) (*logrus.Logger, error) {
	log := logrus.New()
	log.Out = a.Stderr
	switch f := c.String("log-format"); f {
	case "text":
		log.Formatter = &logrus.TextFormatter{FullTimestamp: true, TimestampFormat: time.RFC3339}
	case "json":
		log.Formatter = &logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano}
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", f)
	}
	level, err := logrus.ParseLevel(c.String("log-level"))
	if err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.String("log-level"))
	}
	log.Level = level
	// Messages and fields may carry keys and values read from Consul.
	return safelog.Wrap(log), nil
}

func (a *App) versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print version, git SHA and build date",
		Action: func(c *cli.Context) error {
			fmt.Fprintf(a.Stdout, "tierlock %s\ngit: %s\nbuilt: %s\n", a.Build.Version, a.Build.Commit, a.Build.Date)
			return nil
		},
	}
}
