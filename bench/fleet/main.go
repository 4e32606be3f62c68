// Command fleet is the fleet benchmark (`make bench-fleet`): thousands of simulated hosts as
// goroutines in one process, each with its own Consul client and connection, going through
// one tier via the same lock package `tierlock run` uses, and the same hosts through
// api.Semaphore (what `consul lock -n` runs), against one real Consul agent behind a counting
// proxy. It prints a table with ratios to the peer and writes JSON to bench/results/.
// bench/README.md ("Fleet benchmark") describes the method.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
)

func main() {
	if os.Getenv(proxyRoleEnv) == "proxy" {
		os.Exit(proxyMain(os.Args[1:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(Main(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// Main parses args, runs the benchmark, prints the table to stdout and writes the JSON. It
// returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fleet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	consul := fs.String("consul", "", "the consul binary (default: $TIERLOCK_CONSUL, bin/consul, or consul on $PATH)")
	out := fs.String("out", "bench/results", "directory for the JSON results")
	ms := fs.String("m", "100,500,2000", "numbers of hosts, comma-separated")
	ns := fs.String("n", "10,50", "numbers of slots, comma-separated")
	t := fs.Duration("t", 200*time.Millisecond, "each command's run time")
	tools := fs.String("tools", toolTierlock+","+toolPeer, "tools to measure, comma-separated")
	uncontended := fs.Int("uncontended", 20, "sequential uncontended runs per tool (0: none)")
	longWaiters := fs.Int("long-waiters", 2000, "hosts idle in line for the long wait (0: no long wait)")
	longWait := fs.Duration("long-wait", 60*time.Second, "the long wait's measured window")
	settle := fs.Duration("settle", 20*time.Second, "pause between the long wait's last host in line and its window")
	baseline := fs.Duration("baseline", 30*time.Second, "how long the idle agent is measured first")
	queueTTL := fs.Duration("queue-ttl", 0, "tierlock's queue TTL, as run's --queue-ttl (default: run's default)")
	splay := fs.Duration("splay", 0, "spread the contended hosts' starts over this long, each at a random moment, as run's --splay (0: all at once, a burst)")
	deadline := fs.Duration("deadline", 5*time.Minute, "a workload still running after this is stopped and reported incomplete")
	revisions := fs.String("revisions", modeOff, "tierlock's revision modes, comma-separated; they run in the order off, rerun, movers, settled, next, on one tier per workload: "+
		"off (no --revision, a fresh tier), rerun (every host again without a revision: the baseline of the modes after it), "+
		"movers (every host runs once with a new revision R: canary, then doubling batches), "+
		"settled (every host runs R again: no movers), next (every host runs once with R2, which supersedes R); the peer runs in off only")
	heapTo := fs.String("consul-heap", "", "keep the agent's heap profile taken at its largest resident memory in this file (runs it with enable_debug)")
	server := fs.Bool("server", false, "run the agent as a one-server cluster with its state on disk (in a temporary directory), not -dev, which indents every JSON answer")
	agents := fs.Int("agents", 0, "client agents joined to the server, each with a proxy of its own, the hosts dealt over them, as a fleet's hosts each talk to their own agent (0: every host talks to the server through one proxy)")
	byTool := fs.Bool("by-tool", false, "run every contended workload of one tool before the next tool's (default: each workload for every tool in turn), so that neither measures the agent the other left")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg := Config{HeapTo: *heapTo, Server: *server, Agents: *agents, ByTool: *byTool, T: *t, Uncontended: *uncontended, LongWaiters: *longWaiters, LongWait: *longWait,
		Settle: *settle, Baseline: *baseline, Deadline: *deadline, Splay: *splay, Wait: 10 * time.Minute, QueueTTL: *queueTTL, Log: stderr}
	var err error
	if cfg.Ms, err = positiveInts("-m", *ms); err == nil {
		cfg.Ns, err = positiveInts("-n", *ns)
	}
	if err == nil {
		cfg.Tools, err = toolList(*tools)
	}
	if err == nil {
		cfg.Revisions, err = modeList(*revisions)
	}
	if err == nil && (*t < 0 || *uncontended < 0 || *longWaiters < 0 || *longWait <= 0 || *baseline <= 0 || *deadline <= 0 || *splay < 0 || *agents < 0) {
		err = fmt.Errorf("fleet: -t, -uncontended, -long-waiters, -splay, -agents must be >= 0 and -long-wait, -baseline, -deadline > 0")
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if cfg.Consul = *consul; cfg.Consul == "" {
		if cfg.Consul, err = consulagent.Binary(); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	if cfg.Dir, err = os.MkdirTemp("", "tierlock-fleet"); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer os.RemoveAll(cfg.Dir)
	rep, runErr := Run(ctx, cfg)
	if rep == nil {
		fmt.Fprintln(stderr, "fleet:", runErr)
		return 1
	}
	// What was measured before an error is still printed and kept.
	rep.CPUs = runtime.NumCPU()
	printReport(stdout, rep)
	path, err := writeJSON(*out, rep)
	if err != nil {
		fmt.Fprintln(stderr, "fleet:", err)
		return 1
	}
	fmt.Fprintln(stderr, "fleet: wrote", path)
	if runErr != nil {
		fmt.Fprintln(stderr, "fleet: stopped early:", runErr)
		return 1
	}
	return 0
}

func positiveInts(flagName, list string) ([]int, error) {
	var xs []int
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("fleet: %s: %q is not a positive integer", flagName, f)
		}
		xs = append(xs, n)
	}
	return xs, nil
}

// modeList reads -revisions: each mode once, put in the order they run (revisionModes). A mode
// that builds on movers (settled, next) needs it, as rerun needs off.
func modeList(list string) ([]string, error) {
	asked := map[string]bool{}
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		known := false
		for _, m := range revisionModes {
			known = known || f == m
		}
		if !known {
			return nil, fmt.Errorf("fleet: -revisions: %q is none of %s", f, strings.Join(revisionModes, ", "))
		}
		asked[f] = true
	}
	if (asked[modeSettled] || asked[modeNext]) && !asked[modeMovers] {
		return nil, fmt.Errorf("fleet: -revisions: %s and %s run after %s, on the tier it left: ask for it too", modeSettled, modeNext, modeMovers)
	}
	if asked[modeRerun] && !asked[modeOff] {
		return nil, fmt.Errorf("fleet: -revisions: %s runs after %s, on the tier it left: ask for it too", modeRerun, modeOff)
	}
	var modes []string
	for _, m := range revisionModes {
		if asked[m] {
			modes = append(modes, m)
		}
	}
	return modes, nil
}

func toolList(list string) ([]string, error) {
	var ts []string
	for _, f := range strings.Split(list, ",") {
		switch f = strings.TrimSpace(f); f {
		case toolTierlock, toolPeer:
			ts = append(ts, f)
		default:
			return nil, fmt.Errorf("fleet: -tools: %q is neither %s nor %s", f, toolTierlock, toolPeer)
		}
	}
	return ts, nil
}
