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
)

// Set at build time with -ldflags -X (the build has no VCS stamping).
var (
	version = "dev"
	commit  = "unknown"
	date    = "unknown"
)

func main() {
	// Caught from the start: before the command runs a signal cancels the wait for a slot,
	// while it runs the signal is forwarded to it.
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
	if err := applyConfig(os.Args[1:], configSource{lookup: os.LookupEnv, setenv: os.Setenv, readFile: os.ReadFile}); err != nil {
		fmt.Fprintf(os.Stderr, "tierlock: %v\n", err)
		os.Exit(exitConfig)
	}
	os.Exit(app.Run(context.Background(), os.Args))
}
