package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tierlock/tierlock/lock/schema"
)

// status names the first 20 waiters of a tier in order and counts the rest: a tier of 10,000
// waiting hosts is one short line, not hundreds of kilobytes.
func TestWaitingLine(t *testing.T) {
	queue := func(n int) []schema.Waiter {
		var q []schema.Waiter
		for i := range n {
			q = append(q, schema.Waiter{Holder: fmt.Sprintf("web-%05d", i), Version: "tierlock 0.1.0"})
		}
		return q
	}
	waits := map[string]time.Duration{"web-00000": 45 * time.Second}
	if got, want := waitingLine("prod/web", queue(2), waits), "prod/web: 2 waiting, in order: web-00000 (45s, 0.1.0), web-00001 (0s, 0.1.0)"; got != want {
		t.Errorf("2 waiting:\n got %q\nwant %q", got, want)
	}
	got := waitingLine("prod/web", queue(10000), waits)
	if !strings.HasPrefix(got, "prod/web: 10000 waiting, in order: web-00000 (45s, 0.1.0), web-00001") ||
		!strings.HasSuffix(got, "web-00019 (0s, 0.1.0), and 9980 more (--format json lists them all)") || len(got) > 1000 {
		t.Errorf("10,000 waiting: %d bytes: %.300q", len(got), got)
	}
	if got := waitingLine("prod/web", queue(20), waits); strings.Contains(got, "more") || !strings.Contains(got, "web-00019") {
		t.Errorf("20 waiting: %q, want all of them named", got)
	}
}
