package monitor

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// DefaultRolloutWarn is how long a canary may go without a success before check warns.
const DefaultRolloutWarn = 2 * time.Hour

// RollbackWindow is how long check reports a mover that went back to an older revision.
const RollbackWindow = 24 * time.Hour

// RolloutView is a tier's rollout as operators read it.
type RolloutView struct {
	Revision string `json:"revision"`
	// State is canary, step, baking, full, complete or halted.
	State     string   `json:"state"`
	Step      int      `json:"step"`
	StepSize  int      `json:"step_size"` // -1: no limit but max_concurrent
	Admitted  int      `json:"admitted"`
	Succeeded int      `json:"succeeded"`
	Running   int      `json:"running"` // movers of the step still running
	Successes int      `json:"successes"`
	Failures  int      `json:"failures"`
	Failed    []string `json:"failed_hosts,omitempty"`
	// OnIt counts the hosts whose last convergence was on Revision, of Hosts the tier knows
	// (convergence records, slots, queue entries): how far it got, as a whole read shows.
	OnIt  int `json:"hosts_on_it"`
	Hosts int `json:"hosts_known"`
	// BakeUntil is when the next step may open, while the step bakes.
	BakeUntil *time.Time `json:"bake_until,omitempty"`
	Since     time.Time  `json:"since"`
	Schedule  string     `json:"schedule"`
	After     string     `json:"after,omitempty"`
}

// Rollout is the view of s's rollout, nil when the tier has none.
func Rollout(s *lock.Snapshot, now time.Time) *RolloutView {
	r := s.Rollout
	if r.Revision == "" {
		return nil
	}
	v := &RolloutView{Revision: r.Revision, Step: r.Step, Admitted: r.Admitted, Succeeded: r.Succeeded,
		Successes: r.Successes, Failures: r.Failures, Since: r.Since, Schedule: schema.FormatSchedule(s.Policy.Schedule),
		After: s.Policy.After, StepSize: s.Policy.Size(r.Step)}
	for name, h := range s.Holders {
		if h.Revision == r.Revision && h.Batch != nil && *h.Batch == r.Step && h.State == schema.StateRunning {
			v.Running++
		}
		if h.Revision == r.Revision && h.State == schema.StateFailed {
			v.Failed = append(v.Failed, name)
		}
	}
	for _, f := range r.Failed {
		if !slices.Contains(v.Failed, f.Holder) {
			v.Failed = append(v.Failed, f.Holder)
		}
	}
	sort.Strings(v.Failed)
	for _, c := range s.Converged {
		if c.Revision == r.Revision {
			v.OnIt++
		}
	}
	v.Hosts = len(Hosts(s, now))
	switch {
	case r.Halted():
		v.State = "halted"
	case s.Complete(r.Revision):
		v.State = "complete"
	case r.Full || v.StepSize < 0:
		v.State = "full"
	default:
		v.State = "step"
		if r.Step == 0 {
			v.State = "canary"
		}
		if r.LastSuccess != nil && v.Running == 0 && r.Succeeded >= v.StepSize {
			if until := r.LastSuccess.Add(s.Policy.Bake); now.Before(until) {
				v.State, v.BakeUntil = "baking", &until
			}
		}
	}
	return v
}

// Line is the rollout in one line: "revision abc123 step 2 (4 hosts): 3 admitted, 1 running,
// 2 succeeded; 7 successes, 0 failures".
func (v *RolloutView) Line() string {
	if v == nil {
		return "no rollout"
	}
	size := "max"
	if v.StepSize >= 0 {
		size = fmt.Sprint(v.StepSize)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "revision %s %s", v.Revision, v.State)
	switch v.State {
	case "canary", "step", "baking":
		fmt.Fprintf(&b, " (step %d of %s, size %s): %d admitted, %d running, %d succeeded", v.Step, v.Schedule, size, v.Admitted, v.Running, v.Succeeded)
	}
	if v.BakeUntil != nil {
		fmt.Fprintf(&b, ", baking until %s", v.BakeUntil.UTC().Format(time.RFC3339))
	}
	if v.Hosts > 0 {
		fmt.Fprintf(&b, "; %d of %d hosts on it", v.OnIt, v.Hosts)
	}
	fmt.Fprintf(&b, "; %d successes, %d failures", v.Successes, v.Failures)
	if len(v.Failed) > 0 {
		fmt.Fprintf(&b, "; failed: %s", strings.Join(v.Failed, ", "))
	}
	return b.String()
}

// judgeRollout is check's view of the rollout: CRITICAL on a halted revision, naming it and
// its failed hosts; WARNING on a canary without a success for longer than warnAfter.
func judgeRollout(s *lock.Snapshot, now time.Time, warnAfter time.Duration) (crit, warn []string) {
	v := Rollout(s, now)
	if v == nil {
		return nil, nil
	}
	if warnAfter <= 0 {
		warnAfter = DefaultRolloutWarn
	}
	// A mover that asked for a superseded revision restarted its rollout: fine once, as a
	// rollback; a host that keeps doing it has a stale checkout, and each time it restarts the
	// rollout of one revision or the other.
	var back []string
	for _, b := range s.Rollout.Rollbacks {
		if now.Sub(b.At) < RollbackWindow {
			back = append(back, fmt.Sprintf("%s asked for %s after %s (%s ago)", b.Holder, b.To, b.From, Age(now.Sub(b.At))))
		}
	}
	if len(back) > 0 {
		warn = append(warn, "rollout went back to an older revision: "+strings.Join(back, ", ")+
			"; a rollback, or a host whose checkout is stale (it restarts the rollout each time)")
	}
	switch {
	case v.State == "halted":
		why := "halted"
		if len(s.Rollout.Failed) > 0 {
			f := s.Rollout.Failed[len(s.Rollout.Failed)-1]
			why = fmt.Sprintf("halted after %d failure(s), last %s%s", v.Failures, f.Holder, failureText(f))
		}
		hosts := "none held"
		if len(v.Failed) > 0 {
			hosts = strings.Join(v.Failed, ", ")
		}
		crit = append(crit, fmt.Sprintf("rollout of %s %s; failed hosts: %s (fix, then `tierlock rollout resume`, or roll out a new revision)", v.Revision, why, hosts))
	case v.State == "canary" && v.Succeeded == 0 && now.Sub(v.Since) > warnAfter:
		warn = append(warn, fmt.Sprintf("rollout of %s: canary without a success for %s", v.Revision, Age(now.Sub(v.Since))))
	}
	return crit, warn
}

func failureText(f schema.Failure) string {
	switch {
	case f.Unhealthy:
		return " (unhealthy)"
	case f.ExitCode != nil:
		return fmt.Sprintf(" (exit %d)", *f.ExitCode)
	}
	return ""
}
