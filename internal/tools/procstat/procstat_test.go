package procstat

import (
	"testing"
	"time"
)

func TestParseCPU(t *testing.T) {
	for _, tc := range []struct {
		name, stat string
		want       time.Duration
		bad        bool
	}{
		{name: "a name of parentheses", stat: "4242 (consul (dev)) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 130 0 0 20 0 12 0 100 0 0", want: 3800 * time.Millisecond},
		{name: "plain", stat: "42 (bench) S 1 42 42 0 -1 4194560 100 0 0 0 250 130 0 0 20 0 1 0", want: 3800 * time.Millisecond},
		{name: "name with blanks and parens", stat: "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0", want: 30 * time.Millisecond},
		{name: "no name", stat: "7 R 1 7", bad: true},
		{name: "too few fields", stat: "7 (x) R 1 7 7", bad: true},
		{name: "bad times", stat: "7 (x) R 1 7 7 0 -1 0 0 0 0 0 u s 0 0", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCPU(tc.stat)
			if tc.bad {
				if err == nil {
					t.Fatalf("ParseCPU(%q) = %v, want an error", tc.stat, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseCPU(%q) = %v, %v; want %v", tc.stat, got, err, tc.want)
			}
		})
	}
}
