package monitor

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// Every host of a tier should converge regularly; these judge how long each has gone without.

// Doing is what a known host of a tier is doing now.
type Doing string

// What a host can be doing.
const (
	DoingRunning     Doing = "running"     // holds a slot, its command running
	DoingFailed      Doing = "failed"      // holds a slot after a failed run
	DoingInterrupted Doing = "interrupted" // holds a slot after a stopped run
	DoingUnhealthy   Doing = "unhealthy"   // holds a slot after a run whose health check failed
	DoingWaiting     Doing = "waiting"     // queued for a slot
	DoingNothing     Doing = "nothing"     // known from its convergence record alone
)

// Host is one known host of a tier: every holder with a converged/ record, a slot or a queue
// entry.
type Host struct {
	Holder string `json:"holder"`
	// ConvergedAt is the last successful run under tierlock; nil: never (as far as it knows).
	ConvergedAt *time.Time `json:"converged_at"`
	// Age is the time since ConvergedAt (0 when it never converged).
	Age   time.Duration `json:"-"`
	Doing Doing         `json:"doing"`
}

// Hosts lists every known host of s, sorted by holder.
func Hosts(s *lock.Snapshot, now time.Time) []Host {
	by := map[string]*Host{}
	get := func(h string) *Host {
		if by[h] == nil {
			by[h] = &Host{Holder: h, Doing: DoingNothing}
		}
		return by[h]
	}
	for h, c := range s.Converged {
		at := c.ConvergedAt
		host := get(h)
		host.ConvergedAt, host.Age = &at, max(now.Sub(at), 0)
	}
	for _, w := range s.Queue {
		get(w.Holder).Doing = DoingWaiting
	}
	for h, rec := range s.Holders {
		host := get(h)
		switch {
		case rec.Shown() == string(DoingUnhealthy):
			host.Doing = DoingUnhealthy
		case rec.State == schema.StateFailed:
			host.Doing = DoingFailed
		case rec.State == schema.StateInterrupted:
			host.Doing = DoingInterrupted
		default:
			host.Doing = DoingRunning
		}
	}
	for _, h := range s.Unreadable() {
		get(h).Doing = DoingRunning // an unreadable slot is held all the same
	}
	out := make([]Host, 0, len(by))
	for _, h := range by {
		out = append(out, *h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Holder < out[j].Holder })
	return out
}

// defaultConvergeThresholds: WARNING when a host last converged more than 4h ago (16 missed
// runs of the packaged 15-minute timer), CRITICAL past 24h.
func defaultConvergeThresholds() (warn, crit Range) {
	return Range{End: 4 * 3600}, Range{End: 24 * 3600}
}

// convergence is the judgement of a tier's hosts: how many are known, the oldest convergence,
// and the hosts past each threshold (with their age).
type convergence struct {
	hosts      int
	oldest     time.Duration
	warn, crit []string
}

// judgeConvergence judges the age of every recorded convergence of s. Hosts that never
// converged have no age to judge; a disabled tier is not judged at all (its hosts stop
// converging on purpose), though its hosts are still counted.
func judgeConvergence(s *lock.Snapshot, now time.Time, th Thresholds) convergence {
	var cv convergence
	hosts := Hosts(s, now)
	cv.hosts = len(hosts)
	for _, h := range hosts {
		if h.ConvergedAt == nil {
			continue
		}
		cv.oldest = max(cv.oldest, h.Age)
		if s.Disabled() {
			continue
		}
		msg := fmt.Sprintf("%s last converged %s ago", h.Holder, Age(h.Age))
		switch secs := h.Age.Seconds(); {
		case th.ConvergeCrit.Alert(secs):
			cv.crit = append(cv.crit, msg)
		case th.ConvergeWarn.Alert(secs):
			cv.warn = append(cv.warn, msg)
		}
	}
	return cv
}

// pastNames are the holders named in msgs ("<holder> last converged ...").
func pastNames(msgs []string) []string {
	out := make([]string, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, strings.SplitN(m, " ", 2)[0])
	}
	return out
}
