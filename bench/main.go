// Command bench measures how long a whole tier takes to get through its runs, and the Consul
// load it puts on the agent, for tierlock and for its peer `consul lock -n N`, side by side in
// one run against one real Consul agent (bench/README.md describes the method). It prints a
// table with ratios and writes JSON to bench/results/. Run it with `make bench`.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
)

type workload struct {
	M, N int
	T    time.Duration
}

func (w workload) String() string { return fmt.Sprintf("M=%d, N=%d, t=%gs", w.M, w.N, w.T.Seconds()) }

// figures are one tool's measurements on one workload.
type figures struct {
	Tool           string  `json:"tool"`
	Workload       string  `json:"workload"`
	Efficiency     float64 `json:"efficiency"`
	MaxConcurrency int     `json:"max_concurrency"`
	N              int     `json:"n"`
	RequestsPerRun float64 `json:"requests_per_run"` // that reach the servers
	// AgentLocalPerRun are the requests the host's own agent answers (/v1/agent/self).
	AgentLocalPerRun float64 `json:"agent_local_requests_per_run"`
	HandoffP50Ms     float64 `json:"handoff_p50_ms"`
	HandoffP99Ms     float64 `json:"handoff_p99_ms"`
	FIFO             float64 `json:"fifo"`
	Failed           int     `json:"failed_runs"`
	SpanSeconds      float64 `json:"span_seconds"`
	IdealSeconds     float64 `json:"ideal_seconds"`
	// CPU spent from the gate's opening to the last host's exit, per run: by the hosts'
	// processes (the tool and the recorder), by the harness (the counting proxy, the local
	// semaphore), by the Consul agent.
	HostCPUMsPerRun    float64 `json:"host_cpu_ms_per_run"`
	HarnessCPUMsPerRun float64 `json:"harness_cpu_ms_per_run"`
	ConsulCPUMsPerRun  float64 `json:"consul_cpu_ms_per_run"`
	// CPUCeiling is the efficiency the span could reach if the machine's cores did nothing
	// but that CPU: cores × ideal span ÷ the CPU spent (capped at 1). An estimate, a little
	// low: the first wave's start-up and the last hosts' exit fall just outside the span.
	CPUCeiling float64 `json:"cpu_ceiling"`
	Cores      int     `json:"cores"`
}

type overhead struct {
	Tool       string  `json:"tool"`
	WallMs     float64 `json:"wall_ms_over_true"`
	PeakRSSMiB float64 `json:"peak_rss_mib"`
}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "record":
			record(os.Args[2:])
			return
		case "gate":
			gate(os.Args[2], os.Args[3:])
			return
		case "rss":
			rss(os.Args[2:])
			return
		case "slot":
			slot(os.Args[2:])
			return
		}
	}
	tierlockBin := flag.String("tierlock", "bin/tierlock", "the tierlock binary")
	consulBin := flag.String("consul", "bin/consul", "the consul binary")
	out := flag.String("out", "bench/results", "where the JSON goes")
	only := flag.Int("only", 0, "run only this workload (1-3); 0: all")
	flag.Parse()
	if err := run(*tierlockBin, *consulBin, *out, *only); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// record is the command every simulated host runs: it appends "start" and "end" lines with
// wall-clock nanoseconds to a shared file (O_APPEND: one line per write, atomically), sleeping
// t in between.
func record(args []string) {
	file, holder, t := args[0], args[1], args[2]
	d, _ := time.ParseDuration(t)
	f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		os.Exit(1)
	}
	fmt.Fprintf(f, "start %s %d\n", holder, time.Now().UnixNano())
	time.Sleep(d)
	fmt.Fprintf(f, "end %s %d\n", holder, time.Now().UnixNano())
	f.Close()
}

// rss runs argv and prints its peak resident memory in KiB. A process the harness starts
// itself inherits the harness's high-water mark (Go starts children with vfork, and the
// kernel keeps the higher of the parent's and the program's), so a small process in between
// does the measuring.
func rss(argv []string) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	_ = cmd.Run()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		fmt.Println(ru.Maxrss)
	}
}

// gate waits until the FIFO at path is opened and closed by the harness, then becomes argv.
// Spawning 200 processes takes the harness about a second; behind the gate, they all start
// at once.
func gate(path string, argv []string) {
	f, err := os.Open(path)
	if err != nil {
		os.Exit(111)
	}
	// Tell the harness we are at the gate (fd 3), then wait for it to open.
	ready := os.NewFile(3, "ready")
	_, _ = ready.Write([]byte{1})
	ready.Close()
	_, _ = io.Copy(io.Discard, f)
	f.Close()
	bin, err := exec.LookPath(argv[0])
	if err != nil {
		os.Exit(112)
	}
	_ = syscall.Exec(bin, argv, os.Environ())
	os.Exit(113)
}

func run(tierlockBin, consulBin, outDir string, only int) error {
	toolList, err := tools()
	if err != nil {
		return err
	}
	tierlockBin, _ = filepath.Abs(tierlockBin)
	consulBin, _ = filepath.Abs(consulBin)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tierlock-bench")
	if err != nil {
		return err
	}
	if os.Getenv("BENCH_DEBUG") == "" {
		defer os.RemoveAll(dir)
	}
	// Ctrl-C stops the hosts, then the deferred clean-up stops the agent (which runs in its
	// own process group, so the terminal's signal does not reach it).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// All simulated hosts share 127.0.0.1: without this, Consul answers 429 past 200 connections.
	agent, err := consulagent.Start(ctx, consulBin, filepath.Join(dir, "consul.log"),
		"-hcl", "limits { http_max_conns_per_client = 10000 }")
	if err != nil {
		return err
	}
	defer agent.Stop()
	proxy := newCountingProxy(agent.Addr)
	defer proxy.Close()
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token = agent.Addr, ""
	client, err := api.NewClient(cfg)
	if err != nil {
		return err
	}

	workloads := []workload{{20, 2, 500 * time.Millisecond}, {100, 5, 500 * time.Millisecond}, {200, 10, 100 * time.Millisecond}}
	if only > 0 && only <= len(workloads) {
		workloads = workloads[only-1 : only]
	}
	var results []figures
	for i, w := range workloads {
		for _, tool := range toolList {
			prefix := fmt.Sprintf("bench%d-%s", i, strings.ReplaceAll(tool, " ", "-"))
			var argv func(h string) []string
			// A host's place in line: Consul's commit order of its contender key, as the
			// proxy saw it; the local semaphore's own order of enqueueing.
			order := func(_, client string) int64 { return proxy.firstSeen(client) }
			var sem *localSem
			switch tool {
			case toolLocal:
				sem, err = newLocalSem(filepath.Join(dir, prefix+".sock"), w.N)
				if err != nil {
					return err
				}
				argv = func(h string) []string { return []string{self, "slot", sem.Path, h} }
				order = func(h, _ string) int64 { return sem.placeInLine(h) }
			case toolTierlock:
				if _, err := client.KV().Put(&api.KVPair{Key: prefix + "/bench/tier/max_concurrent", Value: []byte(strconv.Itoa(w.N))}, nil); err != nil {
					return err
				}
				argv = func(h string) []string {
					return []string{tierlockBin, "run", "--prefix", prefix, "--tier", "bench/tier", "--holder", h,
						"--state-dir", filepath.Join(dir, prefix, h), "--wait", "10m", "--log-level", logLevel(), "--"}
				}
			default:
				argv = func(h string) []string {
					return []string{consulBin, "lock", "-n", strconv.Itoa(w.N), "-shell=false", prefix + "/lock"}
				}
			}
			fmt.Fprintf(os.Stderr, "bench: %s, %s...\n", tool, w)
			f, err := measure(ctx, self, dir, proxy, agent.PID(), w, tool, argv, order)
			if sem != nil {
				_ = sem.Close()
			}
			if err != nil {
				return err
			}
			results = append(results, f)
		}
	}
	fmt.Fprintln(os.Stderr, "bench: overhead of an uncontended run...")
	ovs := []overhead{
		measureOverhead(self, toolTierlock, proxy.Addr, func(i int) []string {
			return []string{tierlockBin, "run", "--prefix", "overhead", "--tier", "bench/solo", "--holder", "solo",
				"--state-dir", filepath.Join(dir, "overhead"), "--log-level", "error", "--", "/bin/true"}
		}),
		measureOverhead(self, toolPeer, proxy.Addr, func(i int) []string {
			return []string{consulBin, "lock", "-n", "1", "-shell=false", "overhead-consul/lock", "/bin/true"}
		}),
	}
	printTable(os.Stdout, workloads, results, ovs)
	return writeJSON(outDir, workloads, results, ovs)
}

type event struct {
	start  bool
	holder string
	at     int64
}

// measure runs one workload with one tool: M processes started together, each its own holder.
// order gives a host's place in the tool's line of waiters (by holder, or by the client name
// it showed the proxy), 0 if it never waited.
// consulPID is the agent's, whose CPU is counted (0: not counted).
func measure(ctx context.Context, self, dir string, proxy *countingProxy, consulPID int, w workload, tool string, argv func(string) []string, order func(holder, client string) int64) (figures, error) {
	rec := filepath.Join(dir, fmt.Sprintf("rec-%s-%d-%d", strings.ReplaceAll(tool, " ", "-"), w.M, w.N))
	before, localBefore := proxy.Requests(), proxy.AgentLocal()
	clients, holders := make([]string, w.M), make([]string, w.M)
	var wg sync.WaitGroup
	failed := 0
	var mu sync.Mutex
	gatePath := filepath.Join(dir, fmt.Sprintf("gate-%s-%d-%d", strings.ReplaceAll(tool, " ", "-"), w.M, w.N))
	if err := syscall.Mkfifo(gatePath, 0o600); err != nil {
		return figures{}, err
	}
	// Held open for writing until every host waits at the gate; closing it opens the gate.
	gateW, err := os.OpenFile(gatePath, os.O_RDWR, 0)
	if err != nil {
		return figures{}, err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return figures{}, err
	}
	childrenBefore := rusageCPU(syscall.RUSAGE_CHILDREN)
	pids := make([]int, 0, w.M)
	for i := range w.M {
		h := fmt.Sprintf("host-%03d", i)
		args := append([]string{self, "gate", gatePath}, argv(h)...)
		args = append(args, self, "record", rec, h, w.T.String())
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.ExtraFiles = []*os.File{readyW}
		client := fmt.Sprintf("%s-%d-%d-%s", strings.ReplaceAll(tool, " ", "-"), w.M, w.N, h) // one name per run, so the proxy never mixes workloads
		cmd.Env = append(os.Environ(), "CONSUL_HTTP_ADDR=http://"+proxy.Addr+"/"+client, "CONSUL_HTTP_TOKEN=", "TIERLOCK_CONFIG="+os.DevNull)
		clients[i], holders[i] = client, h
		if os.Getenv("BENCH_DEBUG") != "" {
			logf, _ := os.OpenFile(filepath.Join(dir, "tool.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
			cmd.Stderr = logf
			fmt.Fprintf(os.Stderr, "tool logs in %s\n", filepath.Join(dir, "tool.log"))
		}
		if err := cmd.Start(); err != nil {
			return figures{}, err
		}
		pids = append(pids, cmd.Process.Pid)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cmd.Wait(); err != nil {
				mu.Lock()
				failed++
				mu.Unlock()
			}
		}()
	}
	readyW.Close()
	if _, err := io.ReadFull(readyR, make([]byte, w.M)); err != nil {
		return figures{}, fmt.Errorf("%s: hosts did not reach the gate: %w", tool, err)
	}
	readyR.Close()
	// What the hosts spent getting to the gate is outside the span: taken off below.
	var atGate time.Duration
	for _, pid := range pids {
		if c, err := procCPU(pid); err == nil {
			atGate += c
		}
	}
	consulAt := func() time.Duration {
		if consulPID == 0 {
			return 0
		}
		c, _ := procCPU(consulPID)
		return c
	}
	selfOpen, consulOpen := rusageCPU(syscall.RUSAGE_SELF), consulAt()
	gateW.Close() // all hosts start now
	wg.Wait()
	if ctx.Err() != nil {
		return figures{}, ctx.Err()
	}
	hostCPU := rusageCPU(syscall.RUSAGE_CHILDREN) - childrenBefore - atGate
	harnessCPU, consulCPU := rusageCPU(syscall.RUSAGE_SELF)-selfOpen, consulAt()-consulOpen
	requests, local := proxy.Requests()-before, proxy.AgentLocal()-localBefore
	if os.Getenv("BENCH_DEBUG") != "" {
		proxy.mu.Lock()
		for k, n := range proxy.kinds {
			fmt.Fprintf(os.Stderr, "  %6.2f per run  %s\n", float64(n)/float64(w.M), k)
		}
		proxy.kinds = map[string]int{}
		proxy.mu.Unlock()
	}

	b, err := os.ReadFile(rec)
	if err != nil {
		return figures{}, fmt.Errorf("%s: no run recorded: %w", tool, err)
	}
	var evs []event
	starts := map[string]int64{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		at, _ := strconv.ParseInt(f[2], 10, 64)
		evs = append(evs, event{start: f[0] == "start", holder: f[1], at: at})
		if f[0] == "start" {
			starts[f[1]] = at
		}
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].at < evs[j].at })
	fig := figures{Tool: tool, Workload: w.String(), N: w.N, Failed: failed + w.M - len(starts),
		RequestsPerRun: float64(requests) / float64(w.M), AgentLocalPerRun: float64(local) / float64(w.M)}
	running := 0
	var pendingEnds []int64
	var handoffs []float64
	for i, e := range evs {
		if e.start {
			running++
			fig.MaxConcurrency = max(fig.MaxConcurrency, running)
			// A start right after an end, while hosts wait, is a handoff.
			if len(pendingEnds) > 0 {
				handoffs = append(handoffs, float64(e.at-pendingEnds[0])/1e6)
				if os.Getenv("BENCH_DEBUG") != "" && e.at-pendingEnds[0] > 50e6 {
					fmt.Fprintf(os.Stderr, "slow handoff at +%.0fms: %.0fms (%s)\n", float64(e.at-evs[0].at)/1e6, float64(e.at-pendingEnds[0])/1e6, e.holder)
				}
				pendingEnds = pendingEnds[1:]
			}
		} else {
			running--
			if remaining := len(starts) - countStarts(evs[:i+1]); remaining > 0 {
				pendingEnds = append(pendingEnds, e.at)
			}
		}
	}
	span := float64(evs[len(evs)-1].at-evs[0].at) / 1e9
	fig.SpanSeconds = span
	fig.IdealSeconds = math.Ceil(float64(w.M)/float64(w.N)) * w.T.Seconds()
	fig.Efficiency = fig.IdealSeconds / span
	fig.HandoffP50Ms, fig.HandoffP99Ms = percentile(handoffs, 0.50), percentile(handoffs, 0.99)
	perRun := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(w.M) }
	fig.HostCPUMsPerRun, fig.HarnessCPUMsPerRun, fig.ConsulCPUMsPerRun = perRun(hostCPU), perRun(harnessCPU), perRun(consulCPU)
	fig.Cores = runtime.NumCPU()
	if spent := (hostCPU + harnessCPU + consulCPU).Seconds(); spent > 0 {
		fig.CPUCeiling = min(1, float64(fig.Cores)*fig.IdealSeconds/spent)
	}
	arrived := make([]int64, w.M)
	for i, c := range clients {
		arrived[i] = order(holders[i], c)
	}
	fig.FIFO = fifo(arrived, starts)
	return fig, nil
}

func countStarts(evs []event) int {
	n := 0
	for _, e := range evs {
		if e.start {
			n++
		}
	}
	return n
}

func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[min(len(s)-1, int(math.Ceil(p*float64(len(s))))-1)]
}

// fifo is the fraction of pairs of waiters that started in the order they began waiting (see
// countingProxy). Hosts that never waited are not counted; two starts less than 5ms apart
// count as simultaneous (in order), since the recorder's own start-up jitters by that much.
func fifo(arrived []int64, starts map[string]int64) float64 {
	type host struct{ spawned, started int64 }
	var waiters []host
	for i, sp := range arrived {
		if st, ok := starts[fmt.Sprintf("host-%03d", i)]; ok && sp != 0 {
			waiters = append(waiters, host{sp, st})
		}
	}
	sort.Slice(waiters, func(i, j int) bool { return waiters[i].started < waiters[j].started })
	good, pairs := 0, 0
	for i := range waiters {
		for j := i + 1; j < len(waiters); j++ {
			pairs++
			if waiters[i].spawned < waiters[j].spawned || waiters[j].started-waiters[i].started < 5e6 {
				good++
			} else if os.Getenv("BENCH_DEBUG") != "" {
				fmt.Fprintf(os.Stderr, "inversion (%d waiters): queued %d places apart, started %.1fms apart\n",
					len(waiters), waiters[i].spawned-waiters[j].spawned, float64(waiters[j].started-waiters[i].started)/1e6)
			}
		}
	}
	if pairs == 0 {
		return 1
	}
	return float64(good) / float64(pairs)
}

// measureOverhead times an uncontended run of /bin/true through the tool against /bin/true
// alone, and the tool's peak memory (its maximum resident set): medians of 15 runs each.
func measureOverhead(self, tool, addr string, argv func(int) []string) overhead {
	const runs = 15
	env := append(os.Environ(), "CONSUL_HTTP_ADDR="+addr, "CONSUL_HTTP_TOKEN=", "TIERLOCK_CONFIG="+os.DevNull)
	timeIt := func(args []string) time.Duration {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = env
		start := time.Now()
		_ = cmd.Run()
		return time.Since(start)
	}
	var tool_, bare, rsss []float64
	for i := range runs {
		d := timeIt(argv(i))
		tool_ = append(tool_, float64(d.Microseconds())/1000)
		d = timeIt([]string{"/bin/true"})
		bare = append(bare, float64(d.Microseconds())/1000)
		probe := exec.Command(self, append([]string{"rss"}, argv(i)...)...)
		probe.Env = env
		out, err := probe.Output()
		if kib, perr := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && perr == nil {
			rsss = append(rsss, kib/1024)
		}
	}
	return overhead{Tool: tool, WallMs: percentile(tool_, 0.5) - percentile(bare, 0.5), PeakRSSMiB: percentile(rsss, 0.5)}
}

// The tools measured: tierlock, its peer, and the harness's own floor (see localSem).
const (
	toolTierlock = "tierlock"
	toolPeer     = "consul lock"
	toolLocal    = "local semaphore"
)

// tools are the tools measured, all three unless BENCH_TOOLS names some (comma-separated,
// e.g. BENCH_TOOLS=tierlock for a quick look at ours alone, or "tierlock,local semaphore").
func tools() ([]string, error) {
	// The local semaphore right after tierlock, so that the two see the machine as alike as
	// can be; the peer, which leaves the agent busiest, last.
	all := []string{toolTierlock, toolLocal, toolPeer}
	env := os.Getenv("BENCH_TOOLS")
	if env == "" {
		return all, nil
	}
	var picked []string
	for _, name := range strings.Split(env, ",") {
		name = strings.TrimSpace(name)
		if !slices.Contains(all, name) {
			return nil, fmt.Errorf("bench: BENCH_TOOLS: unknown tool %q (want %q)", name, all)
		}
		picked = append(picked, name)
	}
	return picked, nil
}

func logLevel() string {
	if os.Getenv("BENCH_DEBUG") != "" {
		return "warn"
	}
	return "error"
}
