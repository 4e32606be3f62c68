package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tierlock/tierlock/internal/testkit"
)

// TestRunRollout drives a revision through the CLI as hosts run it: the revision from a
// command, the canary, the step after it, a health check that fails and halts the revision
// (exit 75 for the movers after it, naming the host), the operator's resume, and `rollout
// status`, `status --format json` and `check` showing each.
func TestRunRollout(t *testing.T) {
	put(t, "max_concurrent", "5")
	dir := t.TempDir()
	revFile := filepath.Join(dir, "rev")
	if err := os.WriteFile(revFile, []byte("  b0b0b0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	runAs := func(holder string, extra ...string) result {
		args := append([]string{"run", "--tier", tier, "--holder", holder, "--wait", "0s", "--revision-command", "cat " + revFile}, extra...)
		return tl(t, append(args, "--", "true")...)
	}
	r := runAs("web-1")
	wantCode(t, r, 0)
	if !strings.Contains(r.stderr, "as a mover to b0b0b0 (rollout step 0)") {
		t.Errorf("the canary's log does not say so: %s", r.stderr)
	}
	rec := convergedRevision(t, "web-1")
	if rec != "b0b0b0" {
		t.Errorf("converged/web-1 revision %q, want b0b0b0 (the command's output, trimmed)", rec)
	}
	// Step 1 admits two; web-2 fails its health check: b0b0b0 halts.
	wantCode(t, runAs("web-2", "--health-command", "false", "--health-timeout", "300ms", "--health-interval", "100ms"), 1)
	if got, _ := getRecord(t, "web-2"); got.State != "failed" {
		t.Errorf("web-2 after a failed health check: %+v", got)
	}
	r = runAs("web-3")
	wantCode(t, r, 75)
	if !strings.Contains(r.stderr, "halted") || !strings.Contains(r.stderr, "web-2 failed its health check") {
		t.Errorf("a mover after the halt does not say why: %s", r.stderr)
	}
	// web-1, already on b0b0b0, is no mover: it runs.
	wantCode(t, runAs("web-1"), 0)
	st := tl(t, "rollout", "status", "--tier", tier)
	wantCode(t, st, 0)
	if !strings.Contains(st.stdout, "revision b0b0b0 halted") || !strings.Contains(st.stdout, "failed: web-2") {
		t.Errorf("rollout status: %s", st.stdout)
	}
	ck := tl(t, "check", "--tier", tier)
	wantCode(t, ck, 2)
	if !strings.Contains(ck.stdout, "rollout of b0b0b0 halted") || !strings.Contains(ck.stdout, "web-2 (unhealthy)") {
		t.Errorf("check: %s", ck.stdout)
	}
	// Releasing the failed slot does not resume it; resume does, at the canary.
	wantCode(t, tl(t, "release", "--tier", tier, "--holder", "web-2", "--reason", "looked"), 0)
	wantCode(t, runAs("web-3"), 75)
	wantCode(t, tl(t, "rollout", "resume", "--tier", tier, "b0b0b0", "--reason", "host fixed"), 0)
	wantCode(t, runAs("web-3"), 0)
	js := tl(t, "status", "--tier", tier, "--format", "json")
	wantCode(t, js, 0)
	var doc struct {
		Tiers []struct {
			Rollout struct {
				Revision, State string
				Step            int
				Successes       int
			} `json:"rollout"`
		} `json:"tiers"`
	}
	if err := json.Unmarshal([]byte(js.stdout), &doc); err != nil || len(doc.Tiers) != 1 {
		t.Fatalf("status json: %v\n%s", err, js.stdout)
	}
	if ro := doc.Tiers[0].Rollout; ro.Revision != "b0b0b0" || ro.State != "complete" || ro.Successes != 1 {
		t.Errorf("status json rollout: %+v", ro)
	}
	// (complete: every host the tier knows, web-1 and web-3, is on it; web-2 never converged.
	// Successes count from the resume: web-3.)
	// A revision command that prints nothing, or fails, runs nothing.
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r = tl(t, "run", "--tier", tier, "--holder", "web-4", "--revision-command", "cat "+empty, "--", "touch", filepath.Join(dir, "ran"))
	wantCode(t, r, 78)
	if !strings.Contains(r.stderr, "printed nothing") {
		t.Errorf("empty revision: %s", r.stderr)
	}
	wantCode(t, tl(t, "run", "--tier", tier, "--holder", "web-4", "--revision-command", "false", "--", "touch", filepath.Join(dir, "ran")), 78)
	if exists(filepath.Join(dir, "ran")) {
		t.Error("a run without its revision ran its command")
	}
	wantCode(t, tl(t, "run", "--tier", tier, "--revision", "a b", "--", "true"), 78)
	wantCode(t, tl(t, "rollout", "policy", "--tier", tier, "--schedule", "1,max,2"), 78)
}

func convergedRevision(t *testing.T, holder string) string {
	t.Helper()
	p, _, err := agents.Client(t).KV().Get(testkit.Prefix(t)+"/"+tier+"/converged/"+holder, nil)
	if err != nil || p == nil {
		t.Fatalf("converged/%s: %v", holder, err)
	}
	var c struct{ Revision string }
	if err := json.Unmarshal(p.Value, &c); err != nil {
		t.Fatal(err)
	}
	return c.Revision
}
