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

// printTable prints, per workload, tierlock and consul lock side by side with their ratio.
func printTable(w io.Writer, workloads []workload, results []figures, ovs []overhead) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tfigure\ttierlock\tconsul lock\tratio\tgoal\t")
	for _, wl := range workloads {
		var ours, peer figures
		for _, r := range results {
			if r.Workload == wl.String() {
				if r.Tool == "tierlock" {
					ours = r
				} else {
					peer = r
				}
			}
		}
		row := func(name string, a, b float64, format, goal string) {
			ratio := "-"
			if b != 0 {
				ratio = fmt.Sprintf("%.2fx", a/b)
			}
			fmt.Fprintf(tw, "%s\t%s\t"+format+"\t"+format+"\t%s\t%s\t\n", wl, name, a, b, ratio, goal)
		}
		row("efficiency", ours.Efficiency, peer.Efficiency, "%.2f", ">= 0.90")
		fmt.Fprintf(tw, "%s\t%s\t%d of %d\t%d of %d\t-\t%s\t\n", wl, "max concurrency", ours.MaxConcurrency, wl.N, peer.MaxConcurrency, wl.N, "= N")
		row("requests per run", ours.RequestsPerRun, peer.RequestsPerRun, "%.1f", "<= 12")
		row("handoff p50 ms", ours.HandoffP50Ms, peer.HandoffP50Ms, "%.1f", "")
		row("handoff p99 ms", ours.HandoffP99Ms, peer.HandoffP99Ms, "%.1f", "<= 50")
		row("FIFO", ours.FIFO, peer.FIFO, "%.3f", ">= 0.99")
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t-\t%s\t\n", wl, "failed runs", ours.Failed, peer.Failed, "0")
	}
	var ours, peer overhead
	for _, o := range ovs {
		if o.Tool == "tierlock" {
			ours = o
		} else {
			peer = o
		}
	}
	fmt.Fprintf(tw, "uncontended\toverhead ms\t%.1f\t%.1f\t%.2fx\t<= 15\t\n", ours.WallMs, peer.WallMs, ours.WallMs/peer.WallMs)
	fmt.Fprintf(tw, "uncontended\tpeak RSS MiB\t%.1f\t%.1f\t%.2fx\t<= 25\t\n", ours.PeakRSSMiB, peer.PeakRSSMiB, ours.PeakRSSMiB/peer.PeakRSSMiB)
	tw.Flush()
}

func writeJSON(dir string, results []figures, ovs []overhead) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	now := time.Now().UTC()
	doc := map[string]any{"when": now, "runs": results, "overhead": ovs}
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
