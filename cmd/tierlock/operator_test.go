package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tierlock/tierlock/internal/testkit"
)

// failedSlot leaves web-3 holding a failed slot (exit 2) in the test's tier.
func failedSlot(t *testing.T) {
	t.Helper()
	wantCode(t, tl(t, "run", "--tier", tier, "--holder", "web-3", "--instance-id", "i-0abc123", "--", "sh", "-c", "exit 2"), 2)
}

func TestSetMaxDisableEnable(t *testing.T) {
	steps := []struct {
		args []string
		out  string
		max  string
	}{
		{[]string{"set-max", "--tier", tier, "3"}, "prod/web: max_concurrent 1 (default) -> 3\n", "3"},
		{[]string{"set-max", "--tier", tier, "3"}, "prod/web: max_concurrent is already 3; nothing changed\n", "3"},
		{[]string{"disable", "--tier", tier}, "prod/web: max_concurrent 3 -> 0 (disabled); 3 saved in max_saved for enable\n", "0"},
		{[]string{"disable", "--tier", tier}, "prod/web: already disabled; nothing changed\n", "0"},
		{[]string{"enable", "--tier", tier}, "prod/web: max_concurrent 0 (disabled) -> 3\n", "3"},
		{[]string{"enable", "--tier", tier}, "prod/web: max_concurrent is 3; nothing changed\n", "3"},
		{[]string{"set-max", "--tier", tier, "unlimited"}, "prod/web: max_concurrent 3 -> -1 (unlimited)\n", "-1"},
		{[]string{"set-max", "--tier", tier, "--", "2"}, "prod/web: max_concurrent -1 (unlimited) -> 2\n", "2"},
		{[]string{"set-max", "--tier", tier, "--", "-1"}, "prod/web: max_concurrent 2 -> -1 (unlimited)\n", "-1"},
		{[]string{"disable", "--tier", tier}, "prod/web: max_concurrent -1 (unlimited) -> 0 (disabled); -1 saved in max_saved for enable\n", "0"},
		{[]string{"enable", "--tier", tier, "4"}, "prod/web: max_concurrent 0 (disabled) -> 4\n", "4"},
	}
	for _, st := range steps {
		r := tl(t, st.args...)
		wantCode(t, r, 0)
		if r.stdout != st.out {
			t.Errorf("%v: %q, want %q", st.args, r.stdout, st.out)
		}
		if got := strings.TrimSpace(dumpKey(t, "max_concurrent")); got != st.max {
			t.Errorf("%v: max_concurrent %q, want %q", st.args, got, st.max)
		}
	}
	if d := dump(t); strings.Contains(d, "max_saved") {
		t.Errorf("enable left max_saved behind: %s", d)
	}
}

func TestSetMaxRefusals(t *testing.T) {
	put(t, "max_concurrent", "2")
	before := dump(t)
	for _, args := range [][]string{
		{"set-max", "--tier", tier, "--", "-3"},
		{"set-max", "--tier", tier, "x"},
		{"set-max", "--tier", tier, "1.5"},
		{"set-max", "--tier", tier},
		{"set-max", "--tier", tier, "1", "2"},
		{"set-max", "--tier", "prod", "1"},
		{"set-max", "1"},
		{"enable", "--tier", tier, "0"},
		{"enable", "--tier", tier, "--", "-2"},
		{"disable", "--tier", tier, "now"},
	} {
		r := tl(t, args...)
		if r.code != 78 || r.stderr == "" {
			t.Errorf("%v: exit %d, stderr %q; want 78 and an error", args, r.code, r.stderr)
		}
		bad := args[len(args)-1]
		if !strings.Contains(r.stderr, bad) && !strings.Contains(r.stderr, "--tier") && !strings.Contains(r.stderr, "exactly one") {
			t.Errorf("%v: error does not name %q: %s", args, bad, r.stderr)
		}
	}
	if after := dump(t); after != before {
		t.Errorf("refused commands wrote:\nbefore %s\nafter  %s", before, after)
	}
}

func TestRelease(t *testing.T) {
	failedSlot(t)
	r := tl(t, "release", "--tier", tier, "--holder", "web-3")
	wantCode(t, r, 0)
	if !strings.HasPrefix(r.stdout, "prod/web: released web-3 (failed, attempt 1, started ") || !strings.HasSuffix(r.stdout, "exit 2); current 1 -> 0\n") {
		t.Errorf("release output %q", r.stdout)
	}
	testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))
	// Idempotent: a second release changes nothing and is not an error.
	before := dump(t)
	r = tl(t, "release", "--tier", tier, "--holder", "web-3")
	wantCode(t, r, 0)
	if r.stdout != "prod/web: web-3 holds no slot; nothing changed\n" || dump(t) != before {
		t.Errorf("second release: %q", r.stdout)
	}
	// A tier that does not exist is refused.
	r = tl(t, "release", "--tier", "prod/nope", "--holder", "web-3")
	if r.code != 78 || !strings.Contains(r.stderr, "prod/nope does not exist") {
		t.Errorf("release in a missing tier: exit %d %q", r.code, r.stderr)
	}
	r = tl(t, "release", "--tier", tier, "--holder", "../x")
	if r.code != 78 || !strings.Contains(r.stderr, `"../x"`) {
		t.Errorf("bad holder: exit %d %q", r.code, r.stderr)
	}
}

func TestReleaseUnreadableSlot(t *testing.T) {
	put(t, "current", "1")
	put(t, "running/old-box", "garbage from older tooling")
	r := tl(t, "release", "--tier", tier, "--holder", "old-box")
	wantCode(t, r, 0)
	if !strings.Contains(r.stdout, "released old-box (an unreadable value); current 1 -> 0") {
		t.Errorf("release output %q", r.stdout)
	}
	testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))
}

func TestRepair(t *testing.T) {
	put(t, "current", "5")
	put(t, "running/web-1", "2026-11-21T09:15:02Z")
	r := tl(t, "repair", "--tier", tier)
	wantCode(t, r, 0)
	if r.stdout != "prod/web: current 5 -> 1 (1 running/ keys)\n" {
		t.Errorf("repair output %q", r.stdout)
	}
	testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))
	r = tl(t, "repair", "--tier", tier)
	wantCode(t, r, 0)
	if r.stdout != "prod/web: current 1 matches 1 running/ keys; nothing changed\n" {
		t.Errorf("second repair %q", r.stdout)
	}
}

func TestStatusFormats(t *testing.T) {
	failedSlot(t)
	put(t, "max_concurrent", "2")
	wantCode(t, tl(t, "disable", "--tier", "prod/db"), 0)
	r := tl(t, "status")
	wantCode(t, r, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "TIER") || !strings.HasPrefix(lines[1], "prod/web") ||
		!strings.Contains(lines[1], "web-3") || !strings.Contains(lines[1], "failed") || !strings.Contains(lines[1], "i-0abc123") ||
		!strings.HasPrefix(lines[2], "prod/db") || !strings.Contains(lines[2], "off") {
		t.Errorf("status table (problems first):\n%s", r.stdout)
	}
	for _, l := range lines {
		if len(l) > 80 {
			t.Errorf("line wider than 80 columns: %q", l)
		}
	}

	r = tl(t, "status", "--format", "json")
	wantCode(t, r, 0)
	var doc struct {
		Prefix string
		Status string
		Tiers  []struct {
			Tier, Status  string
			MaxConcurrent int `json:"max_concurrent"`
			Disabled      bool
			Current       int
			Holders       []struct {
				Holder, State string
				ExitCode      *int   `json:"exit_code"`
				AgeSeconds    int64  `json:"age_seconds"`
				InstanceID    string `json:"instance_id"`
			}
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("status json: %v\n%s", err, r.stdout)
	}
	if doc.Status != "WARNING" || len(doc.Tiers) != 2 || doc.Tiers[0].Tier != "prod/web" || doc.Tiers[0].Holders[0].Holder != "web-3" ||
		*doc.Tiers[0].Holders[0].ExitCode != 2 || doc.Tiers[0].Holders[0].InstanceID != "i-0abc123" || !doc.Tiers[1].Disabled {
		t.Errorf("status json: %+v", doc)
	}

	r = tl(t, "status", "--format", "prometheus")
	wantCode(t, r, 0)
	for _, want := range []string{
		`tierlock_tier_max_concurrent{tier="prod/web"} 2`,
		`tierlock_tier_max_concurrent{tier="prod/db"} 0`,
		`tierlock_tier_holders{state="failed",tier="prod/web"} 1`,
		`tierlock_tier_current{tier="prod/web"} 1`,
		"# TYPE tierlock_tier_oldest_holder_age_seconds gauge",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("prometheus output lacks %q:\n%s", want, r.stdout)
		}
	}
	if r := tl(t, "status", "--format", "yaml"); r.code != 78 || !strings.Contains(r.stderr, `"yaml"`) {
		t.Errorf("bad format: %d %q", r.code, r.stderr)
	}
}

func TestCheck(t *testing.T) {
	r := tl(t, "check")
	wantCode(t, r, 0)
	if !strings.HasPrefix(r.stdout, "TIERLOCK OK - 0 tiers") {
		t.Errorf("empty prefix: %q", r.stdout)
	}
	failedSlot(t)
	r = tl(t, "check")
	wantCode(t, r, 1)
	if !strings.HasPrefix(r.stdout, "TIERLOCK WARNING - 1 tiers, 1 slots held, 1 failed") ||
		!strings.Contains(r.stdout, "| tiers=1 held=1 failed=1 oldest_age=") ||
		!strings.Contains(r.stdout, "\nprod/web WARNING: web-3 failed (exit 2)") {
		t.Errorf("failed slot: %q", r.stdout)
	}
	// Past -c (0 seconds here): critical.
	r = tl(t, "check", "-c", "0")
	wantCode(t, r, 2)
	put(t, "current", "4")
	r = tl(t, "check", "--tier", tier)
	wantCode(t, r, 2)
	if !strings.Contains(r.stdout, "run tierlock repair") {
		t.Errorf("drift: %q", r.stdout)
	}
	for _, args := range [][]string{{"check", "-w", "abc"}, {"check", "-c", "20:10"}, {"check", "--bogus"}, {"check", "--tier", "prod/none"}} {
		r := tl(t, args...)
		if r.code != 3 || !strings.HasPrefix(r.stdout, "TIERLOCK UNKNOWN - ") {
			t.Errorf("%v: exit %d %q", args, r.code, r.stdout)
		}
	}
}

func TestCheckConsulUnreachable(t *testing.T) {
	r := run(t, cli(t, "127.0.0.1:1", "check", "-t", "1s"))
	if r.code != 3 || !strings.HasPrefix(r.stdout, "TIERLOCK UNKNOWN - ") {
		t.Errorf("exit %d %q", r.code, r.stdout)
	}
}

func TestRunMetricsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tierlock.prom")
	wantCode(t, tl(t, "run", "--tier", tier, "--holder", "web-1", "--metrics-file", path, "--", "sh", "-c", "exit 3"), 3)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`tierlock_run_last_exit_code{tier="prod/web"} 3`,
		`tierlock_run_last_result{result="failed",tier="prod/web"} 1`,
		`tierlock_run_last_result{result="success",tier="prod/web"} 0`,
		"tierlock_run_last_duration_seconds", "tierlock_run_last_wait_seconds", "tierlock_run_last_timestamp_seconds",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics file lacks %q:\n%s", want, b)
		}
	}
	put(t, "max_concurrent", "0")
	wantCode(t, tl(t, "run", "--tier", tier, "--holder", "web-2", "--metrics-file", path, "--", "true"), 75)
	b, _ = os.ReadFile(path)
	if !strings.Contains(string(b), `tierlock_run_last_result{result="skipped",tier="prod/web"} 1`) {
		t.Errorf("skipped run:\n%s", b)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("temporary files left beside the metrics file: %v", entries)
	}
}

// dumpKey returns one key of the test's tier.
func dumpKey(t *testing.T, key string) string {
	t.Helper()
	p, _, err := agents.Client(t).KV().Get(testkit.Prefix(t)+"/"+tier+"/"+key, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p == nil {
		return ""
	}
	return string(p.Value)
}

func TestStatusShowsWaiters(t *testing.T) {
	put(t, "max_concurrent", "1")
	put(t, "current", "1")
	put(t, "running/holder", "2026-11-21T09:15:02Z")
	cmd := cli(t, agentAddr(t), "run", "--tier", tier, "--holder", "w1", "--wait", "1m", "--", "true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	testkit.Eventually(t, "w1 to queue", func() bool { return dumpKey(t, "queue/w1") != "" })
	r := tl(t, "status")
	if !strings.Contains(r.stdout, "prod/web: 1 waiting, in order: w1 (") {
		t.Errorf("status without the waiter:\n%s", r.stdout)
	}
	r = tl(t, "status", "--format", "json")
	if !strings.Contains(r.stdout, `"waiters": [`) || !strings.Contains(r.stdout, `"holder": "w1"`) {
		t.Errorf("json without the waiter:\n%s", r.stdout)
	}
	r = tl(t, "status", "--format", "prometheus")
	if !strings.Contains(r.stdout, `tierlock_tier_waiters{tier="prod/web"} 1`) {
		t.Errorf("metrics without the waiter:\n%s", r.stdout)
	}
}
