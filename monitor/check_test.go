package monitor

import (
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

var now = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func holder(state schema.State, age time.Duration, code *int) schema.Record {
	return schema.Record{State: state, StartedAt: now.Add(-age), UpdatedAt: now.Add(-age), ExitCode: code}
}

func one() *int { i := 1; return &i }

// snapshot builds a tier as lock would read it.
func snapshot(name string, max, current int, holders map[string]schema.Record, problems ...error) *lock.Snapshot {
	return &lock.Snapshot{Tier: name, Max: max, MaxSet: true, Current: current, Holders: holders,
		RunningKeys: len(holders), Problems: problems}
}

// tier builds a consistent tier: current equals the number of holders.
func tier(name string, max int, holders map[string]schema.Record) *lock.Snapshot {
	return snapshot(name, max, len(holders), holders)
}

func withSuspect(s *lock.Snapshot, errs ...error) *lock.Snapshot {
	s.Suspect = append(s.Suspect, errs...)
	return s
}

func withQueue(s *lock.Snapshot, ws ...schema.Waiter) *lock.Snapshot {
	s.Queue = append(s.Queue, ws...)
	return s
}

func TestJudgeTier(t *testing.T) {
	tests := []struct {
		name    string
		snap    *lock.Snapshot
		want    Status
		problem string
	}{
		{"empty", tier("prod/web", 2, nil), OK, ""},
		{"running young", tier("prod/web", 2, map[string]schema.Record{"a": holder(schema.StateRunning, 10*time.Minute, nil)}), OK, ""},
		{"running at warn", tier("prod/web", 2, map[string]schema.Record{"a": holder(schema.StateRunning, time.Hour, nil)}), OK, ""},
		{"running past warn", tier("prod/web", 2, map[string]schema.Record{"a": holder(schema.StateRunning, 61*time.Minute, nil)}), Warning, "a running for 1h01m"},
		{"running past crit", tier("prod/web", 2, map[string]schema.Record{"a": holder(schema.StateRunning, 3*time.Hour, nil)}), Critical, "a running for 3h00m"},
		{"failed fresh", tier("prod/web", 2, map[string]schema.Record{"a": holder(schema.StateFailed, time.Minute, one())}), Warning, "a failed (exit 1), holding its slot for 1m"},
		{"failed past crit", tier("prod/web", 2, map[string]schema.Record{"a": holder(schema.StateFailed, 121*time.Minute, one())}), Critical, "a failed (exit 1)"},
		{"interrupted fresh", tier("prod/web", 2, map[string]schema.Record{"a": holder(schema.StateInterrupted, time.Second, nil)}), Warning, "a interrupted, holding"},
		{"interrupted past crit", tier("prod/web", 2, map[string]schema.Record{"a": holder(schema.StateInterrupted, 5*time.Hour, nil)}), Critical, "a interrupted"},
		{"clock skew", tier("prod/web", 2, map[string]schema.Record{"a": holder(schema.StateRunning, -30*time.Second, nil)}), OK, ""},
		{"started in the future", tier("prod/web", 2, map[string]schema.Record{"a": holder(schema.StateRunning, -time.Hour, nil)}), Critical,
			"running/a: started_at 2026-11-21T13:00:00Z (1h00m ahead) and updated_at 2026-11-21T13:00:00Z (1h00m ahead) lies in the future"},
		{"updated in the future", tier("prod/web", 2, map[string]schema.Record{"a": {State: schema.StateRunning, StartedAt: now.Add(-time.Minute), UpdatedAt: now.Add(48 * time.Hour)}}), Critical,
			"running/a: updated_at 2026-11-23T12:00:00Z (2d0h ahead) lies in the future"},
		// check keeps no memory: a time it cannot age is past the critical threshold at once,
		// or a slot held for ever would never page.
		{"failed in the future", tier("prod/web", 2, map[string]schema.Record{"a": holder(schema.StateFailed, -10*time.Minute, one())}), Critical,
			"taken as past the critical threshold"},
		{"suspect key", withSuspect(tier("prod/web", 2, nil), errors.New("chef/prod/web/queue/zz-ghost: queue entry without a session")), Warning,
			"chef/prod/web/queue/zz-ghost: queue entry without a session"},
		{"queue head waits too long", withQueue(tier("prod/web", 1, nil), schema.Waiter{Holder: "q1", Since: now.Add(-20 * time.Minute)}, schema.Waiter{Holder: "q2", Since: now.Add(-19 * time.Minute)}), Warning,
			"queue/q1: first in the queue, waiting for 20m (more than 15m)"},
		{"queue head waits", withQueue(tier("prod/web", 1, nil), schema.Waiter{Holder: "q1", Since: now.Add(-14 * time.Minute)}), OK, ""},
		{"queue head of a disabled tier", withQueue(tier("prod/web", 0, nil), schema.Waiter{Holder: "q1", Since: now.Add(-time.Hour)}), OK, ""},
		{"queue since in the future", withQueue(tier("prod/web", 1, nil), schema.Waiter{Holder: "q1", Since: now.Add(-time.Minute)}, schema.Waiter{Holder: "q2", Since: now.Add(time.Hour)}), Warning,
			"queue/q2: since 2026-11-21T13:00:00Z (1h00m ahead) lies in the future"},
		{"queue since missing", withQueue(tier("prod/web", 1, nil), schema.Waiter{Holder: "q1"}), Warning, "queue/q1: no readable since"},
		{"disabled", tier("prod/web", 0, nil), OK, ""},
		{"disabled with failure", tier("prod/web", 0, map[string]schema.Record{"a": holder(schema.StateFailed, time.Minute, one())}), Warning, "failed"},
		{"drift", snapshot("prod/web", 2, 3, map[string]schema.Record{"a": holder(schema.StateRunning, time.Minute, nil)}), Critical, "current is 3 but there are 1 running/ keys: run tierlock repair"},
		{"invalid max", snapshot("prod/web", 2, 0, nil, errors.New("chef/prod/web/max_concurrent: \"abc\" is not an integer")), Critical, "invalid stored value: chef/prod/web/max_concurrent"},
		{"worst wins", tier("prod/web", 3, map[string]schema.Record{
			"a": holder(schema.StateRunning, 90*time.Minute, nil),
			"b": holder(schema.StateRunning, 3*time.Hour, nil),
		}), Critical, "b running for 3h00m; a running for 1h30m"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Judge([]*lock.Snapshot{tt.snap}, now, DefaultThresholds())
			tv := v.Tiers[0]
			if tv.Status != tt.want || v.Status != tt.want {
				t.Errorf("status %v (overall %v), want %v; problems %q", tv.Status, v.Status, tt.want, tv.Problems)
			}
			if got := strings.Join(tv.Problems, "; "); !strings.Contains(got, tt.problem) || (tt.problem == "") != (got == "") {
				t.Errorf("problems %q, want %q", got, tt.problem)
			}
		})
	}
}

// status prints the verdict's ages: each holder's since its attempt started, each waiter's since
// it joined the queue, none below 0 (a fast clock), whatever the state.
func TestJudgeAges(t *testing.T) {
	tests := []struct {
		name   string
		snap   *lock.Snapshot
		ages   map[string]time.Duration
		waits  map[string]time.Duration
		oldest time.Duration
	}{
		{name: "empty", snap: tier("prod/web", 2, nil)},
		{name: "holders", snap: tier("prod/web", 3, map[string]schema.Record{
			"a": holder(schema.StateRunning, 10*time.Minute, nil),
			"b": holder(schema.StateFailed, 3*time.Hour, one()),
			"c": holder(schema.StateInterrupted, time.Second, nil),
		}), ages: map[string]time.Duration{"a": 10 * time.Minute, "b": 3 * time.Hour, "c": time.Second}, oldest: 3 * time.Hour},
		{name: "started in the future", snap: tier("prod/web", 2, map[string]schema.Record{
			"a": holder(schema.StateRunning, -30*time.Second, nil),
			"b": holder(schema.StateRunning, -time.Hour, nil),
		}), ages: map[string]time.Duration{"a": 0, "b": 0}},
		{name: "waiters", snap: withQueue(tier("prod/web", 1, map[string]schema.Record{"a": holder(schema.StateRunning, time.Minute, nil)}),
			schema.Waiter{Holder: "q1", Since: now.Add(-20 * time.Minute)}, schema.Waiter{Holder: "q2", Since: now.Add(time.Hour)}),
			ages: map[string]time.Duration{"a": time.Minute}, waits: map[string]time.Duration{"q1": 20 * time.Minute, "q2": 0}, oldest: time.Minute},
		{name: "waiter without since", snap: withQueue(tier("prod/web", 1, nil), schema.Waiter{Holder: "q1"}),
			waits: map[string]time.Duration{"q1": now.Sub(time.Time{})}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tv := Judge([]*lock.Snapshot{tt.snap}, now, DefaultThresholds()).Tiers[0]
			if !maps.Equal(tv.Ages, tt.ages) || !maps.Equal(tv.Waits, tt.waits) || tv.Oldest != tt.oldest {
				t.Errorf("ages %v, waits %v, oldest %v\nwant %v, %v, %v", tv.Ages, tv.Waits, tv.Oldest, tt.ages, tt.waits, tt.oldest)
			}
		})
	}
}

func TestJudgeWithRanges(t *testing.T) {
	warn, _ := ParseRange("@0:30") // warn while younger than 30s: an inverted threshold
	crit, _ := ParseRange("~:1h")  // page past an hour
	th := Thresholds{Warn: warn, Crit: crit}
	young := tier("a/b", 2, map[string]schema.Record{"h": holder(schema.StateRunning, 10*time.Second, nil)})
	mid := tier("a/c", 2, map[string]schema.Record{"h": holder(schema.StateRunning, 10*time.Minute, nil)})
	old := tier("a/d", 2, map[string]schema.Record{"h": holder(schema.StateRunning, 2*time.Hour, nil)})
	v := Judge([]*lock.Snapshot{young, mid, old}, now, th)
	got := map[string]Status{}
	for _, tv := range v.Tiers {
		got[tv.Tier] = tv.Status
	}
	if got["a/b"] != Warning || got["a/c"] != OK || got["a/d"] != Critical {
		t.Errorf("verdicts %v", got)
	}
}

func TestOutput(t *testing.T) {
	snaps := []*lock.Snapshot{
		tier("prod/web", 2, map[string]schema.Record{
			"web-3": holder(schema.StateFailed, 2*time.Hour+13*time.Minute, one()),
			"web-7": holder(schema.StateRunning, 4*time.Minute, nil),
		}),
		tier("prod/db", 0, nil),
		tier("stage/web", -1, nil),
	}
	v := Judge(snaps, now, DefaultThresholds())
	want := "TIERLOCK CRITICAL - 3 tiers, 2 slots held, 1 failed, oldest 2h13m; 1 with problems; disabled: prod/db (convergence not judged there)" +
		" | tiers=3 held=2 failed=1 oldest_age=7980s;3600;7200;0 oldest_converged_age=0s;14400;86400;0\n" +
		"prod/web CRITICAL: web-3 failed (exit 1), holding its slot for 2h13m\n" +
		"prod/db OK: disabled (no note: by whom and why unknown), 0 held\n"
	if got := v.Output(false); got != want {
		t.Errorf("output\n%s\nwant\n%s", got, want)
	}
	verbose := v.Output(true)
	if !strings.Contains(verbose, "prod/db OK: disabled (no note: by whom and why unknown), 0 held\n") || !strings.Contains(verbose, "stage/web OK: 0 held\n") {
		t.Errorf("verbose output lacks OK tiers:\n%s", verbose)
	}
	if empty := Judge(nil, now, DefaultThresholds()).Output(false); empty != "TIERLOCK OK - 0 tiers, 0 slots held, 0 failed | tiers=0 held=0 failed=0 oldest_age=0s;3600;7200;0 oldest_converged_age=0s;14400;86400;0\n" {
		t.Errorf("no tiers: %q", empty)
	}
}

func TestAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 59 * time.Second: "59s", 61 * time.Second: "1m", 2*time.Hour + 13*time.Minute: "2h13m",
		50 * time.Hour: "2d2h",
	} {
		if got := Age(d); got != want {
			t.Errorf("Age(%v) = %q, want %q", d, got, want)
		}
	}
}

// Who pulled the brake, and why, is in the check's output; --disabled-warning warns about a
// tier left disabled too long, and only then.
func TestJudgeBrake(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	note := schema.Note{Action: "disable", Value: "0", Reason: "incident 4711", By: "alice", Host: "bastion-1", At: now.Add(-2 * time.Hour)}
	for _, tc := range []struct {
		name     string
		max      int
		notes    map[string]schema.Note
		warnAt   time.Duration
		text     string
		status   Status
		problems string
	}{
		{name: "enabled tier", max: 3, notes: map[string]schema.Note{schema.NoteMax: {Action: "set-max", Value: "3", At: now}}},
		{name: "disabled with a note", max: 0, notes: map[string]schema.Note{schema.NoteMax: note},
			text: "disabled 2h00m ago by alice on bastion-1: incident 4711"},
		{name: "disabled longer than the warning", max: 0, notes: map[string]schema.Note{schema.NoteMax: note}, warnAt: time.Hour,
			text: "disabled 2h00m ago by alice on bastion-1: incident 4711", status: Warning,
			problems: "disabled 2h00m ago by alice on bastion-1: incident 4711 (longer than 1h00m)"},
		{name: "within the warning", max: 0, notes: map[string]schema.Note{schema.NoteMax: note}, warnAt: 3 * time.Hour,
			text: "disabled 2h00m ago by alice on bastion-1: incident 4711"},
		{name: "set-max 0 counts as disable", max: 0, notes: map[string]schema.Note{schema.NoteMax: {Action: "set-max", Value: "0", By: "bob", Host: "b2", At: now.Add(-time.Minute)}},
			text: "disabled 1m ago by bob on b2"},
		{name: "disabled by hand", max: 0, text: "disabled (no note: by whom and why unknown)"},
		{name: "disabled by hand, warning on", max: 0, warnAt: time.Hour, text: "disabled (no note: by whom and why unknown)", status: Warning,
			problems: "disabled (no note: by whom and why unknown); set one with tierlock disable --reason"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tier("prod/web", tc.max, nil)
			s.Notes = tc.notes
			th := DefaultThresholds()
			th.DisabledWarn = tc.warnAt
			tv := judgeTier(s, now, th)
			if tv.Brake != tc.text || tv.Status != tc.status || strings.Join(tv.Problems, "; ") != tc.problems {
				t.Errorf("got %q %s %q\nwant %q %s %q", tv.Brake, tv.Status, tv.Problems, tc.text, tc.status, tc.problems)
			}
		})
	}
}
