package monitor_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tierlock/tierlock/monitor"
)

func TestJudgeNodes(t *testing.T) {
	now := time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	cat := monitor.Catalog{Nodes: []string{"web-1", "web-2", "Web-3", "db-1", "db-2"}, Critical: []string{"web-2", "web-3", "db-2"}}
	tests := []struct {
		name      string
		held      []string
		cat       monitor.Catalog
		since     map[string]time.Time
		grace     time.Duration
		want      []string // node:dead:reason
		wantSince map[string]time.Time
	}{
		{
			name: "alive", held: []string{"web-1"}, cat: cat, grace: time.Hour,
			want: []string{"web-1:false:alive"}, wantSince: map[string]time.Time{},
		},
		{
			// A renamed agent's host, say: its record names the node it had. Not freed at once.
			name: "not in the catalog, first seen now", held: []string{"gone-1"}, cat: cat, grace: time.Hour,
			want:      []string{"gone-1:false:not in the catalog for 0s, within the grace of 1h0m0s"},
			wantSince: map[string]time.Time{"gone-1": now},
		},
		{
			name: "not in the catalog within the grace", held: []string{"gone-1"}, cat: cat, grace: time.Hour,
			since:     map[string]time.Time{"gone-1": ago(59 * time.Minute)},
			want:      []string{"gone-1:false:not in the catalog for 59m0s, within the grace of 1h0m0s"},
			wantSince: map[string]time.Time{"gone-1": ago(59 * time.Minute)},
		},
		{
			name: "not in the catalog for the grace", held: []string{"gone-1"}, cat: cat, grace: time.Hour,
			since:     map[string]time.Time{"gone-1": ago(time.Hour)},
			want:      []string{"gone-1:true:not in the catalog for 1h0m0s (grace 1h0m0s)"},
			wantSince: map[string]time.Time{"gone-1": ago(time.Hour)},
		},
		{
			name: "zero grace frees a node not in the catalog at first sight", held: []string{"gone-1"}, cat: cat,
			want:      []string{"gone-1:true:not in the catalog for 0s (grace 0s)"},
			wantSince: map[string]time.Time{"gone-1": now},
		},
		{
			// One memory for both: the grace runs from when it was first seen failing.
			name: "critical, then left: counts from the failure", held: []string{"gone-1"}, cat: cat, grace: time.Hour,
			since:     map[string]time.Time{"gone-1": ago(50 * time.Minute)},
			want:      []string{"gone-1:false:not in the catalog for 50m0s, within the grace of 1h0m0s"},
			wantSince: map[string]time.Time{"gone-1": ago(50 * time.Minute)},
		},
		{
			name: "back in the catalog: forgotten", held: []string{"web-1"}, cat: cat, grace: time.Hour,
			since:     map[string]time.Time{"web-1": ago(50 * time.Minute)},
			want:      []string{"web-1:false:alive"},
			wantSince: map[string]time.Time{},
		},
		{
			name: "critical, first seen now", held: []string{"web-2"}, cat: cat, grace: time.Hour,
			want:      []string{"web-2:false:serfHealth critical for 0s, within the grace of 1h0m0s"},
			wantSince: map[string]time.Time{"web-2": now},
		},
		{
			name: "critical within the grace", held: []string{"web-2"}, cat: cat, grace: time.Hour,
			since:     map[string]time.Time{"web-2": ago(59 * time.Minute)},
			want:      []string{"web-2:false:serfHealth critical for 59m0s, within the grace of 1h0m0s"},
			wantSince: map[string]time.Time{"web-2": ago(59 * time.Minute)},
		},
		{
			name: "critical for exactly the grace", held: []string{"web-2"}, cat: cat, grace: time.Hour,
			since:     map[string]time.Time{"web-2": ago(time.Hour)},
			want:      []string{"web-2:true:serfHealth critical for 1h0m0s (grace 1h0m0s)"},
			wantSince: map[string]time.Time{"web-2": ago(time.Hour)},
		},
		{
			name: "critical past the grace", held: []string{"web-2"}, cat: cat, grace: time.Hour,
			since:     map[string]time.Time{"web-2": ago(3 * time.Hour)},
			want:      []string{"web-2:true:serfHealth critical for 3h0m0s (grace 1h0m0s)"},
			wantSince: map[string]time.Time{"web-2": ago(3 * time.Hour)},
		},
		{
			name: "zero grace frees at first sight", held: []string{"web-2"}, cat: cat,
			want:      []string{"web-2:true:serfHealth critical for 0s (grace 0s)"},
			wantSince: map[string]time.Time{"web-2": now},
		},
		{
			name: "healthy again: forgotten, the grace starts over next time", held: []string{"web-1"}, cat: cat, grace: time.Hour,
			since:     map[string]time.Time{"web-1": ago(3 * time.Hour)},
			want:      []string{"web-1:false:alive"},
			wantSince: map[string]time.Time{},
		},
		{
			name: "a node no slot holds any more is forgotten", held: []string{"web-1"}, cat: cat, grace: time.Hour,
			since:     map[string]time.Time{"db-2": ago(time.Minute)},
			want:      []string{"web-1:false:alive"},
			wantSince: map[string]time.Time{},
		},
		{
			name: "another reaper's clock ahead: counts as now, kept", held: []string{"web-2"}, cat: cat, grace: time.Hour,
			since:     map[string]time.Time{"web-2": now.Add(time.Minute)},
			want:      []string{"web-2:false:serfHealth critical for 0s, within the grace of 1h0m0s"},
			wantSince: map[string]time.Time{"web-2": now.Add(time.Minute)},
		},
		{
			name: "names compared without case, each node judged once", held: []string{"WEB-3", "web-3", "", "web-1"}, cat: cat, grace: time.Hour,
			since:     map[string]time.Time{"Web-3": ago(2 * time.Hour)},
			want:      []string{"WEB-3:true:serfHealth critical for 2h0m0s (grace 1h0m0s)", "web-1:false:alive"},
			wantSince: map[string]time.Time{"web-3": ago(2 * time.Hour)},
		},
		{
			name: "a catalog filtered by ACL cannot say who left", held: []string{"gone-1", "web-2"}, grace: 0,
			cat: monitor.Catalog{Nodes: []string{"web-2"}, Critical: []string{"web-2"}, Filtered: true},
			want: []string{
				"gone-1:false:not in the catalog, which Consul filtered by ACL (the token lacks permission 'node:read'): cannot tell whether it left",
				"web-2:true:serfHealth critical for 0s (grace 0s)",
			},
			wantSince: map[string]time.Time{"web-2": now},
		},
		{
			name: "several at once", held: []string{"db-2", "gone-1", "db-1", "web-2"}, cat: cat, grace: 10 * time.Minute,
			since: map[string]time.Time{"db-2": ago(11 * time.Minute), "gone-1": ago(10 * time.Minute), "web-2": ago(time.Minute)},
			want: []string{
				"db-1:false:alive",
				"db-2:true:serfHealth critical for 11m0s (grace 10m0s)",
				"gone-1:true:not in the catalog for 10m0s (grace 10m0s)",
				"web-2:false:serfHealth critical for 1m0s, within the grace of 10m0s",
			},
			wantSince: map[string]time.Time{"db-2": ago(11 * time.Minute), "gone-1": ago(10 * time.Minute), "web-2": ago(time.Minute)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			verdicts, since := monitor.JudgeNodes(tt.held, tt.cat, tt.since, now, tt.grace)
			var got []string
			for _, v := range verdicts {
				got = append(got, fmt.Sprintf("%s:%v:%s", v.Node, v.Dead, v.Reason))
				if v.Hidden != strings.Contains(v.Reason, "filtered by ACL") {
					t.Errorf("%s: Hidden %v, reason %q", v.Node, v.Hidden, v.Reason)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("verdicts\n got %q\nwant %q", got, tt.want)
			}
			if !reflect.DeepEqual(since, tt.wantSince) {
				t.Errorf("since\n got %v\nwant %v", since, tt.wantSince)
			}
		})
	}
}
