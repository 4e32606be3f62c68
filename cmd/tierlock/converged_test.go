package main_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

// okRun runs a successful command as holder in tier, recording its convergence.
func okRun(t *testing.T, tier, holder, instance string) {
	t.Helper()
	args := []string{"run", "--tier", tier, "--holder", holder, "--default-max", "-1", "--wait", "0s"}
	if instance != "" {
		args = append(args, "--instance-id", instance)
	}
	wantCode(t, tl(t, append(args, "--", "true")...), 0)
}

// convergedKeys lists TIER:HOLDER of every converged/ record under the test's prefix.
func convergedKeys(t *testing.T) string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(dump(t), "\n") {
		key, _, _ := strings.Cut(line, "=")
		if tr, h, ok := strings.Cut(key, "/converged/"); ok {
			out = append(out, tr+":"+h)
		}
	}
	return strings.Join(out, " ")
}

// A successful run records the host's convergence; status shows it (table, --hosts, JSON,
// Prometheus); check alarms on it, naming the hosts, exempting a disabled tier; forget drops it.
func TestConvergenceStatusCheckForget(t *testing.T) {
	okRun(t, tier, "web-1", "i-0aaa")
	okRun(t, tier, "web-2", "")
	failedSlot(t) // web-3: known, failed, never converged
	if got := convergedKeys(t); got != "prod/web:web-1 prod/web:web-2" {
		t.Fatalf("converged records: %s", got)
	}

	r := tl(t, "status")
	wantCode(t, r, 0)
	if !strings.Contains(r.stdout, "prod/web: 3 hosts known, oldest convergence ") {
		t.Errorf("status:\n%s", r.stdout)
	}
	r = tl(t, "status", "--hosts")
	wantCode(t, r, 0)
	for _, want := range []string{"TIER      HOST   LAST CONVERGED", "prod/web  web-1  20", "nothing", "prod/web  web-3  never", "failed"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status --hosts lacks %q:\n%s", want, r.stdout)
		}
	}
	r = tl(t, "status", "--format", "json")
	wantCode(t, r, 0)
	var doc struct {
		Tiers []struct {
			HostsKnown  int      `json:"hosts_known"`
			Unconverged []string `json:"unconverged"`
			Hosts       []struct {
				Holder      string  `json:"holder"`
				ConvergedAt *string `json:"converged_at"`
				AgeSeconds  *int64  `json:"age_seconds"`
				Doing       string  `json:"doing"`
			} `json:"hosts"`
		} `json:"tiers"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || len(doc.Tiers) != 1 {
		t.Fatalf("json: %v\n%s", err, r.stdout)
	}
	if ts := doc.Tiers[0]; ts.HostsKnown != 3 || len(ts.Hosts) != 3 || ts.Hosts[0].ConvergedAt == nil || ts.Hosts[0].AgeSeconds == nil ||
		ts.Hosts[2].Holder != "web-3" || ts.Hosts[2].ConvergedAt != nil || ts.Hosts[2].Doing != "failed" || len(ts.Unconverged) != 0 {
		t.Errorf("json hosts: %+v", ts)
	}
	r = tl(t, "status", "--format", "prometheus")
	wantCode(t, r, 0)
	if !strings.Contains(r.stdout, `tierlock_host_last_converged_timestamp_seconds{holder="web-1",tier="prod/web"} 1.`) ||
		!strings.Contains(r.stdout, `tierlock_tier_oldest_convergence_age_seconds{tier="prod/web"} `) {
		t.Errorf("prometheus:\n%s", r.stdout)
	}

	// The alarm: defaults (4h) leave fresh records alone; at 0 every converged host is past.
	r = tl(t, "check", "-c", "24h")
	if !regexp.MustCompile(`oldest_converged_age=[0-9]+s;14400;86400;0`).MatchString(r.stdout) {
		t.Errorf("perfdata: %q", r.stdout)
	}
	if strings.Contains(r.stdout, "last converged") {
		t.Errorf("fresh records alarmed: %q", r.stdout)
	}
	r = tl(t, "check", "-c", "24h", "--converge-warning", "0")
	wantCode(t, r, 1)
	if !strings.Contains(r.stdout, "web-1 last converged ") || !strings.Contains(r.stdout, "web-2 last converged ") ||
		!strings.Contains(r.stdout, ";0;86400;0") {
		t.Errorf("converge warning: %q", r.stdout)
	}
	r = tl(t, "check", "-c", "24h", "--converge-critical", "0")
	wantCode(t, r, 2)
	if !strings.Contains(r.stdout, "prod/web CRITICAL: web-1 last converged") {
		t.Errorf("converge critical: %q", r.stdout)
	}
	for _, args := range [][]string{{"check", "--converge-warning", "soon"}, {"check", "--converge-critical", "20:10"}} {
		if r := tl(t, args...); r.code != 3 || !strings.HasPrefix(r.stdout, "TIERLOCK UNKNOWN - --converge-") {
			t.Errorf("%v: exit %d %q", args, r.code, r.stdout)
		}
	}
	// A disabled tier is exempt, and said to be.
	wantCode(t, tl(t, "release", "--tier", tier, "--holder", "web-3"), 0)
	wantCode(t, tl(t, "disable", "--tier", tier), 0)
	r = tl(t, "check", "--converge-critical", "0")
	wantCode(t, r, 0)
	if !strings.Contains(r.stdout, "disabled: prod/web (convergence not judged there)") {
		t.Errorf("disabled tier: %q", r.stdout)
	}
	wantCode(t, tl(t, "enable", "--tier", tier), 0)

	// forget: the record goes, nothing else changes but the operators' notes (audit/, which
	// record the forget); again: nothing to forget, exit 0.
	before := dump(t)
	r = tl(t, "forget", "--tier", tier, "--holder", "web-1")
	wantCode(t, r, 0)
	if !strings.HasPrefix(r.stdout, "prod/web: forgot web-1 (last converged ") {
		t.Errorf("forget: %q", r.stdout)
	}
	after := dump(t)
	var gone []string
	for _, line := range strings.Split(before, "\n") {
		if !strings.Contains(after, line+"\n") && line != "" && !strings.HasPrefix(line, "prod/web/audit/") {
			gone = append(gone, line)
		}
	}
	notes := func(dump string) int { return strings.Count(dump, "prod/web/audit/") }
	if len(gone) != 1 || !strings.HasPrefix(gone[0], "prod/web/converged/web-1=") ||
		strings.Count(after, "\n")-notes(after) != strings.Count(before, "\n")-notes(before)-1 {
		t.Errorf("forget changed %q; after:\n%s", gone, after)
	}
	r = tl(t, "forget", "--tier", tier, "--holder", "web-1")
	wantCode(t, r, 0)
	if r.stdout != "prod/web: web-1 has no convergence record; nothing to forget\n" || dump(t) != after {
		t.Errorf("second forget: %q", r.stdout)
	}
	for _, args := range [][]string{{"forget", "--tier", tier}, {"forget", "--tier", tier, "--holder", "a/b"}, {"forget", "--tier", "prod", "--holder", "web-2"}} {
		if r := tl(t, args...); r.code != 78 {
			t.Errorf("%v: exit %d, want 78 (%s)", args, r.code, r.stderr)
		}
	}
	if dump(t) != after {
		t.Errorf("a refused forget changed something")
	}
}

// reap, all three ways, removes the dead host's convergence records along with its slots.
func TestReapRemovesConvergence(t *testing.T) {
	okRun(t, "prod/web", "web-3", "i-0dead")
	okRun(t, "prod/db", "web-3", "i-0dead")
	okRun(t, "prod/web", "web-4", "i-0live")
	okRun(t, "prod/web", "web-5", "")
	r := tl(t, "reap", "--instance-id", "i-0dead")
	wantCode(t, r, 0)
	if !strings.Contains(r.stdout, "freed prod/db web-3 (convergence record, instance i-0dead, node ") ||
		!strings.Contains(r.stdout, "freed prod/web web-3 (convergence record") {
		t.Errorf("reap --instance-id:\n%s", r.stdout)
	}
	if got := convergedKeys(t); got != "prod/web:web-4 prod/web:web-5" {
		t.Errorf("after reap --instance-id: %s", got)
	}
	wantCode(t, tl(t, "reap", "--holder", "web-5"), 0)
	if got := convergedKeys(t); got != "prod/web:web-4" {
		t.Errorf("after reap --holder: %s", got)
	}
	// A node that left the catalog over --grace ago: its record (which names it) goes; the
	// live node's stays.
	put(t, "converged/web-9", `{"holder":"web-9","converged_at":"2026-11-21T09:15:02Z","run_id":"r9","node":"gone-9"}`)
	missingSince(t, "gone-9", time.Now().Add(-2*time.Hour))
	r = tl(t, "reap", "--consul-catalog")
	wantCode(t, r, 0)
	if !strings.Contains(r.stdout, "freed prod/web web-9 (convergence record, node gone-9, converged 2026-11-21T09:15:02Z)") {
		t.Errorf("reap --consul-catalog:\n%s", r.stdout)
	}
	if got := convergedKeys(t); got != "prod/web:web-4" {
		t.Errorf("after reap --consul-catalog: %s", got)
	}
	// A reaped host raises no alarm.
	r = tl(t, "check", "--converge-critical", "0", "--converge-warning", "0")
	if strings.Contains(r.stdout, "web-9") || strings.Contains(r.stdout, "web-3") {
		t.Errorf("reaped hosts in check: %q", r.stdout)
	}
}

func TestRunQueueOrderFlag(t *testing.T) {
	r := tl(t, "run", "--tier", tier, "--holder", "web-1", "--queue-order", "fifo", "--", "true")
	wantCode(t, r, 78)
	if !strings.Contains(r.stderr, `"fifo"`) {
		t.Errorf("stderr: %s", r.stderr)
	}
	wantCode(t, tl(t, "run", "--tier", tier, "--holder", "web-1", "--queue-order", "arrival", "--", "true"), 0)
}
