package main

import (
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	t0 := time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	for _, tc := range []struct {
		name string
		succ map[int][]time.Time
		n    int
		want stats
	}{
		{"nobody ran", nil, 2, stats{min: 0, max: 0, never: 2, worstGap: 10}},
		{"even", map[int][]time.Time{0: {at(2), at(4), at(6), at(8)}, 1: {at(1), at(3), at(5), at(7), at(9)}}, 2,
			stats{min: 4, max: 5, total: 9, worstGap: 2}},
		{"one starved", map[int][]time.Time{0: {at(5), at(1)}}, 2, stats{min: 0, max: 2, never: 1, total: 2, worstGap: 10}},
		{"gap to the end counts", map[int][]time.Time{0: {at(1)}}, 1, stats{min: 1, max: 1, total: 1, worstGap: 9}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := summarize(tc.succ, tc.n, t0, at(10), time.Second); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
