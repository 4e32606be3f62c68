package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
)

// TestMain lets the test binary be the proxy process too, as the fleet binary is.
func TestMain(m *testing.M) {
	if os.Getenv(proxyRoleEnv) == "proxy" {
		os.Exit(proxyMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// TestFleetSmoke runs a small fleet (M=20, N=2, a long wait of 20 waiters) through both tools
// against a real agent and checks that the figures are sane: every run ran, never more than N
// at once, requests and Raft writes counted, Consul's telemetry agreeing with the proxy. It
// asserts nothing about speed.
func TestFleetSmoke(t *testing.T) {
	bin := consulagent.Need(t)
	cfg := Config{
		Consul: bin, Ms: []int{20}, Ns: []int{2}, T: 50 * time.Millisecond,
		Tools: []string{toolTierlock, toolPeer}, Uncontended: 3,
		LongWaiters: 20, LongWait: 2 * time.Second, Settle: time.Second, Baseline: time.Second,
		Deadline: 2 * time.Minute, Wait: time.Minute, Dir: t.TempDir(),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Contended) != 2 || len(rep.Uncontended) != 2 || len(rep.LongWaits) != 2 {
		t.Fatalf("want 2 figures of each kind, got %d contended, %d uncontended, %d long waits",
			len(rep.Contended), len(rep.Uncontended), len(rep.LongWaits))
	}
	for _, f := range rep.Uncontended {
		if f.Runs != 3 || f.Failed != 0 {
			t.Errorf("%s uncontended: %d runs, %d failed (%s), want 3 and 0", f.Tool, f.Runs, f.Failed, f.FirstErr)
		}
		if f.RequestsPerRun < 2 || f.RaftPerRun < 1 {
			t.Errorf("%s uncontended: %.1f requests and %.1f raft writes per run: too few to be real", f.Tool, f.RequestsPerRun, f.RaftPerRun)
		}
		// tierlock run asks its agent for its node name at every run: one agent-local request,
		// not among the servers' requests.
		if want := map[string]float64{toolTierlock: 1}[f.Tool]; f.AgentLocalPerRun != want {
			t.Errorf("%s uncontended: %.2f agent-local requests per run, want %.0f", f.Tool, f.AgentLocalPerRun, want)
		}
	}
	for _, f := range rep.Contended {
		if !f.Complete || f.Runs != 20 || f.Failed != 0 {
			t.Errorf("%s: complete %v, %d runs, %d failed (%s); want every one of 20", f.Tool, f.Complete, f.Runs, f.Failed, f.FirstErr)
		}
		if f.MaxConcurrency != 2 {
			t.Errorf("%s: max concurrency %d, want 2", f.Tool, f.MaxConcurrency)
		}
		if f.Handoffs != 18 {
			t.Errorf("%s: %d handoffs, want 18 (every start but the first two)", f.Tool, f.Handoffs)
		}
		if f.FIFO < 0 || f.FIFO > 1 || f.Waiters == 0 {
			t.Errorf("%s: FIFO %.3f over %d waiters", f.Tool, f.FIFO, f.Waiters)
		}
		if want := map[string]float64{toolTierlock: 1}[f.Tool]; f.AgentLocalPerRun != want {
			t.Errorf("%s: %.2f agent-local requests per run, want %.0f", f.Tool, f.AgentLocalPerRun, want)
		}
		if f.RequestsPerRun < 3 || f.RaftPerRun < 2 || f.ErrorAnswers != 0 {
			t.Errorf("%s: %.1f requests, %.1f raft writes per run, %d error answers", f.Tool, f.RequestsPerRun, f.RaftPerRun, f.ErrorAnswers)
		}
		// Every write the proxy counts is one Raft entry, so Consul's own count (which also
		// holds its background writes) is at least as large, and not wildly larger.
		proxyRaft := f.RaftPerRun * float64(f.Runs)
		if f.RaftApplyRaw < proxyRaft || f.RaftApplyRaw > 2*proxyRaft+20 {
			t.Errorf("%s: consul.raft.apply went up by %.0f, the proxy counted %.0f raft writes", f.Tool, f.RaftApplyRaw, proxyRaft)
		}
		if f.ConsulPeakRSSMiB <= 0 || f.ClientCPUMsRun <= 0 {
			t.Errorf("%s: consul peak RSS %.1f MiB, client CPU %.2f ms per run", f.Tool, f.ConsulPeakRSSMiB, f.ClientCPUMsRun)
		}
	}
	for _, lw := range rep.LongWaits {
		if lw.InLine != 20 {
			t.Errorf("%s long wait: %d of 20 waiters in line", lw.Tool, lw.InLine)
		}
		if lw.WindowSeconds < 2 || lw.ConsulCPUSeconds < 0 {
			t.Errorf("%s long wait: window %.1fs, consul CPU %.2fs", lw.Tool, lw.WindowSeconds, lw.ConsulCPUSeconds)
		}
	}

	var out bytes.Buffer
	printReport(&out, rep)
	for _, want := range []string{"requests per run", "M=20, N=2, t=0.05s", "long wait, 20 waiters", "txn take slot"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the table lacks %q:\n%s", want, out.String())
		}
	}
	dir := t.TempDir()
	path, err := writeJSON(dir, rep)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil || len(back.Contended) != 2 || filepath.Dir(path) != dir {
		t.Errorf("JSON %s does not read back: %v", path, err)
	}
}

// TestFleetAgents runs a small fleet through client agents (-agents 2): the hosts, dealt over
// two agents and their proxies, all run; both proxies' counts are summed (every run's node
// name is asked of its own agent, once); the client agents' CPU is measured apart from the
// server's; and the table names them.
func TestFleetAgents(t *testing.T) {
	bin := consulagent.Need(t)
	cfg := Config{
		Consul: bin, Ms: []int{20}, Ns: []int{2}, T: 50 * time.Millisecond, Tools: []string{toolTierlock},
		Baseline: time.Second, Deadline: 2 * time.Minute, Wait: time.Minute, Dir: t.TempDir(), Agents: 2,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Contended) != 1 || rep.Agents != 2 {
		t.Fatalf("want one workload over 2 agents, got %d over %d", len(rep.Contended), rep.Agents)
	}
	f := rep.Contended[0]
	if !f.Complete || f.Runs != 20 || f.Failed != 0 || f.MaxConcurrency != 2 {
		t.Errorf("complete %v, %d runs, %d failed (%s), max concurrency %d; want 20 runs, at most 2 at once", f.Complete, f.Runs, f.Failed, f.FirstErr, f.MaxConcurrency)
	}
	if f.AgentLocalPerRun != 1 || f.RequestsPerRun < 3 {
		t.Errorf("%.2f agent-local and %.1f requests per run: one proxy's counts only?", f.AgentLocalPerRun, f.RequestsPerRun)
	}
	if f.AgentsCPUPer1000 <= 0 || f.AgentPeakRSSMiB <= 0 {
		t.Errorf("client agents: %.2f CPU s per 1000 runs, peak RSS %.0f MiB", f.AgentsCPUPer1000, f.AgentPeakRSSMiB)
	}
	var out bytes.Buffer
	printReport(&out, rep)
	if !strings.Contains(out.String(), "client agents' CPU s per 1000 runs") {
		t.Errorf("the table lacks the client agents:\n%s", out.String())
	}
}

// TestFleetRevisions runs a small fleet through tierlock in every revision mode against a real
// agent and checks what the modes are for: every run of movers is a mover, admitted canary
// first then by the doubling schedule, never more than N at once; no run of settled is, and it
// leaves the rollout record as movers left it (a non-mover writes nothing to it); the record
// is there, small; and a mover's run costs no more Raft writes than the goal allows (exactly
// as many uncontended, where nothing races).
func TestFleetRevisions(t *testing.T) {
	bin := consulagent.Need(t)
	cfg := Config{
		Consul: bin, Ms: []int{20}, Ns: []int{2}, T: 50 * time.Millisecond,
		Tools: []string{toolTierlock}, Uncontended: 4, Revisions: []string{modeOff, modeRerun, modeMovers, modeSettled, modeNext},
		Baseline: time.Second, LongWait: time.Second, Deadline: 2 * time.Minute, Wait: time.Minute, Dir: t.TempDir(),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Contended) != 5 || len(rep.Uncontended) != 5 {
		t.Fatalf("want 5 figures of each kind, got %d contended, %d uncontended", len(rep.Contended), len(rep.Uncontended))
	}
	for _, fs := range [][]Figures{rep.Uncontended, rep.Contended} {
		byMode := map[string]Figures{}
		for i, f := range fs {
			if f.Mode != cfg.Revisions[i] {
				t.Fatalf("%s: figure %d is of mode %q, want %q", f.Workload, i, f.Mode, cfg.Revisions[i])
			}
			byMode[f.Mode] = f
			if !f.Complete || f.Failed != 0 || f.MaxConcurrency > f.N {
				t.Errorf("%s, %s: complete %v, %d failed (%s), max concurrency %d of %d", f.Workload, f.Mode, f.Complete, f.Failed, f.FirstErr, f.MaxConcurrency, f.N)
			}
		}
		off, rerun, movers, settled, next := byMode[modeOff], byMode[modeRerun], byMode[modeMovers], byMode[modeSettled], byMode[modeNext]
		w := off.Workload
		want := []int{1, 2, 4, 8, 5} // M=20: the canary, then doubling
		if w == "uncontended" {
			want = []int{1, 2, 1}
		}
		for _, f := range []Figures{movers, next} {
			if f.Movers != f.M || !slices.Equal(f.HostsPerStep, want) {
				t.Errorf("%s, %s: %d movers, per step %v; want %d, %v", w, f.Mode, f.Movers, f.HostsPerStep, f.M, want)
			}
		}
		if off.Movers != 0 || rerun.Movers != 0 || settled.Movers != 0 || off.RolloutKeyBytes != 0 || rerun.RolloutKeyBytes != 0 {
			t.Errorf("%s: movers %d and %d without a revision and %d settled, rollout key %d and %d bytes without a revision; want none",
				w, off.Movers, rerun.Movers, settled.Movers, off.RolloutKeyBytes, rerun.RolloutKeyBytes)
		}
		if movers.RolloutKeyBytes == 0 || movers.RolloutKeyBytes > 1024 || next.RolloutKeyBytes > 1024 {
			t.Errorf("%s: rollout key %d bytes after movers, %d after next; want some, and under 1 KiB", w, movers.RolloutKeyBytes, next.RolloutKeyBytes)
		}
		if string(settled.RolloutRecord) != string(movers.RolloutRecord) {
			t.Errorf("%s: non-movers rewrote the rollout record:\n%s\nthen\n%s", w, movers.RolloutRecord, settled.RolloutRecord)
		}
		slack := 1.0 // contended writes race; every lost check-and-set is a write
		if w == "uncontended" {
			slack = 0
		}
		for _, f := range []Figures{off, rerun, movers, settled, next} {
			if f.RefusedPerRun > f.RaftPerRun {
				t.Errorf("%s, %s: %.2f refused transactions per run, more than its %.2f raft writes", w, f.Mode, f.RefusedPerRun, f.RaftPerRun)
			}
		}
		for _, f := range []Figures{movers, settled, next} {
			// The run that supersedes the rollout joins the line before it reads the whole
			// tier, even alone (lock's joinFirst): a session, an entry and its end, once per
			// revision, spread over the mode's runs.
			once := 0.0
			if f.Mode == next.Mode && f.Runs > 0 {
				once = 3.0 / float64(f.Runs)
			}
			if f.RaftPerRun > rerun.RaftPerRun+slack+once+1e-9 {
				t.Errorf("%s, %s: %.2f raft writes per run, %.2f without a revision", w, f.Mode, f.RaftPerRun, rerun.RaftPerRun)
			}
		}
	}
	var out bytes.Buffer
	printReport(&out, rep)
	for _, want := range []string{"tierlock with revisions", "movers/rerun", "rollout key bytes", "movers: 1,2,4,8,5;"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestMainRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"zero hosts", []string{"-m", "0"}, `-m: "0" is not a positive integer`},
		{"not a number", []string{"-n", "10,x"}, `-n: "x" is not a positive integer`},
		{"unknown tool", []string{"-tools", "tierlock,etcd"}, `-tools: "etcd" is neither`},
		{"no window", []string{"-long-wait", "0s"}, "-long-wait"},
		{"unknown revision mode", []string{"-revisions", "off,canary"}, `-revisions: "canary" is none of`},
		{"settled without movers", []string{"-revisions", "off,settled"}, "ask for it too"},
		{"rerun without off", []string{"-revisions", "rerun,movers"}, "rerun runs after off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := Main(context.Background(), tc.args, &stdout, &stderr); code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tc.want)
			}
		})
	}
}
