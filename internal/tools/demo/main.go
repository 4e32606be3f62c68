// Command demo shows tierlock at work: a local Consul agent, a tier with max_concurrent=2 and
// eight simulated hosts started at once, one of whose runs fails. It prints who holds a slot
// and who waits as it happens, then the final state, with the failed host still holding its
// slot. Run it with `make demo`.
//
// With -rollout it shows the progressive rollout instead (rollout.go, `make demo-rollout`):
// revision B going canary, 2, 4, the rest; C halting when its canary fails; D, the fix.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
)

const (
	prefix = "chef"
	tier   = "demo/web"
)

func main() {
	tierlock := flag.String("tierlock", "bin/tierlock", "the tierlock binary")
	consulBin := flag.String("consul", "bin/consul", "the consul binary")
	hosts := flag.Int("hosts", 8, "simulated hosts")
	slots := flag.Int("slots", 2, "max_concurrent of the tier")
	failing := flag.Int("failing", 3, "the host whose run fails")
	rollout := flag.Bool("rollout", false, "the progressive-rollout demo instead (make demo-rollout): 10 hosts by default")
	flag.Parse()
	var err error
	if *rollout {
		n := 10
		flag.Visit(func(f *flag.Flag) {
			if f.Name == "hosts" {
				n = *hosts
			}
		})
		err = rolloutMain(*tierlock, *consulBin, n)
	} else {
		err = run(*tierlock, *consulBin, *hosts, *slots, *failing)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type demo struct {
	start  time.Time
	mu     sync.Mutex // serialises output and the fields below
	done   map[string]int
	hosts  []string
	stdout io.Writer
}

func (d *demo) printf(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.printfLocked(format, args...)
}

func (d *demo) printfLocked(format string, args ...any) {
	fmt.Fprintf(d.stdout, "%6.2fs  %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

func run(tierlockBin, consulBin string, hosts, slots, failing int) error {
	tierlockBin, _ = filepath.Abs(tierlockBin)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "tierlock-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	fmt.Println("starting a local Consul dev agent on free loopback ports...")
	agent, err := consulagent.Start(ctx, consulBin, filepath.Join(dir, "consul.log"))
	if err != nil {
		return err
	}
	defer func() {
		agent.Stop()
		fmt.Println("Consul agent stopped.")
	}()
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token = agent.Addr, ""
	client, err := api.NewClient(cfg)
	if err != nil {
		return err
	}
	base := prefix + "/" + tier + "/"
	if _, err := client.KV().Put(&api.KVPair{Key: base + "max_concurrent", Value: []byte(fmt.Sprint(slots))}, nil); err != nil {
		return err
	}
	d := &demo{start: time.Now(), done: map[string]int{}, stdout: os.Stdout}
	fmt.Printf("Consul at %s; %smax_concurrent = %d\n", agent.Addr, base, slots)
	fmt.Printf("%d hosts run `tierlock run --tier %s -- <chef-like command>` at once; host-%d's run fails.\n\n",
		hosts, tier, failing)

	// A stand-in for chef-client: converges for 1.5s, or fails after 1s on the failing host.
	chef := filepath.Join(dir, "chef-client")
	if err := os.WriteFile(chef, []byte(chefScript), 0o755); err != nil {
		return err
	}

	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watched := make(chan struct{})
	go func() { defer close(watched); d.watch(watchCtx, client.KV(), base) }()

	var wg sync.WaitGroup
	var cmds []*exec.Cmd
	for i := 1; i <= hosts; i++ {
		h := fmt.Sprintf("host-%d", i)
		cmd := exec.Command(tierlockBin, "run", "--tier", tier, "--holder", h,
			"--state-dir", filepath.Join(dir, h), "--wait", "2m", "--log-format", "json", "--", chef)
		cmd.Env = append(os.Environ(), "CONSUL_HTTP_ADDR="+agent.Addr, "TIERLOCK_CONFIG="+os.DevNull, "DEMO_HOST="+h)
		if i == failing {
			cmd.Env = append(cmd.Env, "DEMO_FAIL=1")
		}
		d.hosts = append(d.hosts, h)
		out, _ := cmd.StdoutPipe()
		errp, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			return err
		}
		cmds = append(cmds, cmd)
		wg.Add(3)
		go func() { defer wg.Done(); d.relay(h, out, false) }()
		go func() { defer wg.Done(); d.relay(h, errp, true) }()
		go func() {
			defer wg.Done()
			_ = cmd.Wait()
			d.mu.Lock()
			d.done[h] = cmd.ProcessState.ExitCode()
			d.mu.Unlock()
		}()
	}
	// A signal sent to the demo alone (not its process group) still reaches the hosts, which
	// forward it to their commands and record the interruption.
	go func() {
		<-ctx.Done()
		for _, c := range cmds {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
	}()
	wg.Wait()
	stopWatch()
	<-watched
	if ctx.Err() != nil {
		fmt.Println("\ninterrupted.")
	}
	return d.final(client.KV(), base)
}

const chefScript = `#!/bin/sh
echo "chef: converging $DEMO_HOST"
if [ -n "$DEMO_FAIL" ]; then sleep 1; echo "chef: ERROR: template web.conf.erb: undefined method" >&2; exit 1; fi
sleep 1.5
echo "chef: converged"
`

// relay prints a host's output: tierlock's JSON log lines as short messages, the command's
// own output as is.
func (d *demo) relay(host string, r io.Reader, logs bool) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		var entry struct {
			Level, Msg string
			ExitCode   *int `json:"exit_code"`
		}
		if logs && json.Unmarshal([]byte(line), &entry) == nil && entry.Msg != "" {
			if entry.ExitCode != nil {
				entry.Msg += fmt.Sprintf(" (exit %d)", *entry.ExitCode)
			}
			d.printf("%-7s tierlock: %s", host, entry.Msg)
			continue
		}
		d.printf("%-7s | %s", host, line)
	}
}

// watch prints the tier's slots each time they change, with the queue of hosts waiting for
// one, in its order (the entries' CreateIndex).
func (d *demo) watch(ctx context.Context, kv *api.KV, base string) {
	var index uint64
	last := ""
	for ctx.Err() == nil {
		pairs, meta, err := kv.List(base, (&api.QueryOptions{WaitIndex: index, WaitTime: 2 * time.Second}).WithContext(ctx))
		if err != nil {
			continue
		}
		index = meta.LastIndex
		var held []string
		holding := map[string]bool{}
		current := "0"
		for _, p := range pairs {
			rel := strings.TrimPrefix(p.Key, base)
			if h, ok := strings.CutPrefix(rel, "running/"); ok {
				var rec struct{ State string }
				_ = json.Unmarshal(p.Value, &rec)
				holding[h] = true
				held = append(held, h+" ("+rec.State+")")
			}
			if rel == "current" {
				current = string(p.Value)
			}
		}
		sort.Strings(held)
		d.mu.Lock()
		var queue api.KVPairs
		for _, p := range pairs {
			if strings.HasPrefix(strings.TrimPrefix(p.Key, base), "queue/") {
				queue = append(queue, p)
			}
		}
		sort.Slice(queue, func(i, j int) bool { return queue[i].CreateIndex < queue[j].CreateIndex })
		var waiting []string
		for _, p := range queue {
			waiting = append(waiting, strings.TrimPrefix(p.Key, base+"queue/"))
		}
		line := fmt.Sprintf("SLOTS current=%s  held: %s  | queue: %s",
			current, orNone(strings.Join(held, ", ")), orNone(strings.Join(waiting, " ")))
		if line != last {
			d.printfLocked("%s", line)
			last = line
		}
		d.mu.Unlock()
	}
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// final prints the tier's keys and how each host ended.
func (d *demo) final(kv *api.KV, base string) error {
	pairs, _, err := kv.List(base, &api.QueryOptions{RequireConsistent: true})
	if err != nil {
		return err
	}
	fmt.Printf("\nFinal state of %s in Consul:\n", strings.TrimSuffix(base, "/"))
	for _, p := range pairs {
		fmt.Printf("  %-28s %s\n", strings.TrimPrefix(p.Key, base), p.Value)
	}
	fmt.Println("\nExit codes:")
	for _, h := range d.hosts {
		fmt.Printf("  %-7s %d\n", h, d.done[h])
	}
	for _, p := range pairs {
		h, ok := strings.CutPrefix(strings.TrimPrefix(p.Key, base), "running/")
		var rec struct{ State string }
		if !ok || json.Unmarshal(p.Value, &rec) != nil {
			continue
		}
		switch rec.State {
		case "failed":
			fmt.Printf("\n%s's run failed, so it keeps its slot: the tier now runs one host at a time, and a\n"+
				"second failure would stop it. A person looks; the next successful run on %s frees the slot.\n", h, h)
		case "interrupted":
			fmt.Printf("\n%s was stopped mid-run, so it keeps its slot (state interrupted) until its next run.\n", h)
		}
	}
	fmt.Printf("Took %.1fs.\n", time.Since(d.start).Seconds())
	return nil
}
