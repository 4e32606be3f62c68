package main

// The rollout demo (`make demo-rollout`): ten simulated hosts of one tier take three
// revisions through tierlock's progressive rollout. B goes canary, then steps of 1, 2, 4 and
// max hosts, to complete; C's canary fails, so C halts: the other hosts asking for C exit 75
// at once while hosts still on B keep converging; D, the fix, supersedes C, starts at its
// canary and completes. It prints the tier's slots and its rollout line (as `tierlock status`
// shows it) each time they change, and what each host does.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/monitor"
)

const (
	rolloutSlots    = 4
	rolloutSchedule = "1,2,4,max"
	// chefRun is how long the stand-in for chef-client converges.
	chefRun = "1"
)

// rolloutMain runs the rollout demo on stdout, stopped cleanly by SIGINT or SIGTERM.
func rolloutMain(tierlockBin, consulBin string, hosts int) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := runRollout(ctx, os.Stdout, tierlockBin, consulBin, hosts)
	if ctx.Err() != nil {
		return nil // interrupted, as it said
	}
	return err
}

// rolloutDemo is one run of the rollout demo.
type rolloutDemo struct {
	out      io.Writer
	start    time.Time
	tierlock string
	dir      string
	env      []string // of every tierlock process: the agent's address, no settings file
	sem      *lock.Semaphore

	mu      sync.Mutex // serialises output and guards the fields below
	snap    *lock.Snapshot
	changed chan struct{} // closed and replaced at every new snapshot
	procs   []*hostRun    // every host run started, for Ctrl-C
}

// hostRun is one `tierlock run` of a simulated host.
type hostRun struct {
	host, rev string
	cmd       *exec.Cmd
	done      chan struct{}
	code      int
	halted    bool // it said the revision is halted
}

func (d *rolloutDemo) printf(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.printfLocked(format, args...)
}

func (d *rolloutDemo) printfLocked(format string, args ...any) {
	fmt.Fprintf(d.out, "%6.2fs  %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

// runRollout runs the demo, writing to out. It returns an error when the rollout did not go
// as the demo says it does (and when ctx ends it early).
func runRollout(ctx context.Context, out io.Writer, tierlockBin, consulBin string, hosts int) (err error) {
	if hosts < 8 {
		return fmt.Errorf("the rollout demo needs at least 8 hosts, got %d", hosts)
	}
	if tierlockBin, err = filepath.Abs(tierlockBin); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tierlock-demo-rollout")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	d := &rolloutDemo{out: out, start: time.Now(), tierlock: tierlockBin, dir: dir, changed: make(chan struct{})}

	fmt.Fprintln(out, "starting a local Consul dev agent on free loopback ports...")
	agent, err := consulagent.Start(ctx, consulBin, filepath.Join(dir, "consul.log"))
	if err != nil {
		return err
	}
	defer func() {
		agent.Stop()
		fmt.Fprintln(out, "Consul agent stopped.")
	}()
	client, err := agent.Client()
	if err != nil {
		return err
	}
	if d.sem, err = lock.New(client.KV(), lock.Options{Prefix: prefix, Tier: tier, DefaultMax: lock.DefaultMaxConcurrent}); err != nil {
		return err
	}
	d.env = append(os.Environ(), "CONSUL_HTTP_ADDR="+agent.Addr, "CONSUL_HTTP_TOKEN=", "CONSUL_HTTP_TOKEN_FILE=",
		"TIERLOCK_CONFIG="+os.DevNull)
	chef := filepath.Join(dir, "chef-client")
	if err := os.WriteFile(chef, []byte(rolloutChef), 0o755); err != nil {
		return err
	}
	fmt.Fprintf(out, "Consul at %s. %d simulated hosts of %s; every run is\n", agent.Addr, hosts, tier)
	fmt.Fprintf(out, "  tierlock run --tier %s --holder host-N --revision REV --wait 2m -- chef-client REV\n", tier)
	fmt.Fprintf(out, "where chef-client converges in %ss, and fails (exit 1) on revision C.\n\n", chefRun)
	if err := d.operator(ctx, "set-max", "--tier", tier, "--reason", "demo", strconv.Itoa(rolloutSlots)); err != nil {
		return err
	}
	if err := d.operator(ctx, "rollout", "policy", "--tier", tier, "--schedule", rolloutSchedule, "--reason", "demo"); err != nil {
		return err
	}
	fmt.Fprintln(out, "\nBelow, `slots` lines show who holds a slot (revision, the mover's step, state) and who waits;")
	fmt.Fprintf(out, "`rollout` lines are the line `tierlock status` prints as \"%s rollout: ...\".\n", tier)

	// Before the agent stops: every host run has ended (on Ctrl-C, once it has recorded its
	// interruption), then the watch.
	defer d.waitAll()
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() { defer close(watched); d.watch(watchCtx, client.KV()) }()
	defer func() { stopWatch(); <-watched }()
	// On Ctrl-C, or when the demo ends early, every host still running is told to stop (it
	// forwards the signal to its command and records the interruption).
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
		case <-finished:
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, p := range d.procs {
			select {
			case <-p.done:
			default:
				_ = p.cmd.Process.Signal(syscall.SIGTERM)
			}
		}
	}()

	names := make([]string, hosts)
	for i := range names {
		names[i] = fmt.Sprintf("host-%d", i+1)
	}
	steps := []func(context.Context, []string, string) error{d.phaseB, d.phaseC, d.phaseD}
	for _, step := range steps {
		if err := step(ctx, names, chef); err != nil {
			if ctx.Err() != nil {
				d.println("\ninterrupted.")
				return ctx.Err()
			}
			return err
		}
	}
	d.println("")
	if err := d.operator(ctx, "rollout", "status", "--tier", tier); err != nil {
		return err
	}
	d.println(fmt.Sprintf("\nThe demo took %.1fs.", time.Since(d.start).Seconds()))
	return nil
}

// phaseB rolls B out to every host: all ask at once; the rollout admits a canary, then 2, 4,
// then the rest.
func (d *rolloutDemo) phaseB(ctx context.Context, names []string, chef string) error {
	d.banner("1. revision B: all %d hosts ask for it at once; schedule %s, so the canary goes alone, then 2, then 4, then the rest", len(names), rolloutSchedule)
	runs, err := d.startAll(names, "B", chef)
	if err != nil {
		return err
	}
	if err := d.waitRuns(ctx, runs); err != nil {
		return err
	}
	if err := d.expectCodes(runs, 0); err != nil {
		return err
	}
	return d.expectState(ctx, "B", "complete")
}

// phaseC: host-1 pulls C first and becomes its canary; while it runs, the next hosts ask for
// C (movers: held back behind the canary) and the last four still run B (not movers: they
// converged on B, so they need only a slot). The canary fails, C halts, and the C movers
// exit 75 at once, saying why; the B hosts converge all the same.
func (d *rolloutDemo) phaseC(ctx context.Context, names []string, chef string) error {
	split := len(names) - 4
	canary, movers, stayers := names[0], names[1:split], names[split:]
	d.banner("2. revision C: %s pulls it first and is its canary; then %s ask for C, and %s (still on B) run B again",
		canary, span(movers), span(stayers))
	first, err := d.startAll([]string{canary}, "C", chef)
	if err != nil {
		return err
	}
	if err := d.waitSnap(ctx, 20*time.Second, func(s *lock.Snapshot) bool {
		r, ok := s.Holders[canary]
		return ok && r.Revision == "C"
	}); err != nil {
		return fmt.Errorf("%s never took a slot for C: %w", canary, err)
	}
	rest, err := d.startAll(movers, "C", chef)
	if err != nil {
		return err
	}
	onB, err := d.startAll(stayers, "B", chef)
	if err != nil {
		return err
	}
	if err := d.waitRuns(ctx, append(append(first, rest...), onB...)); err != nil {
		return err
	}
	if first[0].code != 1 {
		return fmt.Errorf("%s's canary run of C exited %d, want 1", canary, first[0].code)
	}
	for _, r := range rest {
		if r.code != 75 || !r.halted {
			return fmt.Errorf("%s, asking for C, exited %d (said halted: %v); want 75, halted", r.host, r.code, r.halted)
		}
	}
	if err := d.expectCodes(onB, 0); err != nil {
		return err
	}
	if err := d.expectState(ctx, "C", "halted"); err != nil {
		return err
	}
	d.printf("C halted after its canary %s failed: %s exited 75 at once; %s converged on B meanwhile",
		canary, span(movers), span(stayers))
	return nil
}

// phaseD rolls D, the fix, out. host-1, which holds C's failed slot, pulls it first: a host
// holding a failed slot may always re-enter its slot, with any revision, so it runs D in
// that slot, outside the schedule. Then every other host asks for D: the first mover
// supersedes the halted C, D starts at its canary, and goes 2, 4, the rest, to complete.
func (d *rolloutDemo) phaseD(ctx context.Context, names []string, chef string) error {
	d.banner("3. revision D, the fix: %s pulls it first and re-enters the failed slot it holds (always allowed, outside the schedule);\n"+
		"   then %s ask for D: it supersedes C and starts at its canary", names[0], span(names[1:]))
	first, err := d.startAll(names[:1], "D", chef)
	if err != nil {
		return err
	}
	if err := d.waitSnap(ctx, 20*time.Second, func(s *lock.Snapshot) bool {
		r, ok := s.Holders[names[0]]
		return ok && r.Revision == "D"
	}); err != nil {
		return fmt.Errorf("%s never re-entered its slot with D: %w", names[0], err)
	}
	rest, err := d.startAll(names[1:], "D", chef)
	if err != nil {
		return err
	}
	runs := append(first, rest...)
	if err := d.waitRuns(ctx, runs); err != nil {
		return err
	}
	if err := d.expectCodes(runs, 0); err != nil {
		return err
	}
	return d.expectState(ctx, "D", "complete")
}

func (d *rolloutDemo) println(s string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintln(d.out, s)
}

// waitAll waits until every host run started has ended.
func (d *rolloutDemo) waitAll() {
	d.mu.Lock()
	procs := slices.Clone(d.procs)
	d.mu.Unlock()
	for _, p := range procs {
		<-p.done
	}
}

func (d *rolloutDemo) banner(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, "\n== %s\n", fmt.Sprintf(format, args...))
}

// span writes hosts as "host-2..host-6" when they are consecutive.
func span(hosts []string) string {
	if len(hosts) > 2 {
		return hosts[0] + ".." + hosts[len(hosts)-1]
	}
	return strings.Join(hosts, " and ")
}

// operator runs a tierlock command as an operator would, printing it and its output.
func (d *rolloutDemo) operator(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, d.tierlock, args...)
	cmd.Env = d.env
	out, err := cmd.CombinedOutput()
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, "$ tierlock %s\n", quoteArgs(args))
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		fmt.Fprintf(d.out, "  %s\n", line)
	}
	if err != nil {
		return fmt.Errorf("tierlock %s: %w", quoteArgs(args), err)
	}
	return nil
}

func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = a
		if strings.ContainsAny(a, " '\"") {
			q[i] = strconv.Quote(a)
		}
	}
	return strings.Join(q, " ")
}

// startAll starts a `tierlock run` of rev on each host.
func (d *rolloutDemo) startAll(hosts []string, rev, chef string) ([]*hostRun, error) {
	var runs []*hostRun
	for _, h := range hosts {
		r, err := d.startRun(h, rev, chef)
		if err != nil {
			return nil, err
		}
		runs = append(runs, r)
	}
	return runs, nil
}

func (d *rolloutDemo) startRun(host, rev, chef string) (*hostRun, error) {
	cmd := exec.Command(d.tierlock, "run", "--tier", tier, "--holder", host, "--revision", rev,
		"--wait", "2m", "--state-dir", filepath.Join(d.dir, host), "--log-format", "json", "--", chef, rev)
	cmd.Env = append(slices.Clone(d.env), "DEMO_HOST="+host)
	// Its own process group, so that a Ctrl-C reaches it once, from the demo (a second
	// signal would cut short its recording of the interruption).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	r := &hostRun{host: host, rev: rev, cmd: cmd, done: make(chan struct{})}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d.procs = append(d.procs, r)
	var relayed sync.WaitGroup
	relayed.Add(2)
	go func() { defer relayed.Done(); d.relay(r, stdout, false) }()
	go func() { defer relayed.Done(); d.relay(r, stderr, true) }()
	go func() {
		relayed.Wait()
		_ = cmd.Wait()
		r.code = cmd.ProcessState.ExitCode()
		d.printf("%-7s %s: exit %d", host, rev, r.code)
		close(r.done)
	}()
	return r, nil
}

// relay prints a host's output compactly: tierlock's log messages, shortened, and the
// command's errors. The command's ordinary output and tierlock's other chatter are left out.
func (d *rolloutDemo) relay(r *hostRun, in io.Reader, logs bool) {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		var entry struct {
			Level, Msg, Error string
		}
		if !logs || json.Unmarshal([]byte(line), &entry) != nil || entry.Msg == "" {
			if logs { // the command's stderr
				d.printf("%-7s %s: | %s", r.host, r.rev, line)
			}
			continue
		}
		msg := entry.Msg
		switch {
		case strings.Contains(msg, "does not admit this host yet"):
			msg = "waits: the rollout does not admit it yet"
		case strings.HasPrefix(msg, "tier full"):
			msg = "waits: " + msg
		case strings.HasPrefix(msg, "slot acquired"), strings.HasPrefix(msg, "re-entered"):
			msg = strings.Replace(msg, "as a mover to "+r.rev+" ", "as a mover ", 1)
			msg = strings.Replace(msg, "(rollout step 0)", "(rollout step 0: the canary)", 1)
		case strings.Contains(msg, "halted"):
			r.halted = true
			if entry.Error != "" {
				msg = entry.Error
			}
		case entry.Level == "error" || entry.Level == "warning":
			if entry.Error != "" {
				msg += ": " + entry.Error
			}
		case strings.HasPrefix(msg, "command succeeded"):
		default:
			continue
		}
		d.printf("%-7s %s: %s", r.host, r.rev, msg)
	}
}

// waitRuns waits until every run has ended.
func (d *rolloutDemo) waitRuns(ctx context.Context, runs []*hostRun) error {
	for _, r := range runs {
		select {
		case <-r.done:
		case <-ctx.Done():
			for _, r := range runs {
				<-r.done // the signal reaches them too; they stop within their kill grace
			}
			return ctx.Err()
		}
	}
	return nil
}

func (d *rolloutDemo) expectCodes(runs []*hostRun, want int) error {
	for _, r := range runs {
		if r.code != want {
			return fmt.Errorf("%s's run of %s exited %d, want %d", r.host, r.rev, r.code, want)
		}
	}
	return nil
}

// expectState waits a little for the rollout to show rev in state (the watch may be one
// change behind the runs' exits) and prints the line.
func (d *rolloutDemo) expectState(ctx context.Context, rev, state string) error {
	var last string
	err := d.waitSnap(ctx, 10*time.Second, func(s *lock.Snapshot) bool {
		v := monitor.Rollout(s, time.Now())
		last = v.Line()
		return v != nil && v.Revision == rev && v.State == state
	})
	if err != nil {
		return fmt.Errorf("the rollout never showed %s %s; last: %s", rev, state, last)
	}
	d.printf("=> %s rollout: %s", tier, last)
	return nil
}

// waitSnap waits until the watched snapshot satisfies ok.
func (d *rolloutDemo) waitSnap(ctx context.Context, timeout time.Duration, ok func(*lock.Snapshot) bool) error {
	deadline := time.After(timeout)
	for {
		d.mu.Lock()
		snap, changed := d.snap, d.changed
		d.mu.Unlock()
		if snap != nil && ok(snap) {
			return nil
		}
		select {
		case <-changed:
		case <-deadline:
			return errors.New("timed out")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// watch reads the tier each time a key of it changes and prints its slots and its rollout
// line when they change.
func (d *rolloutDemo) watch(ctx context.Context, kv *api.KV) {
	base := prefix + "/" + tier + "/"
	var index uint64
	var lastSlots, lastRollout string
	for ctx.Err() == nil {
		_, meta, err := kv.Keys(base, "", (&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Second}).WithContext(ctx))
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if meta.LastIndex < index {
			index = 0 // the index went back (Consul says to start over)
		} else {
			index = meta.LastIndex
		}
		snap, err := d.sem.Read(ctx)
		if err != nil {
			continue
		}
		slotsLine := slotsOf(snap)
		rolloutLine := monitor.Rollout(snap, time.Now()).Line()
		d.mu.Lock()
		if slotsLine != lastSlots {
			d.printfLocked("slots    %s", slotsLine)
			lastSlots = slotsLine
		}
		if rolloutLine != lastRollout {
			d.printfLocked("rollout  %s", rolloutLine)
			lastRollout = rolloutLine
		}
		d.snap = snap
		close(d.changed)
		d.changed = make(chan struct{})
		d.mu.Unlock()
	}
}

// slotsOf is the tier's slots in a line: "2/4 held: host-3 (B step 1, running), ... | waiting: host-1 host-2".
func slotsOf(s *lock.Snapshot) string {
	holders := make([]string, 0, len(s.Holders))
	for h := range s.Holders {
		holders = append(holders, h)
	}
	slices.SortFunc(holders, hostOrder)
	var held []string
	for _, h := range holders {
		r := s.Holders[h]
		what := r.Revision
		switch {
		case r.Batch == nil:
		case *r.Batch == 0:
			what += " canary"
		default:
			what += " step " + strconv.Itoa(*r.Batch)
		}
		held = append(held, fmt.Sprintf("%s (%s, %s)", h, strings.TrimSpace(what), r.State))
	}
	var waiting []string
	for _, w := range s.Queue {
		waiting = append(waiting, w.Holder)
	}
	return fmt.Sprintf("%d/%d held: %s | waiting: %s", len(s.Holders), s.Max,
		orNone(strings.Join(held, ", ")), orNone(strings.Join(waiting, " ")))
}

// hostOrder sorts host-2 before host-10.
func hostOrder(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

// rolloutChef stands in for chef-client: it converges the revision it is given in a second,
// and fails on revision C, the bad one.
const rolloutChef = `#!/bin/sh
echo "chef: converging $DEMO_HOST to revision $1"
sleep ` + chefRun + `
if [ "$1" = C ]; then echo "chef: ERROR: revision C: template web.conf.erb: undefined method 'port'" >&2; exit 1; fi
echo "chef: converged"
`
