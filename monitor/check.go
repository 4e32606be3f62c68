package monitor

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tierlock/tierlock/internal/safetext"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// Status is a Nagios plugin state; its value is the plugin's exit code.
type Status int

// The plugin states, in order of severity except Unknown.
const (
	OK Status = iota
	Warning
	Critical
	Unknown
)

func (s Status) String() string {
	return [...]string{"OK", "WARNING", "CRITICAL", "UNKNOWN"}[s]
}

// worse orders states for the overall verdict: Critical > Warning > Unknown > OK.
func worse(a, b Status) Status {
	rank := map[Status]int{OK: 0, Unknown: 1, Warning: 2, Critical: 3}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// Thresholds are the ages (in seconds) at which a held slot, and a host's last convergence,
// warn and page.
type Thresholds struct {
	Warn, Crit Range
	// ConvergeWarn and ConvergeCrit judge the age of each host's converged/ record. Zero
	// ranges alert on any age above 0: DefaultThresholds has the defaults.
	ConvergeWarn, ConvergeCrit Range
	// DisabledWarn warns about a tier disabled for longer than this; 0 never.
	DisabledWarn time.Duration
	// Queue is how long the head of a queue may wait before it warns. Zero: DefaultQueueWarn.
	Queue time.Duration
	// Rollout is how long a canary may go without a success before it warns. Zero:
	// DefaultRolloutWarn.
	Rollout time.Duration
}

// DefaultQueueWarn is how long the head of a queue may wait: run's --wait default (10m), after
// which a waiter gives up and leaves, plus a margin. A head waiting longer waits with a longer
// --wait, or is no waiter at all (a foreign session that holds its entry): either way, nobody
// behind it moves, which is worth a look.
const DefaultQueueWarn = 15 * time.Minute

// ClockSkew is how far in the future a stored time may lie before it is a problem: hosts'
// clocks differ a little, and a run that just started on a fast clock is no problem.
const ClockSkew = time.Minute

// DefaultThresholds: a held slot warns past 1h and is critical past 2h; a host that last
// converged more than 4h ago warns, more than 24h ago is critical; a queue head waiting past
// 15m warns.
func DefaultThresholds() Thresholds {
	cw, cc := defaultConvergeThresholds()
	return Thresholds{Warn: Range{End: 3600}, Crit: Range{End: 7200}, ConvergeWarn: cw, ConvergeCrit: cc, Queue: DefaultQueueWarn}
}

// TierVerdict is the judgement of one tier.
type TierVerdict struct {
	Tier     string
	Status   Status
	Problems []string // why Status is not OK, most severe first
	Disabled bool
	Brake    string        // for a disabled tier: who disabled it, when and why (raw: sanitise)
	Held     int           // slots held (the larger of current and the running/ keys)
	Failed   int           // holders in state failed or interrupted
	Oldest   time.Duration // age of the oldest holder's attempt
	// Ages are the ages of the holders' attempts, by holder: the time since started_at, 0
	// for one in the future. Oldest is the largest.
	Ages map[string]time.Duration
	// Waits are how long the queue entries have waited, by holder: the time since their
	// since, 0 for one in the future (a missing since is the zero time, long ago).
	Waits map[string]time.Duration
	// Hosts is the number of known hosts (converged/ records, slots, queue entries).
	Hosts int
	// OldestConverged is the age of the oldest convergence record (0 when there is none).
	OldestConverged time.Duration
	// Unconverged are the hosts whose last convergence is past the warning (or critical)
	// threshold, sorted; none in a disabled tier, which is exempt.
	Unconverged []string
}

// Verdict is the judgement of every tier checked.
type Verdict struct {
	Status Status
	Tiers  []TierVerdict // problem tiers first, then by name
	Held   int
	Failed int
	Oldest time.Duration
	// OldestConverged is the oldest convergence age of the tiers judged (disabled ones left out).
	OldestConverged time.Duration
	Th              Thresholds
}

// Judge judges snaps at now. A holder's age is the time since its attempt started.
func Judge(snaps []*lock.Snapshot, now time.Time, th Thresholds) Verdict {
	v := Verdict{Th: th}
	for _, s := range snaps {
		tv := judgeTier(s, now, th)
		v.Status = worse(v.Status, tv.Status)
		v.Held += tv.Held
		v.Failed += tv.Failed
		v.Oldest = max(v.Oldest, tv.Oldest)
		if !tv.Disabled {
			v.OldestConverged = max(v.OldestConverged, tv.OldestConverged)
		}
		v.Tiers = append(v.Tiers, tv)
	}
	sort.SliceStable(v.Tiers, func(i, j int) bool {
		a, b := v.Tiers[i], v.Tiers[j]
		if a.Status != b.Status {
			return worse(a.Status, b.Status) == a.Status
		}
		return a.Tier < b.Tier
	})
	return v
}

func judgeTier(s *lock.Snapshot, now time.Time, th Thresholds) TierVerdict {
	tv := TierVerdict{Tier: s.Tier, Held: s.Held(), Disabled: s.Disabled(),
		Ages: make(map[string]time.Duration, len(s.Holders)), Waits: make(map[string]time.Duration, len(s.Queue))}
	for _, w := range s.Queue {
		tv.Waits[w.Holder] = max(now.Sub(w.Since), 0)
	}
	var crit, warn []string
	for _, p := range s.Problems {
		crit = append(crit, "invalid stored value: "+p.Error())
	}
	for _, p := range s.Suspect {
		warn = append(warn, p.Error())
	}
	warn = append(warn, judgeQueue(s, now, th)...)
	rc, rw := judgeRollout(s, now, th.Rollout)
	crit, warn = append(crit, rc...), append(warn, rw...)
	if s.Drift() {
		crit = append(crit, fmt.Sprintf("current is %d but there are %d running/ keys: run tierlock repair",
			s.Current, s.RunningKeys))
	}
	holders := make([]string, 0, len(s.Holders))
	for h := range s.Holders {
		holders = append(holders, h)
	}
	sort.Strings(holders)
	for _, h := range holders {
		rec := s.Holders[h]
		// A time in the future cannot be aged, and check keeps no memory of when it first saw
		// one: aged 0, the slot would stay at WARNING for ever, held without a page. So a
		// record whose time cannot be believed is CRITICAL at once, which is within the
		// critical threshold whatever its true age. Within ClockSkew it is a fast clock, aged 0.
		if future := futureTimes(rec, now); len(future) > 0 {
			crit = append(crit, fmt.Sprintf("%s%s: %s lies in the future: a clock is wrong or the record is not tierlock's; the slot's age cannot be judged, so it is taken as past the critical threshold (release it if its host is not running)",
				"running/", h, strings.Join(future, " and ")))
		}
		age := max(now.Sub(rec.StartedAt), 0)
		tv.Ages[h] = age
		tv.Oldest = max(tv.Oldest, age)
		secs := age.Seconds()
		switch rec.State {
		case schema.StateRunning:
			msg := fmt.Sprintf("%s running for %s", h, Age(age))
			switch {
			case th.Crit.Alert(secs):
				crit = append(crit, msg)
			case th.Warn.Alert(secs):
				warn = append(warn, msg)
			}
		default:
			tv.Failed++
			msg := fmt.Sprintf("%s %s%s, holding its slot for %s", h, rec.Shown(), exitText(rec), Age(age))
			if th.Crit.Alert(secs) {
				crit = append(crit, msg)
			} else {
				warn = append(warn, msg)
			}
		}
	}
	cv := judgeConvergence(s, now, th)
	tv.Hosts, tv.OldestConverged = cv.hosts, cv.oldest
	crit, warn = append(crit, cv.crit...), append(warn, cv.warn...)
	tv.Unconverged = append(pastNames(cv.crit), pastNames(cv.warn)...)
	sort.Strings(tv.Unconverged)
	var brakeWarn string
	if tv.Brake, brakeWarn = judgeBrake(s, now, th); brakeWarn != "" {
		warn = append(warn, brakeWarn)
	}
	switch {
	case len(crit) > 0:
		tv.Status = Critical
	case len(warn) > 0:
		tv.Status = Warning
	}
	tv.Problems = append(crit, warn...)
	return tv
}

// futureTimes names the times of rec that lie further than ClockSkew after now.
func futureTimes(rec schema.Record, now time.Time) []string {
	var out []string
	for _, t := range []struct {
		name string
		at   time.Time
	}{{"started_at", rec.StartedAt}, {"updated_at", rec.UpdatedAt}} {
		if d := t.at.Sub(now); d > ClockSkew {
			out = append(out, fmt.Sprintf("%s %s (%s ahead)", t.name, t.at.UTC().Format(time.RFC3339), Age(d)))
		}
	}
	return out
}

// judgeQueue reports the waiters whose since lies in the future or is missing, and a head of
// the queue that has waited longer than th.Queue while the tier is enabled.
func judgeQueue(s *lock.Snapshot, now time.Time, th Thresholds) []string {
	limit := th.Queue
	if limit <= 0 {
		limit = DefaultQueueWarn
	}
	var out []string
	for i, w := range s.Queue {
		key := "queue/" + w.Holder
		switch d := now.Sub(w.Since); {
		case w.Since.IsZero():
			out = append(out, fmt.Sprintf("%s: no readable since (not written by tierlock?); it waits in the queue", key))
		case -d > ClockSkew:
			out = append(out, fmt.Sprintf("%s: since %s (%s ahead) lies in the future: a clock is wrong or the entry is not tierlock's", key, w.Since.UTC().Format(time.RFC3339), Age(-d)))
		case i == 0 && d > limit && !s.Disabled():
			out = append(out, fmt.Sprintf("%s: first in the queue, waiting for %s (more than %s): nobody behind it moves; is a slot stuck, or is the entry not a waiter?", key, Age(d), Age(limit)))
		}
	}
	return out
}

func exitText(rec schema.Record) string {
	if rec.ExitCode == nil {
		return ""
	}
	return fmt.Sprintf(" (exit %d)", *rec.ExitCode)
}

// Age prints a duration the way an operator reads it: 45s, 13m, 2h13m, 3d4h.
func Age(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// Output is the plugin's output: one line "TIERLOCK <STATE> - <summary> | <perfdata>", then a
// line per problem tier (per tier when verbose).
func (v Verdict) Output(verbose bool) string {
	var b strings.Builder
	var disabled []string
	problems := 0
	for _, t := range v.Tiers {
		if t.Disabled {
			disabled = append(disabled, t.Tier)
		}
		if t.Status != OK {
			problems++
		}
	}
	fmt.Fprintf(&b, "TIERLOCK %s - %d tiers, %d slots held, %d failed", v.Status, len(v.Tiers), v.Held, v.Failed)
	if v.Held > 0 {
		fmt.Fprintf(&b, ", oldest %s", Age(v.Oldest))
	}
	if problems > 0 {
		fmt.Fprintf(&b, "; %d with problems", problems)
	}
	if len(disabled) > 0 {
		fmt.Fprintf(&b, "; disabled: %s", safetext.Plugin(strings.Join(disabled, ", ")))
	}
	if len(disabled) > 0 {
		b.WriteString(" (convergence not judged there)")
	}
	fmt.Fprintf(&b, " | tiers=%d held=%d failed=%d oldest_age=%ds;%s;%s;0 oldest_converged_age=%ds;%s;%s;0\n",
		len(v.Tiers), v.Held, v.Failed, int64(v.Oldest.Seconds()), v.Th.Warn, v.Th.Crit,
		int64(v.OldestConverged.Seconds()), v.Th.ConvergeWarn, v.Th.ConvergeCrit)
	for _, t := range v.Tiers {
		switch {
		case t.Status != OK:
			// Problems quote stored keys and values: through the sanitiser, so that none can
			// add a line or perfdata (a '|') to the plugin's output.
			fmt.Fprintf(&b, "%s\n", safetext.Plugin(fmt.Sprintf("%s %s: %s", t.Tier, t.Status, strings.Join(t.Problems, "; "))))
		case t.Disabled:
			// A disabled tier is worth a line even when all is well: who pulled the brake and why.
			fmt.Fprintf(&b, "%s\n", safetext.Plugin(fmt.Sprintf("%s OK: %s, %d held", t.Tier, t.Brake, t.Held)))
		case verbose:
			fmt.Fprintf(&b, "%s OK: %d held\n", safetext.Plugin(t.Tier), t.Held)
		}
	}
	return b.String()
}
