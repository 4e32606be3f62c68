package monitor

import (
	"strings"
	"testing"
	"time"

	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// converged adds convergence records (holder -> age) to a tier.
func converged(s *lock.Snapshot, ages map[string]time.Duration) *lock.Snapshot {
	s.Converged = map[string]schema.Convergence{}
	for h, age := range ages {
		s.Converged[h] = schema.Convergence{Holder: h, ConvergedAt: now.Add(-age)}
	}
	return s
}

func TestJudgeConvergence(t *testing.T) {
	ranged := func(w, c string) Thresholds {
		th := DefaultThresholds()
		th.ConvergeWarn, _ = ParseRange(w)
		th.ConvergeCrit, _ = ParseRange(c)
		return th
	}
	tests := []struct {
		name        string
		snap        *lock.Snapshot
		th          Thresholds
		want        Status
		problem     string
		unconverged string
		oldest      time.Duration
		hosts       int
	}{
		{"all recent", converged(tier("prod/web", 2, nil), map[string]time.Duration{"a": time.Hour, "b": 15 * time.Minute}),
			DefaultThresholds(), OK, "", "", time.Hour, 2},
		{"at the warning", converged(tier("prod/web", 2, nil), map[string]time.Duration{"a": 4 * time.Hour}),
			DefaultThresholds(), OK, "", "", 4 * time.Hour, 1},
		{"past the warning", converged(tier("prod/web", 2, nil), map[string]time.Duration{"a": 5 * time.Hour, "b": time.Minute}),
			DefaultThresholds(), Warning, "a last converged 5h00m ago", "a", 5 * time.Hour, 2},
		{"past critical names every host", converged(tier("prod/web", 2, nil), map[string]time.Duration{"a": 25 * time.Hour, "b": 5 * time.Hour, "c": time.Minute}),
			DefaultThresholds(), Critical, "a last converged 25h00m ago; b last converged 5h00m ago", "a b", 25 * time.Hour, 3},
		{"disabled tier exempt", converged(tier("prod/web", 0, nil), map[string]time.Duration{"a": 50 * time.Hour}),
			DefaultThresholds(), OK, "", "", 50 * time.Hour, 1},
		{"never converged is not aged", tier("prod/web", 2, map[string]schema.Record{"new": holder(schema.StateRunning, time.Minute, nil)}),
			DefaultThresholds(), OK, "", "", 0, 1},
		{"ranges", converged(tier("prod/web", 2, nil), map[string]time.Duration{"a": 90 * time.Minute}),
			ranged("1h", "~:2h"), Warning, "a last converged 1h30m ago", "a", 90 * time.Minute, 1},
		{"ranges in seconds", converged(tier("prod/web", 2, nil), map[string]time.Duration{"a": 90 * time.Minute}),
			ranged("3600", "5000"), Critical, "a last converged 1h30m ago", "a", 90 * time.Minute, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Judge([]*lock.Snapshot{tt.snap}, now, tt.th)
			tv := v.Tiers[0]
			if tv.Status != tt.want {
				t.Errorf("status %v, want %v; problems %q", tv.Status, tt.want, tv.Problems)
			}
			if got := strings.Join(tv.Problems, "; "); got != tt.problem {
				t.Errorf("problems %q, want %q", got, tt.problem)
			}
			if got := strings.Join(tv.Unconverged, " "); got != tt.unconverged {
				t.Errorf("unconverged %q, want %q", got, tt.unconverged)
			}
			if tv.OldestConverged != tt.oldest || tv.Hosts != tt.hosts {
				t.Errorf("oldest %v hosts %d, want %v %d", tv.OldestConverged, tv.Hosts, tt.oldest, tt.hosts)
			}
			if tt.snap.Max == 0 && v.OldestConverged != 0 {
				t.Errorf("a disabled tier counts in the overall oldest convergence: %v", v.OldestConverged)
			}
		})
	}
}

func TestHosts(t *testing.T) {
	s := converged(tier("prod/web", 2, map[string]schema.Record{
		"run": holder(schema.StateRunning, time.Minute, nil),
		"bad": holder(schema.StateFailed, time.Minute, one()),
	}), map[string]time.Duration{"run": 2 * time.Hour, "idle": 30 * time.Minute, "wait": time.Hour})
	s.Queue = []schema.Waiter{{Holder: "wait"}, {Holder: "newbie"}}
	var got []string
	for _, h := range Hosts(s, now) {
		conv := "never"
		if h.ConvergedAt != nil {
			conv = Age(h.Age)
		}
		got = append(got, h.Holder+":"+string(h.Doing)+":"+conv)
	}
	want := "bad:failed:never idle:nothing:30m newbie:waiting:never run:running:2h00m wait:waiting:1h00m"
	if strings.Join(got, " ") != want {
		t.Errorf("hosts %v, want %s", got, want)
	}
}
