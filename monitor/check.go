package monitor

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tierlock/tierlock/internal/safetext"
	"github.com/tierlock/tierlock/lock"
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
}

// DefaultThresholds: a held slot warns past 1h and is critical past 2h; a host that last
// converged more than 4h ago warns, more than 24h ago is critical.
func DefaultThresholds() Thresholds {
	cw, cc := defaultConvergeThresholds()
	return Thresholds{Warn: Range{End: 3600}, Crit: Range{End: 7200}, ConvergeWarn: cw, ConvergeCrit: cc}
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
	tv := TierVerdict{Tier: s.Tier, Held: s.Held(), Disabled: s.MaxSet && s.Max == 0}
	var crit, warn []string
	for _, p := range s.Problems {
		crit = append(crit, "invalid stored value: "+p.Error())
	}
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
		age := max(now.Sub(rec.StartedAt), 0)
		tv.Oldest = max(tv.Oldest, age)
		secs := age.Seconds()
		switch rec.State {
		case lock.StateRunning:
			msg := fmt.Sprintf("%s running for %s", h, Age(age))
			switch {
			case th.Crit.Alert(secs):
				crit = append(crit, msg)
			case th.Warn.Alert(secs):
				warn = append(warn, msg)
			}
		default:
			tv.Failed++
			msg := fmt.Sprintf("%s %s%s, holding its slot for %s", h, rec.State, exitText(rec), Age(age))
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

func exitText(rec lock.Record) string {
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
