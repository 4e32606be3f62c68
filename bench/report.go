package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"
)

// share is tierlock's efficiency as a share of the local semaphore's on one workload: how much
// of what the harness itself can reach (process start-up on this machine, the recorder, the
// gate) tierlock reaches. 1 - share is tierlock's own part of the gap; 1 - local is the
// harness's.
type share struct {
	Workload          string  `json:"workload"`
	TierlockEff       float64 `json:"tierlock_efficiency"`
	LocalEff          float64 `json:"local_semaphore_efficiency"`
	TierlockOfLocal   float64 `json:"tierlock_share_of_local"`
	TierlockHandoff99 float64 `json:"tierlock_handoff_p99_ms"`
	LocalHandoff99    float64 `json:"local_semaphore_handoff_p99_ms"`
}

// byTool picks each tool's figures for one workload (zero figures for a tool not run).
func byTool(wl workload, results []figures) (ours, peer, local figures) {
	for _, r := range results {
		if r.Workload != wl.String() {
			continue
		}
		switch r.Tool {
		case toolTierlock:
			ours = r
		case toolPeer:
			peer = r
		case toolLocal:
			local = r
		}
	}
	return ours, peer, local
}

func shares(workloads []workload, results []figures) []share {
	var out []share
	for _, wl := range workloads {
		ours, _, local := byTool(wl, results)
		if ours.Tool == "" || local.Tool == "" || local.Efficiency == 0 {
			continue
		}
		out = append(out, share{Workload: wl.String(), TierlockEff: ours.Efficiency, LocalEff: local.Efficiency,
			TierlockOfLocal:   ours.Efficiency / local.Efficiency,
			TierlockHandoff99: ours.HandoffP99Ms, LocalHandoff99: local.HandoffP99Ms})
	}
	return out
}

// ratio is a/b as "1.23x", or "-" when b is zero (a tool not run, or a figure of nothing).
func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// printTable prints, per workload, tierlock, consul lock and the local semaphore side by side,
// with tierlock's ratio to the peer and to the local semaphore (the harness's own floor).
func printTable(w io.Writer, workloads []workload, results []figures, ovs []overhead) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tfigure\ttierlock\tconsul lock\tratio\tlocal sem\ttierlock/local\tgoal\t")
	for _, wl := range workloads {
		ours, peer, local := byTool(wl, results)
		row := func(name string, a, b, c float64, format, goal string) {
			fmt.Fprintf(tw, "%s\t%s\t"+format+"\t"+format+"\t%s\t"+format+"\t%s\t%s\t\n",
				wl, name, a, b, ratio(a, b), c, ratio(a, c), goal)
		}
		row("efficiency", ours.Efficiency, peer.Efficiency, local.Efficiency, "%.2f", ">= 0.90")
		fmt.Fprintf(tw, "%s\t%s\t%d of %d\t%d of %d\t-\t%d of %d\t-\t%s\t\n", wl, "max concurrency",
			ours.MaxConcurrency, wl.N, peer.MaxConcurrency, wl.N, local.MaxConcurrency, wl.N, "= N")
		row("requests per run", ours.RequestsPerRun, peer.RequestsPerRun, local.RequestsPerRun, "%.1f", "<= 12")
		row("agent-local requests per run", ours.AgentLocalPerRun, peer.AgentLocalPerRun, local.AgentLocalPerRun, "%.1f", "")
		row("handoff p50 ms", ours.HandoffP50Ms, peer.HandoffP50Ms, local.HandoffP50Ms, "%.1f", "")
		row("handoff p99 ms", ours.HandoffP99Ms, peer.HandoffP99Ms, local.HandoffP99Ms, "%.1f", "<= 50")
		row("FIFO", ours.FIFO, peer.FIFO, local.FIFO, "%.3f", ">= 0.99")
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t-\t%d\t-\t%s\t\n", wl, "failed runs", ours.Failed, peer.Failed, local.Failed, "0")
		row("host CPU ms per run", ours.HostCPUMsPerRun, peer.HostCPUMsPerRun, local.HostCPUMsPerRun, "%.1f", "")
		row("harness CPU ms per run", ours.HarnessCPUMsPerRun, peer.HarnessCPUMsPerRun, local.HarnessCPUMsPerRun, "%.1f", "")
		row("Consul CPU ms per run", ours.ConsulCPUMsPerRun, peer.ConsulCPUMsPerRun, local.ConsulCPUMsPerRun, "%.1f", "")
		row("CPU ceiling", ours.CPUCeiling, peer.CPUCeiling, local.CPUCeiling, "%.2f", "")
	}
	var ours, peer overhead
	for _, o := range ovs {
		if o.Tool == toolTierlock {
			ours = o
		} else {
			peer = o
		}
	}
	fmt.Fprintf(tw, "uncontended\toverhead ms\t%.1f\t%.1f\t%s\t-\t-\t<= 15\t\n", ours.WallMs, peer.WallMs, ratio(ours.WallMs, peer.WallMs))
	fmt.Fprintf(tw, "uncontended\tpeak RSS MiB\t%.1f\t%.1f\t%s\t-\t-\t<= 25\t\n", ours.PeakRSSMiB, peer.PeakRSSMiB, ratio(ours.PeakRSSMiB, peer.PeakRSSMiB))
	tw.Flush()
	for _, s := range shares(workloads, results) {
		fmt.Fprintf(w, "%s: tierlock reaches %.2f of what the harness itself can reach (efficiency %.2f of the local semaphore's %.2f)\n",
			s.Workload, s.TierlockOfLocal, s.TierlockEff, s.LocalEff)
	}
	if len(results) > 0 {
		fmt.Fprintf(w, "CPU ceiling: the efficiency the span could reach if the %d cores did nothing but the CPU counted above (cores × ideal span ÷ CPU from the gate's opening to the last exit)\n", results[0].Cores)
	}
}

func writeJSON(dir string, workloads []workload, results []figures, ovs []overhead) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	now := time.Now().UTC()
	doc := map[string]any{"when": now, "runs": results, "overhead": ovs, "harness_floor": shares(workloads, results)}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, now.Format("20060102T150405Z")+".json")
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s\n", path)
	return nil
}
