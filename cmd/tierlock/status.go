package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/urfave/cli/v2"

	"github.com/tierlock/tierlock/internal/safetext"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
	"github.com/tierlock/tierlock/monitor"
)

func (a *App) statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show every tier (or one): max, current, holders with state, age, exit code, instance id",
		Flags: []cli.Flag{
			tierFlag(false), prefixFlag(), consulTimeoutFlag(),
			&cli.StringFlag{Name: "format", Value: "table", Usage: "table, json or prometheus (text exposition format, for node_exporter's textfile collector)"},
			defaultMaxFlag(),
			watchFlag(),
			&cli.BoolFlag{Name: "hosts", Usage: "list every known host of each tier: last convergence, its age, and what it is doing now"},
		},
		Action: func(c *cli.Context) error {
			format := c.String("format")
			if format != "table" && format != "json" && format != "prometheus" {
				return usage("--format %q: want table, json or prometheus", format)
			}
			timeout, err := consulTimeoutOf(c)
			if err != nil {
				return err
			}
			if c.Bool("watch") {
				if format != "table" {
					return usage("--watch draws the table; --format %q cannot be watched", format)
				}
				return a.watchStatus(c.Context, c, timeout, c.Bool("hosts"))
			}
			snaps, err := a.readTiers(c.Context, c, timeout)
			if err != nil {
				return fail(err)
			}
			now := a.Now()
			v := monitor.Judge(snaps, now, monitor.DefaultThresholds())
			switch format {
			case "json":
				return writeStatusJSON(a.Stdout, c.String("prefix"), snaps, v, now)
			case "prometheus":
				return writeStatusMetrics(a.Stdout, snaps, v, now)
			}
			writeStatusTable(a.Stdout, snaps, v, now, c.Bool("hosts"))
			return nil
		},
	}
}

// writeStatusTable prints problem tiers first, each holder on a line of its own, then the
// problems, the waiters and the convergence of each tier's hosts (with hosts, a line per
// host); it fits 80 columns for names of ordinary length.
func writeStatusTable(w io.Writer, snaps []*lock.Snapshot, v monitor.Verdict, now time.Time, hosts bool) {
	bySnap := map[string]*lock.Snapshot{}
	for _, s := range snaps {
		bySnap[s.Tier] = s
	}
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIER\tMAX\tHELD\tHOLDER\tSTATE\tAGE\tEXIT\tTRY\tINSTANCE\tVERSION")
	var notes []string
	for _, tv := range v.Tiers {
		s := bySnap[tv.Tier]
		held := fmt.Sprint(s.Current)
		if s.Drift() {
			held = fmt.Sprintf("%d!=%d", s.Current, s.RunningKeys)
		}
		max := fmt.Sprint(s.Max)
		switch {
		case len(s.Problems) > 0:
			max = "INVALID"
		case s.Disabled():
			max = "off"
		case s.Max < 0:
			max = "unlim"
		case !s.MaxSet:
			max += "*"
		}
		holders := sortedHolders(s)
		if len(holders) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t\t\t\t\t\t\n", tv.Tier, max, held)
		}
		for i, h := range holders {
			rec := s.Holders[h]
			tier, mx, hd := "", "", ""
			if i == 0 {
				tier, mx, hd = tv.Tier, max, held
			}
			code := "-"
			if rec.ExitCode != nil {
				code = fmt.Sprint(*rec.ExitCode)
			}
			// Every stored string goes through the sanitiser: a tab or an escape in one must
			// neither break the columns nor reach the terminal.
			// The version says which tierlock holds the slot: during an upgrade a tier runs two.
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", tier, mx, hd, safetext.Text(h), safetext.Text(rec.Shown()),
				monitor.Age(tv.Ages[h]), code, rec.Attempts, safetext.Text(orDash(rec.InstanceID)),
				safetext.Text(orDash(strings.TrimPrefix(rec.Version, "tierlock "))))
		}
		if tv.Status != monitor.OK {
			notes = append(notes, safetext.Text(fmt.Sprintf("%s %s: %s", tv.Tier, tv.Status, strings.Join(tv.Problems, "; "))))
		}
		if r := monitor.Rollout(s, now); r != nil {
			notes = append(notes, safetext.Text(tv.Tier+" rollout: "+r.Line()))
		}
		for _, n := range noteLines(s, tv, now) {
			notes = append(notes, safetext.Text(tv.Tier+" "+n))
		}
		if len(s.Queue) > 0 {
			notes = append(notes, safetext.Text(waitingLine(tv.Tier, s.Queue, tv.Waits)))
		}
		if n := convergenceNote(tv, v.Th); n != "" {
			notes = append(notes, safetext.Text(n))
		}
	}
	tw.Flush()
	trimmed(w, buf.String())
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
	if hosts {
		writeHostsTable(w, snaps, v, now)
	}
}

// trimmed writes table without the blanks tabwriter leaves at the ends of lines.
func trimmed(w io.Writer, table string) {
	for _, line := range strings.SplitAfter(table, "\n") {
		fmt.Fprint(w, strings.TrimRight(line, " \n")+strings.Repeat("\n", strings.Count(line, "\n")))
	}
}

// convergenceNote sums up a tier's hosts: how many are known, the oldest convergence, and
// who is past the warning.
func convergenceNote(tv monitor.TierVerdict, th monitor.Thresholds) string {
	if tv.Hosts == 0 {
		return ""
	}
	n := fmt.Sprintf("%s: %d hosts known", tv.Tier, tv.Hosts)
	if tv.OldestConverged > 0 {
		n += ", oldest convergence " + monitor.Age(tv.OldestConverged) + " ago"
	}
	switch {
	case tv.Disabled:
		n += " (disabled: convergence not judged)"
	case len(tv.Unconverged) > 0:
		n += fmt.Sprintf("; past the warning (%s): %s", th.ConvergeWarn, strings.Join(tv.Unconverged, ", "))
	}
	return n
}

// writeHostsTable lists every known host of every tier: its last convergence, the age of it,
// and what it is doing now.
func writeHostsTable(w io.Writer, snaps []*lock.Snapshot, v monitor.Verdict, now time.Time) {
	bySnap := map[string]*lock.Snapshot{}
	for _, s := range snaps {
		bySnap[s.Tier] = s
	}
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nTIER\tHOST\tLAST CONVERGED\tAGE\tDOING")
	for _, tv := range v.Tiers {
		for _, h := range monitor.Hosts(bySnap[tv.Tier], now) {
			last, age := "never", "-"
			if h.ConvergedAt != nil {
				last, age = h.ConvergedAt.UTC().Format(time.RFC3339), monitor.Age(h.Age)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", tv.Tier, safetext.Text(h.Holder), last, age, h.Doing)
		}
	}
	tw.Flush()
	trimmed(w, buf.String())
}

func sortedHolders(s *lock.Snapshot) []string {
	hs := make([]string, 0, len(s.Holders))
	for h := range s.Holders {
		hs = append(hs, h)
	}
	// Failed and interrupted first, then the oldest.
	sort.Slice(hs, func(i, j int) bool {
		a, b := s.Holders[hs[i]], s.Holders[hs[j]]
		if (a.State == schema.StateRunning) != (b.State == schema.StateRunning) {
			return b.State == schema.StateRunning
		}
		if !a.StartedAt.Equal(b.StartedAt) {
			return a.StartedAt.Before(b.StartedAt)
		}
		return hs[i] < hs[j]
	})
	return hs
}

func max0(d time.Duration) time.Duration { return max(d, 0) }

// shownWaiters is how many waiters status names in its text; a tier of thousands waiting
// would otherwise print a line of hundreds of kilobytes. --format json lists them all.
const shownWaiters = 20

// waitingLine is status's line of the tier's waiters: the first shownWaiters in order, with
// how long each has waited (and its version), then how many more.
func waitingLine(tier string, queue []schema.Waiter, waits map[string]time.Duration) string {
	var names []string
	for _, q := range queue[:min(len(queue), shownWaiters)] {
		names = append(names, fmt.Sprintf("%s (%s%s)", q.Holder, monitor.Age(waits[q.Holder]), waiterVersion(q)))
	}
	more := ""
	if n := len(queue) - len(names); n > 0 {
		more = fmt.Sprintf(", and %d more (--format json lists them all)", n)
	}
	return fmt.Sprintf("%s: %d waiting, in order: %s%s", tier, len(queue), strings.Join(names, ", "), more)
}

// waiterVersion is ", VERSION" for a waiter whose entry says which tierlock it runs.
func waiterVersion(w schema.Waiter) string {
	if w.Version == "" {
		return ""
	}
	return ", " + strings.TrimPrefix(w.Version, "tierlock ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// noteLines says who last changed the tier by hand: for a disabled tier who pulled the brake
// (the check's words), then the last set-max, release and forget. Raw: sanitise to print.
func noteLines(s *lock.Snapshot, tv monitor.TierVerdict, now time.Time) []string {
	var lines []string
	if tv.Disabled {
		lines = append(lines, tv.Brake)
	} else if n, ok := s.Notes[schema.NoteMax]; ok {
		lines = append(lines, monitor.NoteText(n, now))
	} else if n, ok := s.Notes[schema.NoteHistory]; ok && n.Action == "enable" {
		lines = append(lines, monitor.NoteText(n, now)) // who released the brake
	}
	for _, kind := range []string{schema.NoteRelease, schema.NoteForget, schema.NoteRollout} {
		if n, ok := s.Notes[kind]; ok {
			lines = append(lines, monitor.NoteText(n, now))
		}
	}
	for _, p := range s.NoteProblems {
		lines = append(lines, "unreadable note: "+p.Error())
	}
	return lines
}

// statusJSON is the documented, stable JSON of `status --format json`.
type statusJSON struct {
	Prefix      string       `json:"prefix"`
	GeneratedAt time.Time    `json:"generated_at"`
	Status      string       `json:"status"`
	Tiers       []tierStatus `json:"tiers"`
}

type tierStatus struct {
	Tier          string         `json:"tier"`
	Status        string         `json:"status"`
	MaxConcurrent int            `json:"max_concurrent"`
	MaxSet        bool           `json:"max_set"`
	Disabled      bool           `json:"disabled"`
	Unlimited     bool           `json:"unlimited"`
	Current       int            `json:"current"`
	RunningKeys   int            `json:"running_keys"`
	Drift         bool           `json:"drift"`
	Problems      []string       `json:"problems"`
	Holders       []holderStatus `json:"holders"`
	Waiters       []waiterStatus `json:"waiters"`
	// Notes are the last operator changes by kind ("max", "release", "forget"), and
	// "history": the last lock.MaxHistory changes of any kind, newest first.
	Notes map[string]schema.Note `json:"notes,omitempty"`
	// HostsKnown counts the hosts with a converged/ record, a slot or a queue entry.
	HostsKnown int `json:"hosts_known"`
	// OldestConvergedSeconds is the age of the oldest converged/ record (0 when none).
	OldestConvergedSeconds int64 `json:"oldest_converged_age_seconds"`
	// Unconverged are the hosts past the convergence warning (none in a disabled tier).
	Unconverged []string     `json:"unconverged"`
	Hosts       []hostStatus `json:"hosts"`
	// Rollout is the tier's progressive rollout, null when none (docs/rollout.md).
	Rollout *monitor.RolloutView `json:"rollout"`
}

type hostStatus struct {
	monitor.Host
	// AgeSeconds is the age of the last convergence; null when the host never converged.
	AgeSeconds *int64 `json:"age_seconds"`
}

type waiterStatus struct {
	schema.Waiter
	AgeSeconds int64 `json:"age_seconds"`
}

type holderStatus struct {
	schema.Record
	AgeSeconds int64 `json:"age_seconds"`
}

func writeStatusJSON(w io.Writer, prefix string, snaps []*lock.Snapshot, v monitor.Verdict, now time.Time) error {
	out := statusJSON{Prefix: prefix, GeneratedAt: now.UTC(), Status: v.Status.String(), Tiers: []tierStatus{}}
	bySnap := map[string]*lock.Snapshot{}
	for _, s := range snaps {
		bySnap[s.Tier] = s
	}
	for _, tv := range v.Tiers {
		s := bySnap[tv.Tier]
		ts := tierStatus{Tier: s.Tier, Status: tv.Status.String(), MaxConcurrent: s.Max, MaxSet: s.MaxSet,
			Disabled: s.Disabled(), Unlimited: s.Max < 0, Current: s.Current, RunningKeys: s.RunningKeys,
			Drift: s.Drift(), Problems: append([]string{}, tv.Problems...), Holders: []holderStatus{}, Waiters: []waiterStatus{},
			HostsKnown: tv.Hosts, OldestConvergedSeconds: int64(tv.OldestConverged.Seconds()),
			Unconverged: append([]string{}, tv.Unconverged...), Hosts: []hostStatus{}, Notes: s.Notes,
			Rollout: monitor.Rollout(s, now)}
		for _, h := range monitor.Hosts(s, now) {
			hs := hostStatus{Host: h}
			if h.ConvergedAt != nil {
				secs := int64(h.Age.Seconds())
				hs.AgeSeconds = &secs
			}
			ts.Hosts = append(ts.Hosts, hs)
		}
		for _, q := range s.Queue {
			ts.Waiters = append(ts.Waiters, waiterStatus{Waiter: q, AgeSeconds: int64(tv.Waits[q.Holder].Seconds())})
		}
		for _, h := range sortedHolders(s) {
			ts.Holders = append(ts.Holders, holderStatus{Record: s.Holders[h], AgeSeconds: int64(tv.Ages[h].Seconds())})
		}
		out.Tiers = append(out.Tiers, ts)
	}
	doc, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	// Stored strings keep their value; the bytes that could act on a terminal are \u escapes.
	_, err = w.Write(append(safetext.JSON(doc), '\n'))
	return err
}

// writeStatusMetrics prints per-tier gauges in Prometheus' text exposition format.
func writeStatusMetrics(w io.Writer, snaps []*lock.Snapshot, v monitor.Verdict, now time.Time) error {
	verdicts := map[string]monitor.TierVerdict{}
	for _, tv := range v.Tiers {
		verdicts[tv.Tier] = tv
	}
	reg := prometheus.NewRegistry()
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
		reg.MustRegister(g)
		return g
	}
	maxG := gauge("tierlock_tier_max_concurrent", "max_concurrent of the tier: -1 unlimited, 0 disabled.", "tier")
	curG := gauge("tierlock_tier_current", "Slots held according to the tier's current key.", "tier")
	keysG := gauge("tierlock_tier_running_keys", "Number of running/ keys of the tier (equals current unless drifted).", "tier")
	holdG := gauge("tierlock_tier_holders", "Holders of the tier by state.", "tier", "state")
	ageG := gauge("tierlock_tier_oldest_holder_age_seconds", "Age of the oldest holder's attempt, 0 when none.", "tier")
	badG := gauge("tierlock_tier_invalid", "1 when a stored value of the tier is invalid.", "tier")
	waitG := gauge("tierlock_tier_waiters", "Hosts queued for a slot of the tier.", "tier")
	convG := gauge("tierlock_host_last_converged_timestamp_seconds", "Unix time of the host's last successful run under tierlock (its converged/ record).", "tier", "holder")
	convAgeG := gauge("tierlock_tier_oldest_convergence_age_seconds", "Age of the oldest converged/ record of the tier, 0 when none.", "tier")
	// Times, not ages, for the shipped alerting rules (packaging/prometheus): time() minus
	// them keeps growing in Prometheus, whenever this file was last written.
	startG := gauge("tierlock_holder_started_timestamp_seconds", "Unix time the holder's current attempt started (its slot's age as check judges it), by state.", "tier", "holder", "state")
	offG := gauge("tierlock_tier_disabled_timestamp_seconds", "For a disabled tier only: Unix time of the disable note; 0 when no note says when.", "tier")
	headG := gauge("tierlock_tier_queue_head_since_timestamp_seconds", "Unix time the first waiter of the tier joined the queue (0 when unreadable); absent without waiters.", "tier", "holder")
	suspectG := gauge("tierlock_tier_suspect_keys", "Stored keys of the tier that are ignored or doubtful but stop nothing (check warns).", "tier")
	rolloutG := gauge("tierlock_rollout_state", "1 for the state of the tier's rollout (canary, step, baking, full, complete, halted), by revision.", "tier", "revision", "state")
	rolloutStepG := gauge("tierlock_rollout_step", "The rollout's open step (0: the canary).", "tier", "revision")
	rolloutOKG := gauge("tierlock_rollout_successes", "Movers' successful runs of the revision rolling out.", "tier", "revision")
	rolloutFailG := gauge("tierlock_rollout_failures", "Movers' failed runs of the revision rolling out.", "tier", "revision")
	rolloutSinceG := gauge("tierlock_rollout_since_timestamp_seconds", "Unix time the revision's rollout started.", "tier", "revision")
	for _, s := range snaps {
		if r := monitor.Rollout(s, now); r != nil {
			rev := safetext.Text(r.Revision)
			for _, st := range []string{"canary", "step", "baking", "full", "complete", "halted"} {
				v := 0.0
				if st == r.State {
					v = 1
				}
				rolloutG.WithLabelValues(s.Tier, rev, st).Set(v)
			}
			rolloutStepG.WithLabelValues(s.Tier, rev).Set(float64(r.Step))
			rolloutOKG.WithLabelValues(s.Tier, rev).Set(float64(r.Successes))
			rolloutFailG.WithLabelValues(s.Tier, rev).Set(float64(r.Failures))
			rolloutSinceG.WithLabelValues(s.Tier, rev).Set(unixSeconds(r.Since))
		}
		maxG.WithLabelValues(s.Tier).Set(float64(s.Max))
		curG.WithLabelValues(s.Tier).Set(float64(s.Current))
		keysG.WithLabelValues(s.Tier).Set(float64(s.RunningKeys))
		counts := map[schema.State]int{schema.StateRunning: 0, schema.StateFailed: 0, schema.StateInterrupted: 0}
		for h, rec := range s.Holders {
			counts[rec.State]++
			startG.WithLabelValues(s.Tier, safetext.Text(h), string(rec.State)).Set(unixSeconds(rec.StartedAt))
		}
		if s.Disabled() {
			at := 0.0 // disabled by hand, or before tierlock kept notes: since when is unknown
			if n, ok := s.Notes[schema.NoteMax]; ok && (n.Action == "disable" || n.Action == "set-max" && n.Value == "0") {
				at = unixSeconds(n.At)
			}
			offG.WithLabelValues(s.Tier).Set(at)
		}
		if len(s.Queue) > 0 {
			headG.WithLabelValues(s.Tier, safetext.Text(s.Queue[0].Holder)).Set(unixSeconds(s.Queue[0].Since))
		}
		suspectG.WithLabelValues(s.Tier).Set(float64(len(s.Suspect)))
		for st, n := range counts {
			holdG.WithLabelValues(s.Tier, string(st)).Set(float64(n))
		}
		ageG.WithLabelValues(s.Tier).Set(verdicts[s.Tier].Oldest.Seconds())
		bad := 0.0
		if len(s.Problems) > 0 {
			bad = 1
		}
		badG.WithLabelValues(s.Tier).Set(bad)
		waitG.WithLabelValues(s.Tier).Set(float64(len(s.Queue)))
		for h, conv := range s.Converged {
			// A label value may be any UTF-8; the encoder escapes it.
			convG.WithLabelValues(s.Tier, safetext.Text(h)).Set(float64(conv.ConvergedAt.UnixMilli()) / 1000)
		}
		convAgeG.WithLabelValues(s.Tier).Set(verdicts[s.Tier].OldestConverged.Seconds())
	}
	return writeMetrics(w, reg)
}

// unixSeconds is t in Unix seconds, 0 for the zero time.
func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixMilli()) / 1000
}

// writeMetrics encodes what reg gathers in the text exposition format.
func writeMetrics(w io.Writer, reg *prometheus.Registry) error {
	families, err := reg.Gather()
	if err != nil {
		return err
	}
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			return err
		}
	}
	return nil
}
