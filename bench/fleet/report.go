package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
)

// row is one line of the table: a figure for tierlock and the peer, their ratio, the goal.
type row struct {
	name, format, goal string
	get                func(Figures) float64
}

// contendedRows are the rows of the contended table; with client agents (agents), their CPU and
// memory too.
func contendedRows(agents bool) []row {
	rows := []row{
		{"runs", "%.0f", "= M", func(f Figures) float64 { return float64(f.Runs) }},
		{"efficiency", "%.2f", ">= 0.90", func(f Figures) float64 { return f.Efficiency }},
		{"max concurrency", "%.0f", "= N", func(f Figures) float64 { return float64(f.MaxConcurrency) }},
		{"requests per run", "%.1f", "<= 8", func(f Figures) float64 { return f.RequestsPerRun }},
		{"agent-local requests per run", "%.1f", "", func(f Figures) float64 { return f.AgentLocalPerRun }},
		{"raft writes per run (proxy)", "%.2f", "<= 4", func(f Figures) float64 { return f.RaftPerRun }},
		{"raft.apply per run (telemetry)", "%.2f", "", func(f Figures) float64 { return f.RaftApplyPerRun }},
		{"answer KiB per run", "%.1f", "flat in M", func(f Figures) float64 { return f.AnswerKiBPerRun }},
		{"handoff p50 ms", "%.1f", "", func(f Figures) float64 { return f.HandoffP50Ms }},
		{"handoff p99 ms", "%.1f", "<= 50", func(f Figures) float64 { return f.HandoffP99Ms }},
		{"FIFO", "%.3f", ">= 0.99", func(f Figures) float64 { return f.FIFO }},
		{"consul CPU s per 1000 runs", "%.2f", "<= peer/10", func(f Figures) float64 { return f.ConsulCPUPer1000 }},
		{"client CPU ms per run", "%.2f", "", func(f Figures) float64 { return f.ClientCPUMsRun }},
		{"consul peak RSS MiB", "%.0f", "", func(f Figures) float64 { return f.ConsulPeakRSSMiB }},
		{"failed runs", "%.0f", "0", func(f Figures) float64 { return float64(f.Failed) }},
	}
	if agents {
		rows = append(rows,
			row{"client agents' CPU s per 1000 runs", "%.2f", "", func(f Figures) float64 { return f.AgentsCPUPer1000 }},
			row{"client agent peak RSS MiB (largest)", "%.0f", "", func(f Figures) float64 { return f.AgentPeakRSSMiB }})
	}
	return rows
}

func uncontendedRows() []row {
	return []row{
		{"requests per run", "%.1f", "<= 3", func(f Figures) float64 { return f.RequestsPerRun }},
		{"agent-local requests per run", "%.1f", "", func(f Figures) float64 { return f.AgentLocalPerRun }},
		{"raft writes per run (proxy)", "%.2f", "<= 2", func(f Figures) float64 { return f.RaftPerRun }},
		{"raft.apply per run (telemetry)", "%.2f", "", func(f Figures) float64 { return f.RaftApplyPerRun }},
		{"consul CPU s per 1000 runs", "%.2f", "", func(f Figures) float64 { return f.ConsulCPUPer1000 }},
		{"client CPU ms per run", "%.2f", "", func(f Figures) float64 { return f.ClientCPUMsRun }},
	}
}

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// isOff reports whether f's runs named no revision (figures from before modes have none).
func isOff(f Figures) bool { return f.Mode == "" || f.Mode == modeOff }

// pair finds tierlock's and the peer's figures of one workload, without revisions.
func pair(fs []Figures, workload string) (ours, peer Figures, hasOurs, hasPeer bool) {
	for _, f := range fs {
		if f.Workload != workload || !isOff(f) {
			continue
		}
		if f.Tool == toolTierlock {
			ours, hasOurs = f, true
		} else {
			peer, hasPeer = f, true
		}
	}
	return ours, peer, hasOurs, hasPeer
}

func printReport(w io.Writer, rep *Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "workload\tfigure\ttierlock\tconsul lock\tratio\tgoal\t\n")
	table := func(fs []Figures, rows []row) {
		var seen []string
		for _, f := range fs {
			if !isOff(f) {
				continue
			}
			done := false
			for _, s := range seen {
				done = done || s == f.Workload
			}
			if done {
				continue
			}
			seen = append(seen, f.Workload)
			ours, peer, _, _ := pair(fs, f.Workload)
			name := f.Workload
			if (ours.Tool != "" && !ours.Complete) || (peer.Tool != "" && !peer.Complete) {
				name += " (incomplete)"
			}
			for _, r := range rows {
				a, b := r.get(ours), r.get(peer)
				fmt.Fprintf(tw, "%s\t%s\t"+r.format+"\t"+r.format+"\t%s\t%s\t\n", name, r.name, a, b, ratio(a, b), r.goal)
			}
		}
	}
	table(rep.Uncontended, uncontendedRows())
	table(rep.Contended, contendedRows(rep.Agents > 0))
	var ours, peer LongWait
	for _, lw := range rep.LongWaits {
		if lw.Tool == toolTierlock {
			ours = lw
		} else {
			peer = lw
		}
	}
	if len(rep.LongWaits) > 0 {
		name := fmt.Sprintf("long wait, %d waiters", max(ours.Waiters, peer.Waiters))
		lrow := func(fig, format string, a, b float64, goal string) {
			fmt.Fprintf(tw, "%s\t%s\t"+format+"\t"+format+"\t%s\t%s\t\n", name, fig, a, b, ratio(a, b), goal)
		}
		lrow("in line", "%.0f", float64(ours.InLine), float64(peer.InLine), "")
		lrow("requests per second", "%.1f", ours.RequestsPerSecond, peer.RequestsPerSecond, "")
		lrow("raft writes per second", "%.2f", ours.RaftPerSecond, peer.RaftPerSecond, "")
		lrow("consul core share %", "%.2f", 100*ours.CoreShare, 100*peer.CoreShare, "<= 1")
		lrow("consul core share % (idle not taken off)", "%.2f", 100*ours.CoreShareRaw, 100*peer.CoreShareRaw, "")
		lrow("consul peak RSS MiB", "%.0f", ours.ConsulPeakRSSMiB, peer.ConsulPeakRSSMiB, "")
	}
	tw.Flush()
	printRevisions(w, rep)
	fmt.Fprintf(w, "\nidle agent: %.2f%% of a core, %.2f raft applies/s (taken off the figures above)\n",
		100*rep.IdleCPUShare, rep.IdleRaftPerSec)

	fmt.Fprintln(w, "\nrequests per run by kind (Raft writes marked *, agent-local ones, not in the requests per run above, marked (local); answer KiB per run beside each):")
	for _, f := range append(append([]Figures(nil), rep.Uncontended...), rep.Contended...) {
		tool := f.Tool
		if !isOff(f) || hasRevisions(rep) {
			tool += " (revision " + f.Mode + ")"
		}
		fmt.Fprintf(w, "  %s, %s:", tool, f.Workload)
		for _, k := range sortedKinds(f.ByKindPerRun) {
			fmt.Fprintf(w, " %s%s%s %.2f", k, raftMark(f.RaftKinds, k), localMark(f.LocalKinds, k), f.ByKindPerRun[k])
			if kib := f.KiBByKindPerRun[k]; kib >= 0.05 {
				fmt.Fprintf(w, " (%.1f KiB)", kib)
			}
			fmt.Fprint(w, ";")
		}
		fmt.Fprintln(w)
	}
	printSlow(w, rep)
	printSeconds(w, rep)
	for _, lw := range rep.LongWaits {
		fmt.Fprintf(w, "  %s, long wait (per second):", lw.Tool)
		for _, k := range sortedKinds(lw.ByKindPerSecond) {
			fmt.Fprintf(w, " %s%s %.1f;", k, raftMark(lw.RaftKinds, k), lw.ByKindPerSecond[k])
		}
		fmt.Fprintln(w)
	}
}

// hasRevisions reports whether tierlock ran in a mode with a revision.
func hasRevisions(rep *Report) bool {
	for _, f := range append(append([]Figures(nil), rep.Uncontended...), rep.Contended...) {
		if !isOff(f) {
			return true
		}
	}
	return false
}

func revisionRows() []row {
	return []row{
		{"runs", "%.0f", "= M", func(f Figures) float64 { return float64(f.Runs) }},
		{"movers (runs the rollout admitted)", "%.0f", "", func(f Figures) float64 { return float64(f.Movers) }},
		{"requests per run", "%.2f", "", func(f Figures) float64 { return f.RequestsPerRun }},
		{"raft writes per run (proxy)", "%.2f", "movers <= BASE+1, settled = BASE", func(f Figures) float64 { return f.RaftPerRun }},
		{"raft.apply per run (telemetry)", "%.2f", "", func(f Figures) float64 { return f.RaftApplyPerRun }},
		{"of which refused (lost races)", "%.2f", "", func(f Figures) float64 { return f.RefusedPerRun }},
		{"answer KiB per run", "%.2f", "", func(f Figures) float64 { return f.AnswerKiBPerRun }},
		{"handoff p50 ms", "%.1f", "", func(f Figures) float64 { return f.HandoffP50Ms }},
		{"handoff p99 ms", "%.1f", "", func(f Figures) float64 { return f.HandoffP99Ms }},
		{"max concurrency", "%.0f", "<= N", func(f Figures) float64 { return float64(f.MaxConcurrency) }},
		{"wall s", "%.2f", "", func(f Figures) float64 { return f.WallSeconds }},
		{"runs per second", "%.1f", "", func(f Figures) float64 { return f.RunsPerSecond }},
		{"span s (first start to last end)", "%.2f", "", func(f Figures) float64 { return f.SpanSeconds }},
		{"ideal span s (schedule's, for movers)", "%.2f", "", func(f Figures) float64 { return max(f.IdealSeconds, f.ScheduleIdealSeconds) }},
		{"consul CPU s per 1000 runs", "%.2f", "", func(f Figures) float64 { return f.ConsulCPUPer1000 }},
		{"rollout key bytes (at the end)", "%.0f", "flat in M", func(f Figures) float64 { return float64(f.RolloutKeyBytes) }},
		{"failed runs", "%.0f", "0", func(f Figures) float64 { return float64(f.Failed) }},
	}
}

// printRevisions prints tierlock's figures in each revision mode side by side, with each
// mode's ratio to the runs without a revision on the same tier, modeRerun (modeOff when it
// was not run), and the Raft writes' difference.
func printRevisions(w io.Writer, rep *Report) {
	if !hasRevisions(rep) {
		return
	}
	var modes []string
	all := append(append([]Figures(nil), rep.Uncontended...), rep.Contended...)
	for _, m := range revisionModes {
		for _, f := range all {
			if f.Tool == toolTierlock && f.Mode == m {
				modes = append(modes, m)
				break
			}
		}
	}
	base := modeOff
	if slices.Contains(modes, modeRerun) {
		base = modeRerun
	}
	var compared []string // the modes with a ratio to base
	for _, m := range modes {
		if m != modeOff && m != base {
			compared = append(compared, m)
		}
	}
	fmt.Fprintf(w, "\ntierlock with revisions (off: no --revision, fresh tier; rerun: every host again, no --revision; movers: every host's first run of R; settled: every host runs R again; next: R2 supersedes R)\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "workload\tfigure\t")
	for _, m := range modes {
		fmt.Fprintf(tw, "%s\t", m)
	}
	for _, m := range compared {
		fmt.Fprintf(tw, "%s/%s\t", m, base)
	}
	fmt.Fprint(tw, "goal\t\n")
	var seen, stepLines, lostLines []string
	for _, f := range all {
		if f.Tool != toolTierlock || slices.Contains(seen, f.Workload) {
			continue
		}
		seen = append(seen, f.Workload)
		byMode := map[string]Figures{}
		for _, g := range all {
			if g.Tool == toolTierlock && g.Workload == f.Workload {
				byMode[modeOr(g.Mode)] = g
			}
		}
		name := f.Workload
		for _, g := range byMode {
			if !g.Complete {
				name += " (incomplete)"
				break
			}
		}
		off, hasOff := byMode[base]
		for _, r := range revisionRows() {
			if f.Workload == "uncontended" && strings.Contains(r.name, "span") {
				continue // runs one after the other, sleeping 0: no span to speak of
			}
			fmt.Fprintf(tw, "%s\t%s\t", name, r.name)
			for _, m := range modes {
				if g, ok := byMode[m]; ok {
					fmt.Fprintf(tw, r.format+"\t", r.get(g))
				} else {
					fmt.Fprint(tw, "\t")
				}
			}
			for _, m := range compared {
				g, ok := byMode[m]
				switch {
				case !ok || !hasOff:
					fmt.Fprint(tw, "\t")
				case r.name == "raft writes per run (proxy)" || r.name == "of which refused (lost races)":
					fmt.Fprintf(tw, "%s (%+.2f)\t", ratio(r.get(g), r.get(off)), r.get(g)-r.get(off))
				default:
					fmt.Fprintf(tw, "%s\t", ratio(r.get(g), r.get(off)))
				}
			}
			fmt.Fprintf(tw, "%s\t\n", strings.ReplaceAll(r.goal, "BASE", base))
		}
		steps, lost := "", ""
		for _, m := range modes {
			g, ok := byMode[m]
			if len(g.HostsPerStep) > 0 {
				steps += fmt.Sprintf(" %s: %s;", m, joinInts(g.HostsPerStep))
			}
			if ok {
				lost += fmt.Sprintf(" %s:", m)
				for _, class := range sortedKinds(g.LostPerRun) {
					lost += fmt.Sprintf(" %s %.2f", class, g.LostPerRun[class])
				}
				if len(g.LostPerRun) == 0 {
					lost += " none"
				}
				lost += ";"
			}
		}
		lostLines = append(lostLines, fmt.Sprintf("  %s:%s", f.Workload, lost))
		if steps != "" {
			stepLines = append(stepLines, fmt.Sprintf("  %s:%s", f.Workload, steps))
		}
	}
	tw.Flush()
	if len(stepLines) > 0 {
		fmt.Fprintln(w, "movers admitted per rollout step (0 is the canary):")
		for _, l := range stepLines {
			fmt.Fprintln(w, l)
		}
	}
	fmt.Fprintln(w, "failed checks per run in the transactions Consul refused (lost races), by the key checked (one refusal may fail several):")
	for _, l := range lostLines {
		fmt.Fprintln(w, l)
	}
}

func modeOr(m string) string {
	if m == "" {
		return modeOff
	}
	return m
}

func joinInts(xs []int) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprint(x)
	}
	return strings.Join(parts, ",")
}

// raftMark is "*" for the kinds that are Raft writes.
func raftMark(raftKinds []string, kind string) string {
	for _, k := range raftKinds {
		if k == kind {
			return "*"
		}
	}
	return ""
}

// localMark is " (local)" for the kinds the host's own agent answers.
func localMark(localKinds []string, kind string) string {
	for _, k := range localKinds {
		if k == kind {
			return " (local)"
		}
	}
	return ""
}

func writeJSON(dir string, rep *Report) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "fleet-"+rep.When.Format("20060102T150405Z")+".json")
	return path, os.WriteFile(path, append(b, '\n'), 0o644)
}

// printSlow accounts for tierlock's handoffs over slowHandoff by what the release before each
// did (see slowAccount).
func printSlow(w io.Writer, rep *Report) {
	first := true
	for _, f := range rep.Contended {
		a := f.Slow
		if a == nil {
			continue
		}
		if first {
			fmt.Fprintf(w, "\nhandoffs over %v, by what the release before each did (all handoffs' share in brackets):\n", slowHandoff)
			first = false
		}
		share := func(n, of int) float64 { return 100 * float64(n) / float64(max(of, 1)) }
		fmt.Fprintf(w, "  %s, %s: %d of %d; release read the line %.0f%% (%.0f%%), had a write refused %.0f%% (%.0f%%), took most of the handoff %.0f%%; median release %.1f ms in %.0f requests, wake %.1f ms\n",
			f.Tool, f.Workload, a.Slow, a.Handoffs,
			share(a.SlowAfterLine, a.Slow), share(a.AfterLineRead, a.Handoffs),
			share(a.SlowAfterLost, a.Slow), share(a.AfterLostRace, a.Handoffs),
			share(a.SlowReleaseBound, a.Slow), a.SlowReleaseP50Ms, a.SlowReleaseRequestsP50, a.SlowWakeP50Ms)
	}
}

// secondsShown is how many of a workload's first seconds printSeconds lists.
const secondsShown = 20

// printSeconds lists, for each contended workload whose answers included errors, the second
// of the first error answer and the first seconds' requests and errors: what a burst did
// before it collapsed.
func printSeconds(w io.Writer, rep *Report) {
	header := false
	for _, f := range rep.Contended {
		first := slices.IndexFunc(f.Seconds, func(s second) bool { return s.Errors > 0 })
		if first < 0 {
			continue
		}
		if !header {
			fmt.Fprintln(w, "\nanswers second by second from the workload's start (requests/errors), where some were errors:")
			header = true
		}
		fmt.Fprintf(w, "  %s, %s: first error answer in second %d;", f.Tool, f.Workload, first)
		for i, s := range f.Seconds[:min(len(f.Seconds), secondsShown)] {
			fmt.Fprintf(w, " %d:%d/%d", i, s.Requests, s.Errors)
		}
		fmt.Fprintln(w)
	}
}
