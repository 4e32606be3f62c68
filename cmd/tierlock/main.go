// Command tierlock runs a configuration-management command (chef-client by default) on only a
// few hosts of a tier at a time, with Consul KV as the shared truth. See README.md.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tierlock/tierlock/internal/safetext"
)

// Set at build time with -ldflags -X (the build has no VCS stamping).
var (
	version = "dev"
	commit  = "unknown"
	date    = "unknown"
)

func main() {
	// Caught from the start: while the settings file is read a signal ends tierlock (see
	// loadConfig), before the command runs it cancels the wait for a slot, while it runs it is
	// forwarded to it.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	app := &App{
		Stdout:  os.Stdout,
		Stderr:  os.Stderr,
		Signals: sigs,
		Now:     time.Now,
		Build:   Build{Version: version, Commit: commit, Date: date},
	}
	// The host's settings file goes into the environment first, under what the environment
	// already holds, so the flags' env vars, Consul's own variables and the command all see it
	// just as they do under tierlock.service.
	if err := loadConfig(os.Args[1:], app.cliApp().Commands, osConfigSource(), sigs); err != nil {
		fmt.Fprintf(os.Stderr, "tierlock: %s\n", safetext.Text(message(err)))
		os.Exit(exitCode(err))
	}
	os.Exit(app.Run(context.Background(), os.Args))
}
