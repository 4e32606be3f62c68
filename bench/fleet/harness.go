package main

import (
	"context"
	"crypto/sha1"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
	"github.com/tierlock/tierlock/lock/schema"
)

// Config is one benchmark run.
type Config struct {
	Consul      string        // the consul binary
	Ms, Ns      []int         // the workloads: every M with every N
	T           time.Duration // each command's run time
	Tools       []string      // toolTierlock, toolPeer
	Uncontended int           // sequential uncontended runs per tool
	LongWaiters int           // hosts idle in line for the long wait; 0 skips it
	LongWait    time.Duration // the measured window of the long wait
	Settle      time.Duration // after the long wait's hosts are all in line, before the window
	Baseline    time.Duration // the idle agent is measured this long first
	Deadline    time.Duration // a workload still running after this is stopped and reported incomplete
	// Splay spreads the contended hosts' starts over this long, each at a random moment, as
	// run's --splay spreads a fleet's timers (0: every host at the same instant, a burst).
	Splay    time.Duration
	Wait     time.Duration // tierlock's --wait
	QueueTTL time.Duration // tierlock's --queue-ttl (0: the default)
	// Revisions are the modes tierlock's hosts run in, in the order of revisionModes (nil:
	// modeOff alone, today's runs). The peer runs in modeOff only.
	Revisions []string
	Log       io.Writer // progress
	Dir       string    // scratch space (the agent's log)
	// HeapTo, if set, is where the agent's Go heap profile taken at its largest resident
	// memory of the whole run is kept (the agent then runs with enable_debug).
	HeapTo string
	// Server runs the agent as a one-server cluster keeping its state in Dir, as production
	// servers run, not -dev: a dev agent indents every JSON answer (more bytes, CPU and
	// memory for each) and keeps its Raft log in memory.
	Server bool
	// Agents, if more than 0, puts that many client agents joined to the server between the
	// hosts and it, each with a proxy of its own, and spreads the hosts over them, as a fleet's
	// hosts each talk to their own agent. 0: every host talks to the server through one proxy.
	// One proxy and one server cannot hold 10,000 hosts' connections on this machine: the
	// server refuses more than http_max_conns_per_client from one address, and a process may
	// hold at most 20,000 descriptors (bench/README.md, "10,000 hosts").
	Agents int
	// ByTool runs every contended workload of one tool before the next tool's, not each
	// workload for every tool in turn: the peer leaves the agent's heap at gigabytes after its
	// M=500 (it cannot finish), and tierlock's M=2,000 then measured that agent, not its own
	// load (bench/README.md, "Side by side with the peer, at the end of the night").
	ByTool bool
	Now    func() time.Time
}

// Figures are one tool's measurements on one workload.
type Figures struct {
	Tool     string `json:"tool"`
	Workload string `json:"workload"`
	// Mode is how the hosts named a revision (modeOff, modeMovers, modeSettled, modeNext);
	// figures written before modes existed have none, and were modeOff.
	Mode     string  `json:"mode"`
	Revision string  `json:"revision,omitempty"` // the revision the runs named
	M        int     `json:"m"`
	N        int     `json:"n"`
	T        float64 `json:"t_seconds"`
	Complete bool    `json:"complete"` // every host ran before the deadline
	Failed   int     `json:"failed"`   // hosts whose run ended in an error
	FirstErr string  `json:"first_error,omitempty"`
	timing
	IdealSeconds float64 `json:"ideal_seconds"`
	Efficiency   float64 `json:"efficiency"`
	// Per run (per command that ran): requests and Raft writes counted at the proxy, by kind.
	// RequestsPerRun are those that reach the servers; AgentLocalPerRun those the host's own
	// agent answers (/v1/agent/self), counted apart.
	RequestsPerRun   float64            `json:"requests_per_run"`
	AgentLocalPerRun float64            `json:"agent_local_requests_per_run"`
	RaftPerRun       float64            `json:"raft_writes_per_run"`
	ByKindPerRun     map[string]float64 `json:"requests_by_kind_per_run"`
	// KiBByKindPerRun is the answer KiB per run by kind: which requests carry the bytes.
	KiBByKindPerRun map[string]float64 `json:"answer_kib_by_kind_per_run"`
	RaftKinds       []string           `json:"raft_kinds"`        // the kinds above that are Raft writes
	LocalKinds      []string           `json:"agent_local_kinds"` // the kinds above that are agent-local
	AnswerKiBPerRun float64            `json:"answer_kib_per_run"`
	// RefusedPerRun are the writes Consul refused because a check failed (lost check-and-set
	// races, each a Raft write all the same); LostPerRun counts their failed checks by the
	// key checked (one refusal may fail several). Refused reads are not counted.
	RefusedPerRun    float64            `json:"refused_txns_per_run"`
	LostPerRun       map[string]float64 `json:"lost_races_per_run,omitempty"`
	ErrorAnswers     int64              `json:"error_answers"`      // 429/5xx seen by the proxy
	RaftApplyPerRun  float64            `json:"raft_apply_per_run"` // Consul's telemetry, idle rate taken off
	RaftApplyRaw     float64            `json:"raft_apply_raw"`
	ConsulCPUPer1000 float64            `json:"consul_cpu_seconds_per_1000_runs"`
	ClientCPUMsRun   float64            `json:"client_cpu_ms_per_run"`
	ProxyCPUMsRun    float64            `json:"proxy_cpu_ms_per_run"`
	ConsulPeakRSSMiB float64            `json:"consul_peak_rss_mib"`
	// With client agents (Config.Agents): their CPU, all together, and the largest one's peak
	// resident memory. The server's figures above are the server's alone.
	AgentsCPUPer1000 float64 `json:"client_agents_cpu_seconds_per_1000_runs,omitempty"`
	AgentPeakRSSMiB  float64 `json:"client_agent_peak_rss_mib,omitempty"`
	WallSeconds      float64 `json:"wall_seconds"`
	// Seconds are the proxies' answers second by second from the workload's start: when
	// its answers turned to errors, and what came before.
	Seconds       []second `json:"seconds,omitempty"`
	RunsPerSecond float64  `json:"runs_per_second"` // runs ÷ wall seconds
	// The rollout: runs the rollout admitted as movers, and how many of them each step
	// admitted (from each slot's Batch); for movers, the ideal span of the default schedule
	// (each step's movers in waves of N, one step after the other); the rollout key as the
	// workload left it, read from Consul (0 bytes: no key).
	Movers               int             `json:"movers"`
	HostsPerStep         []int           `json:"hosts_per_step,omitempty"`
	ScheduleIdealSeconds float64         `json:"schedule_ideal_seconds,omitempty"`
	RolloutKeyBytes      int             `json:"rollout_key_bytes"`
	RolloutRecord        json.RawMessage `json:"rollout_record,omitempty"`
}

// The revision modes (-revisions). modeOff: runs name no revision, as today, on a fresh tier.
// modeRerun: every host runs again without a revision, on the tier modeOff left, where every
// host has converged once (so each queue entry carries its last convergence, and the line is
// ranked by it): the baseline the modes after it are compared with, since they run on such a
// tier too. modeMovers: every host runs once with revRolled, which none of them has converged
// on, so every run is a mover (canary, then batches by the default schedule, doubling).
// modeSettled: every host runs again with revRolled, now converged on it: no run is a mover.
// modeNext: every host runs once with revNext, which supersedes revRolled (completed): movers
// again, and a mover whose look still shows revRolled reads the whole tier to judge it.
const (
	modeOff     = "off"
	modeRerun   = "rerun"
	modeMovers  = "movers"
	modeSettled = "settled"
	modeNext    = "next"
)

// revisionModes are the modes in the order they run; each but modeOff builds on the one
// before it on the same tier.
var revisionModes = []string{modeOff, modeRerun, modeMovers, modeSettled, modeNext}

// The revisions the hosts roll out: 40 bytes, as a git SHA is.
var (
	revRolled = fmt.Sprintf("%x", sha1.Sum([]byte("tierlock fleet bench: R")))
	revNext   = fmt.Sprintf("%x", sha1.Sum([]byte("tierlock fleet bench: R2")))
)

// revisionOf is the revision a mode's runs name.
func revisionOf(mode string) string {
	switch mode {
	case modeMovers, modeSettled:
		return revRolled
	case modeNext:
		return revNext
	}
	return ""
}

// LongWait is one tool's long wait: hosts idle in line, renewing their sessions.
type LongWait struct {
	Tool              string             `json:"tool"`
	Waiters           int                `json:"waiters"`
	InLine            int                `json:"in_line"` // waiters that entered the line
	JoinSeconds       float64            `json:"join_seconds"`
	WindowSeconds     float64            `json:"window_seconds"`
	RequestsPerSecond float64            `json:"requests_per_second"`
	ByKindPerSecond   map[string]float64 `json:"requests_by_kind_per_second"`
	RaftKinds         []string           `json:"raft_kinds"`
	RaftPerSecond     float64            `json:"raft_writes_per_second"`
	RaftApplyPerSec   float64            `json:"raft_apply_per_second"`
	ConsulCPUSeconds  float64            `json:"consul_cpu_seconds"`
	CoreShare         float64            `json:"core_share"`     // Consul CPU ÷ window, idle agent's taken off
	CoreShareRaw      float64            `json:"core_share_raw"` // without taking the idle agent's off
	ConsulPeakRSSMiB  float64            `json:"consul_peak_rss_mib"`
}

// Report is a whole run.
type Report struct {
	When           time.Time  `json:"when"`
	Consul         string     `json:"consul_version"`
	CPUs           int        `json:"cpus"`
	IdleCPUShare   float64    `json:"idle_consul_core_share"`
	IdleRaftPerSec float64    `json:"idle_raft_apply_per_second"`
	Uncontended    []Figures  `json:"uncontended"`
	Contended      []Figures  `json:"contended"`
	LongWaits      []LongWait `json:"long_waits"`
	ConsulStartRSS float64    `json:"consul_rss_mib_at_start"`
	Agents         int        `json:"client_agents,omitempty"` // Config.Agents
	Config         string     `json:"config"`
}

// bench is a run in progress: the server, its client agents if any, the proxies the hosts
// talk through, and what was measured idle.
type bench struct {
	cfg      Config
	agent    *consulagent.Agent   // the server
	clients  []*consulagent.Agent // client agents (Config.Agents)
	admin    *api.Client          // straight to the server: set-up and clean-up, not counted
	proxies  []*proxyProcess      // one in front of each client agent, or of the server
	hosts    int                  // hosts made so far: the next one talks through proxies[hosts%len]
	idleCPU  float64              // Consul's CPU seconds per second, idle
	idleRaft float64              // Raft applies per second, idle
	phase    int
	logf     func(format string, args ...any)
}

// meter is a reading of every counter.
type meter struct {
	at        time.Time
	counts    counts
	consulCPU float64
	agentsCPU float64 // the client agents'
	proxyCPU  float64
	selfCPU   float64
	raft      float64
}

func (b *bench) read(ctx context.Context) (meter, error) {
	m := meter{at: b.cfg.Now(), selfCPU: selfCPUSeconds(), counts: counts{}}
	var err error
	for _, p := range b.proxies {
		c, err := p.Counts()
		if err != nil {
			return m, err
		}
		m.counts = m.counts.plus(c)
		cpu, err := cpuSeconds(p.PID())
		if err != nil {
			return m, err
		}
		m.proxyCPU += cpu
	}
	if m.consulCPU, err = cpuSeconds(b.agent.PID()); err != nil {
		return m, err
	}
	for _, a := range b.clients {
		cpu, err := cpuSeconds(a.PID())
		if err != nil {
			return m, err
		}
		m.agentsCPU += cpu
	}
	m.raft, err = raftApplies(ctx, b.agent.Addr)
	return m, err
}

// resetPeaks starts the peak resident memory of the server and its client agents again.
func (b *bench) resetPeaks() {
	_ = resetPeakRSS(b.agent.PID())
	for _, a := range b.clients {
		_ = resetPeakRSS(a.PID())
	}
}

// agentPeakRSS is the largest peak resident memory of the client agents since resetPeaks.
func (b *bench) agentPeakRSS() float64 {
	peak := 0.0
	for _, a := range b.clients {
		if p, err := peakRSSMiB(a.PID()); err == nil {
			peak = max(peak, p)
		}
	}
	return peak
}

// startClients starts cfg.Agents client agents joined to the server, and a proxy in front of
// each; with none, one proxy in front of the server.
func (b *bench) startClients(ctx context.Context, hcl []string) error {
	if b.cfg.Agents <= 0 {
		p, err := startProxy(b.agent.Addr)
		if err != nil {
			return err
		}
		b.proxies = append(b.proxies, p)
		return nil
	}
	for i := range b.cfg.Agents {
		a, err := consulagent.Launch(ctx, b.cfg.Consul, consulagent.Config{
			Client: true, DataDir: filepath.Join(b.cfg.Dir, fmt.Sprintf("client-%d", i)), Join: []string{b.agent.SerfAddr},
			LogPath: filepath.Join(b.cfg.Dir, fmt.Sprintf("client-%d.log", i)), HCL: hcl,
		})
		if err != nil {
			return fmt.Errorf("fleet: client agent %d: %w", i, err)
		}
		b.clients = append(b.clients, a)
		p, err := startProxy(a.Addr)
		if err != nil {
			return err
		}
		b.proxies = append(b.proxies, p)
	}
	return nil
}

// stop stops the proxies and the client agents (the server is Run's to stop).
func (b *bench) stop() {
	for _, p := range b.proxies {
		p.Stop()
	}
	for _, a := range b.clients {
		a.Stop()
	}
}

// nextAddr is the proxy the next host made talks through: the hosts are dealt over the
// proxies in turn.
func (b *bench) nextAddr() string {
	p := b.proxies[b.hosts%len(b.proxies)]
	b.hosts++
	return p.Addr
}

// Run runs the benchmark described by cfg.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	b := &bench{cfg: cfg, logf: func(f string, a ...any) { fmt.Fprintf(cfg.Log, "fleet: "+f+"\n", a...) }}
	var err error
	// All simulated hosts share 127.0.0.1: Consul's default of 200 connections per client
	// address would answer 429. Prometheus retention makes raft.apply a cumulative counter.
	hcl := []string{
		"limits { http_max_conns_per_client = 10000 }",
		`telemetry { prometheus_retention_time = "24h" disable_hostname = true }`,
	}
	if cfg.HeapTo != "" {
		hcl = append(hcl, "enable_debug = true")
	}
	ac := consulagent.Config{LogPath: filepath.Join(cfg.Dir, "consul.log"), HCL: hcl}
	if cfg.Server {
		ac.DataDir = filepath.Join(cfg.Dir, "data")
	}
	b.agent, err = consulagent.Launch(ctx, cfg.Consul, ac)
	if err != nil {
		return nil, err
	}
	defer b.agent.Stop()
	if cfg.HeapTo != "" {
		hctx, stop := context.WithCancel(ctx)
		defer stop()
		go (&heapWatch{addr: b.agent.Addr, path: cfg.HeapTo, pid: b.agent.PID()}).run(hctx, time.Second)
	}
	if b.admin, err = b.agent.Client(); err != nil {
		return nil, err
	}
	defer b.stop()
	if err := b.startClients(ctx, hcl[:2]); err != nil {
		return nil, err
	}

	rep := &Report{When: cfg.Now().UTC(), Config: fmt.Sprintf("%+v", cfg.summary()), Agents: cfg.Agents}
	if self, err := b.admin.Agent().Self(); err == nil {
		rep.Consul = fmt.Sprint(self["Config"]["Version"])
	}
	rep.ConsulStartRSS, _ = peakRSSMiB(b.agent.PID())

	b.logf("idle agent for %s", cfg.Baseline)
	if err := b.baseline(ctx); err != nil {
		return rep, err
	}
	rep.IdleCPUShare, rep.IdleRaftPerSec = b.idleCPU, b.idleRaft

	for _, tool := range cfg.Tools {
		if cfg.Uncontended <= 0 {
			break
		}
		revPrefix := "" // the revision modes' tier, one for all of them
		for _, mode := range cfg.modesOf(tool) {
			prefix := ""
			if mode != modeOff {
				prefix = revPrefix
			}
			if prefix == "" {
				prefix = b.prefix(tool)
			}
			if mode != modeOff {
				revPrefix = prefix
			}
			b.logf("%s: %d uncontended runs (revision %s)", tool, cfg.Uncontended, mode)
			f, err := b.uncontended(ctx, tool, prefix, mode)
			if err != nil {
				return rep, err
			}
			rep.Uncontended = append(rep.Uncontended, f)
		}
	}
	for _, w := range cfg.workloads() {
		tool, m, n := w.tool, w.m, w.n
		// tierlock's modes run one after the other on one tier: the hosts that ran without a
		// revision take a new one, then run it again.
		prefix := ""
		for _, mode := range cfg.modesOf(tool) {
			if prefix == "" {
				prefix = b.prefix(tool)
			}
			b.logf("%s: M=%d, N=%d, t=%s, revision %s", tool, m, n, cfg.T, mode)
			f, err := b.contended(ctx, tool, prefix, mode, m, n)
			if err != nil {
				return rep, err
			}
			b.logf("%s: M=%d, N=%d, revision %s: %d runs (%d movers) in %.1fs, %.1f requests and %.2f raft writes per run, rollout key %d bytes",
				tool, m, n, mode, f.Runs, f.Movers, f.WallSeconds, f.RequestsPerRun, f.RaftPerRun, f.RolloutKeyBytes)
			rep.Contended = append(rep.Contended, f)
		}
	}
	if cfg.LongWaiters > 0 {
		for _, tool := range cfg.Tools {
			b.logf("%s: long wait, %d waiters idle for %s", tool, cfg.LongWaiters, cfg.LongWait)
			lw, err := b.longWait(ctx, tool)
			if err != nil {
				return rep, err
			}
			rep.LongWaits = append(rep.LongWaits, lw)
		}
	}
	return rep, ctx.Err()
}

// workload is one contended workload of one tool.
type workload struct {
	tool string
	m, n int
}

// workloads are the contended workloads in the order they run: by M, then N, each for every
// tool in turn, or (ByTool) every workload of the first tool, then of the next.
func (c Config) workloads() []workload {
	var ws []workload
	if c.ByTool {
		for _, tool := range c.Tools {
			for _, m := range c.Ms {
				for _, n := range c.Ns {
					ws = append(ws, workload{tool, m, n})
				}
			}
		}
		return ws
	}
	for _, m := range c.Ms {
		for _, n := range c.Ns {
			for _, tool := range c.Tools {
				ws = append(ws, workload{tool, m, n})
			}
		}
	}
	return ws
}

// modesOf are the revision modes tool runs in: the peer knows no revisions, so modeOff alone
// (if it is asked for).
func (c Config) modesOf(tool string) []string {
	if len(c.Revisions) == 0 {
		return []string{modeOff}
	}
	if tool == toolTierlock {
		return c.Revisions
	}
	for _, m := range c.Revisions {
		if m == modeOff {
			return []string{modeOff}
		}
	}
	return nil
}

func (c Config) summary() map[string]any {
	return map[string]any{"M": c.Ms, "N": c.Ns, "t": c.T.String(), "tools": c.Tools, "uncontended": c.Uncontended, "revisions": c.Revisions,
		"queue_ttl": c.QueueTTL.String(), "long_waiters": c.LongWaiters, "long_wait": c.LongWait.String(), "settle": c.Settle.String(),
		"baseline": c.Baseline.String(), "deadline": c.Deadline.String(), "splay": c.Splay.String(), "agents": c.Agents, "server": c.Server, "by_tool": c.ByTool}
}

// baseline measures the agent doing nothing: its own CPU and Raft writes, taken off later.
func (b *bench) baseline(ctx context.Context) error {
	m0, err := b.read(ctx)
	if err != nil {
		return err
	}
	sleep(ctx, b.cfg.Baseline)
	m1, err := b.read(ctx)
	if err != nil {
		return err
	}
	secs := m1.at.Sub(m0.at).Seconds()
	b.idleCPU = (m1.consulCPU - m0.consulCPU) / secs
	b.idleRaft = (m1.raft - m0.raft) / secs
	return ctx.Err()
}

// prefixes are fresh for each phase, so that no phase sees another's keys.
func (b *bench) prefix(tool string) string {
	b.phase++
	if tool == toolPeer {
		return fmt.Sprintf("fleet-peer/phase-%03d", b.phase)
	}
	return fmt.Sprintf("fleet-%03d", b.phase)
}

func (b *bench) newHost(tool, prefix, holder string, n int, revision string) (host, error) {
	if tool == toolPeer {
		return newPeerHost(b.nextAddr(), prefix, holder, n)
	}
	h, err := newTierlockHost(b.nextAddr(), prefix, holder, b.cfg.Wait, b.cfg.QueueTTL)
	if err != nil {
		return nil, err
	}
	h.revision = revision
	return h, nil
}

// rolloutKey reads the tier's rollout record, straight from the agent (not counted).
func (b *bench) rolloutKey(prefix string) ([]byte, error) {
	p, _, err := b.admin.KV().Get(prefix+"/"+benchTier+"/rollout", nil)
	if err != nil || p == nil {
		return nil, err
	}
	return p.Value, nil
}

// withRollout adds to f what the mode's runs say of the rollout, and the rollout key as
// they left it.
func (b *bench) withRollout(f *Figures, prefix, mode string, recs []runRecord) error {
	f.Mode, f.Revision = mode, revisionOf(mode)
	f.Movers, f.HostsPerStep = steps(recs)
	if f.WallSeconds > 0 {
		f.RunsPerSecond = float64(f.Runs) / f.WallSeconds
	}
	if (mode == modeMovers || mode == modeNext) && f.Workload != "uncontended" {
		f.ScheduleIdealSeconds = scheduleIdeal(f.M, f.N, b.cfg.T)
	}
	if f.Tool != toolTierlock {
		return nil
	}
	v, err := b.rolloutKey(prefix)
	if err != nil {
		return err
	}
	f.RolloutKeyBytes = len(v)
	if len(v) > 0 && json.Valid(v) {
		f.RolloutRecord = json.RawMessage(v)
	}
	return nil
}

// steps counts the runs admitted as movers, and how many each step of the rollout admitted.
func steps(recs []runRecord) (movers int, perStep []int) {
	for _, r := range recs {
		if r.batch < 0 || r.start.IsZero() {
			continue
		}
		movers++
		for len(perStep) <= r.batch {
			perStep = append(perStep, 0)
		}
		perStep[r.batch]++
	}
	return movers, perStep
}

// scheduleIdeal is the shortest span m movers can take under the default schedule with n
// slots and runs of t: step after step (each opens once the one before has succeeded), each
// step's movers in waves of n.
func scheduleIdeal(m, n int, t time.Duration) float64 {
	waves := 0
	for step, left := 0, m; left > 0; step++ {
		size := schema.DefaultPolicy.Size(step)
		if size < 0 || size > left {
			size = left
		}
		waves += (size + n - 1) / n
		left -= size
	}
	return float64(waves) * t.Seconds()
}

func (b *bench) setMax(prefix string, n int) error {
	_, err := b.admin.KV().Put(&api.KVPair{Key: prefix + "/" + benchTier + "/max_concurrent", Value: []byte(strconv.Itoa(n))}, nil)
	return err
}

// measured runs body between two readings and turns the difference into Figures.
func (b *bench) measured(ctx context.Context, tool string, m, n int, body func() []runRecord) (Figures, []runRecord, error) {
	b.resetPeaks()
	m0, err := b.read(ctx)
	if err != nil {
		return Figures{}, nil, err
	}
	recs := body()
	m1, err := b.read(ctx)
	if err != nil {
		return Figures{}, recs, err
	}
	f := Figures{Tool: tool, Mode: modeOff, M: m, N: n, T: b.cfg.T.Seconds(), Workload: fmt.Sprintf("M=%d, N=%d, t=%gs", m, n, b.cfg.T.Seconds())}
	f.timing = timingOf(recs)
	for _, r := range recs {
		if r.err != nil {
			f.Failed++
			if f.FirstErr == "" {
				f.FirstErr = r.err.Error()
			}
		}
	}
	f.Complete = f.Runs == m && ctx.Err() == nil
	f.WallSeconds = m1.at.Sub(m0.at).Seconds()
	f.IdealSeconds = math.Ceil(float64(m)/float64(n)) * b.cfg.T.Seconds()
	if f.SpanSeconds > 0 {
		f.Efficiency = f.IdealSeconds / f.SpanSeconds
	}
	runs := float64(max(f.Runs, 1))
	d := m1.counts.minus(m0.counts)
	req, raft, bytes, errs, local := d.totals()
	f.RequestsPerRun, f.RaftPerRun, f.AgentLocalPerRun = float64(req)/runs, float64(raft)/runs, float64(local)/runs
	f.AnswerKiBPerRun, f.ErrorAnswers = float64(bytes)/1024/runs, errs
	f.ByKindPerRun, f.KiBByKindPerRun = map[string]float64{}, map[string]float64{}
	refused, lost := d.lost()
	f.RefusedPerRun = float64(refused) / runs
	for class, n := range lost {
		if f.LostPerRun == nil {
			f.LostPerRun = map[string]float64{}
		}
		f.LostPerRun[class] = float64(n) / runs
	}
	for k, v := range d {
		f.ByKindPerRun[k] = float64(v.Requests) / runs
		f.KiBByKindPerRun[k] = float64(v.Bytes) / 1024 / runs
		if v.Raft {
			f.RaftKinds = append(f.RaftKinds, k)
		}
		if v.Local {
			f.LocalKinds = append(f.LocalKinds, k)
		}
	}
	sort.Strings(f.RaftKinds)
	sort.Strings(f.LocalKinds)
	f.RaftApplyRaw = m1.raft - m0.raft
	f.RaftApplyPerRun = (f.RaftApplyRaw - b.idleRaft*f.WallSeconds) / runs
	f.ConsulCPUPer1000 = (m1.consulCPU - m0.consulCPU) / runs * 1000
	f.ClientCPUMsRun = (m1.selfCPU - m0.selfCPU) / runs * 1000
	f.ProxyCPUMsRun = (m1.proxyCPU - m0.proxyCPU) / runs * 1000
	f.ConsulPeakRSSMiB, _ = peakRSSMiB(b.agent.PID())
	f.AgentsCPUPer1000, f.AgentPeakRSSMiB = (m1.agentsCPU-m0.agentsCPU)/runs*1000, b.agentPeakRSS()
	var sfs []secondsFrom
	for _, p := range b.proxies {
		sf, err := p.Seconds()
		if err != nil {
			return f, recs, err
		}
		sfs = append(sfs, sf)
	}
	f.Seconds = within(sfs, m0.at, m1.at)
	return f, recs, nil
}

// uncontended: one host at a time in an empty tier, each run with a fresh client, as each
// `tierlock run` or `consul lock` process has. In modeOff it is one host again and again; in
// the other modes, on a tier of their own, a host of its own for each run, so that every run
// of modeMovers is a mover (the canary, then each step's movers one after the other) and
// every run of modeSettled is not; their modeRerun is those hosts' runs without a revision.
func (b *bench) uncontended(ctx context.Context, tool, prefix, mode string) (Figures, error) {
	if tool == toolTierlock {
		if err := b.setMax(prefix, 1); err != nil {
			return Figures{}, err
		}
	}
	var herr error
	f, recs, err := b.measured(ctx, tool, b.cfg.Uncontended, 1, func() []runRecord {
		var recs []runRecord
		for i := 0; i < b.cfg.Uncontended && ctx.Err() == nil; i++ {
			holder := "solo"
			if mode != modeOff {
				holder = fmt.Sprintf("solo-%03d", i)
			}
			h, err := b.newHost(tool, prefix, holder, 1, revisionOf(mode))
			if err != nil {
				herr = err
				break
			}
			recs = append(recs, h.run(ctx, 0, nil))
		}
		return recs
	})
	if herr != nil {
		return f, herr
	}
	f.Workload = "uncontended"
	if err != nil {
		return f, err
	}
	return f, b.withRollout(&f, prefix, mode, recs)
}

// contended: m hosts started at the same instant in a tier of n slots, under prefix (which an
// earlier mode may have run on), their runs naming the mode's revision.
func (b *bench) contended(ctx context.Context, tool, prefix, mode string, m, n int) (Figures, error) {
	if tool == toolTierlock {
		if err := b.setMax(prefix, n); err != nil {
			return Figures{}, err
		}
	}
	hosts := make([]host, m)
	for i := range hosts {
		var err error
		if hosts[i], err = b.newHost(tool, prefix, fmt.Sprintf("host-%04d", i), n, revisionOf(mode)); err != nil {
			return Figures{}, err
		}
	}
	pctx, cancel := context.WithTimeout(ctx, b.cfg.Deadline)
	defer cancel()
	f, recs, err := b.measured(ctx, tool, m, n, func() []runRecord {
		recs := make([]runRecord, m)
		gate := make(chan struct{})
		var wg sync.WaitGroup
		for i, h := range hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				if b.cfg.Splay > 0 {
					select {
					case <-time.After(rand.N(b.cfg.Splay)):
					case <-pctx.Done():
					}
				}
				recs[i] = h.run(pctx, b.cfg.T, nil)
			}()
		}
		close(gate)
		wg.Wait()
		return recs
	})
	if err == nil && pctx.Err() != nil && ctx.Err() == nil {
		f.Complete = false
		b.logf("%s: M=%d, N=%d, revision %s: stopped at the deadline of %s after %d of %d runs", tool, m, n, mode, b.cfg.Deadline, f.Runs, m)
	}
	if err != nil {
		return f, err
	}
	return f, b.withRollout(&f, prefix, mode, recs)
}

// longWait: one host holds the tier's only slot while LongWaiters hosts wait in line; once
// they are all in line and Settle has passed, Consul is measured for LongWait.
func (b *bench) longWait(ctx context.Context, tool string) (LongWait, error) {
	lw := LongWait{Tool: tool, Waiters: b.cfg.LongWaiters}
	prefix := b.prefix(tool)
	if tool == toolTierlock {
		if err := b.setMax(prefix, 1); err != nil {
			return lw, err
		}
	}
	holder, err := b.newHost(tool, prefix, "holder", 1, "")
	if err != nil {
		return lw, err
	}
	hctx, hcancel := context.WithCancel(ctx)
	defer hcancel()
	holding := make(chan struct{})
	held := make(chan runRecord, 1)
	go func() { held <- holder.run(hctx, 24*time.Hour, func() { close(holding) }) }()
	select {
	case <-holding:
	case r := <-held:
		return lw, fmt.Errorf("fleet: %s long wait: the holder did not get the slot: %v", tool, r.err)
	}

	var inLine atomic.Int64
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	var wg sync.WaitGroup
	var peers []*peerHost
	start := b.cfg.Now()
	for i := range b.cfg.LongWaiters {
		h, err := b.newHost(tool, prefix, fmt.Sprintf("waiter-%04d", i), 1, "")
		if err != nil {
			wcancel()
			wg.Wait()
			return lw, err
		}
		switch h := h.(type) {
		case *tierlockHost:
			h.onLine = func() { inLine.Add(1) }
			// Waiting out the whole window: a waiter whose --wait ends in it gives up, and
			// its leaving (a look, its session's destruction) is no cost of waiting.
			h.wait = max(h.wait, b.cfg.Deadline+b.cfg.Settle+b.cfg.LongWait+time.Minute)
		case *peerHost:
			h.seen.onLine = func() { inLine.Add(1) }
			peers = append(peers, h)
		}
		wg.Add(1)
		go func() { defer wg.Done(); h.run(wctx, 0, nil) }()
	}
	for inLine.Load() < int64(b.cfg.LongWaiters) && ctx.Err() == nil && b.cfg.Now().Sub(start) < b.cfg.Deadline {
		sleep(ctx, 100*time.Millisecond)
	}
	lw.InLine = int(inLine.Load())
	lw.JoinSeconds = b.cfg.Now().Sub(start).Seconds()
	b.logf("%s: %d of %d waiters in line after %.1fs; settling for %s", tool, lw.InLine, lw.Waiters, lw.JoinSeconds, b.cfg.Settle)
	sleep(ctx, b.cfg.Settle)

	b.resetPeaks()
	m0, err := b.read(ctx)
	if err != nil {
		return lw, err
	}
	sleep(ctx, b.cfg.LongWait)
	m1, err := b.read(ctx)
	if err != nil {
		return lw, err
	}
	lw.ConsulPeakRSSMiB, _ = peakRSSMiB(b.agent.PID())
	secs := m1.at.Sub(m0.at).Seconds()
	lw.WindowSeconds = secs
	d := m1.counts.minus(m0.counts)
	req, raft, _, _, _ := d.totals()
	lw.RequestsPerSecond, lw.RaftPerSecond = float64(req)/secs, float64(raft)/secs
	lw.ByKindPerSecond = map[string]float64{}
	for k, v := range d {
		lw.ByKindPerSecond[k] = float64(v.Requests) / secs
		if v.Raft {
			lw.RaftKinds = append(lw.RaftKinds, k)
		}
	}
	sort.Strings(lw.RaftKinds)
	lw.RaftApplyPerSec = (m1.raft - m0.raft) / secs
	lw.ConsulCPUSeconds = m1.consulCPU - m0.consulCPU
	lw.CoreShareRaw = lw.ConsulCPUSeconds / secs
	lw.CoreShare = lw.CoreShareRaw - b.idleCPU

	// Clean-up, not measured: the waiters leave, then the holder releases.
	wcancel()
	wg.Wait()
	hcancel()
	if r := <-held; r.err != nil && !errors.Is(r.err, context.Canceled) {
		b.logf("%s long wait: holder: %v", tool, r.err)
	}
	// A peer waiter stopped while it waits leaves its session to expire (api.Semaphore does
	// not destroy it): destroy them now so that they do not weigh on the next phase.
	for _, p := range peers {
		if id := p.seen.sessionID(); id != "" {
			_, _ = b.admin.Session().Destroy(id, nil)
		}
	}
	return lw, nil
}

// sortedKinds lists the kinds of m, most frequent first.
func sortedKinds(m map[string]float64) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool {
		if m[ks[i]] != m[ks[j]] {
			return m[ks[i]] > m[ks[j]]
		}
		return ks[i] < ks[j]
	})
	return ks
}
