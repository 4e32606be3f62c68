package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit"
)

// says reports whether out has line, where "0s ago" may be any age (a loaded machine is slow).
func says(out, line string) bool {
	re := regexp.QuoteMeta(line)
	re = strings.ReplaceAll(re, "0s ago", `[0-9]+s ago`)
	re = strings.ReplaceAll(re, `\(longer than 0s\)`, `\(longer than 0s\)`)
	return regexp.MustCompile(re).MatchString(out)
}

// asPerson runs `tierlock ARGS` as alice would under sudo.
func asPerson(t *testing.T, args ...string) result {
	t.Helper()
	cmd := cli(t, agentAddr(t), args...)
	cmd.Env = append(cmd.Env, "SUDO_USER=alice", "SUDO_UID=1000", "USER=root")
	return run(t, cmd)
}

// Who pulled the brake, from where, when and why: recorded in the same transaction as the
// change, shown by status and check, cleared by enable.
func TestReasonIsRecordedAndShown(t *testing.T) {
	host, _ := os.Hostname()
	put(t, "max_concurrent", "3")
	wantCode(t, asPerson(t, "disable", "--tier", tier, "--reason", "incident 4711"), 0)

	// One transaction: audit/max and max_concurrent carry the same ModifyIndex.
	kv := agents.Client(t).KV()
	q := &api.QueryOptions{RequireConsistent: true}
	maxPair, _, err := kv.Get(testkit.Prefix(t)+"/"+tier+"/max_concurrent", q)
	if err != nil {
		t.Fatal(err)
	}
	note, _, err := kv.Get(testkit.Prefix(t)+"/"+tier+"/audit/max", q)
	if err != nil || note == nil {
		t.Fatalf("no audit/max after disable: %v", err)
	}
	if note.ModifyIndex != maxPair.ModifyIndex {
		t.Errorf("audit/max written at %d, max_concurrent at %d: not one transaction", note.ModifyIndex, maxPair.ModifyIndex)
	}
	var n struct{ Action, Value, Reason, By, Host string }
	if err := json.Unmarshal(note.Value, &n); err != nil || n.Action != "disable" || n.Reason != "incident 4711" || n.By != "alice" || n.Host != host {
		t.Errorf("audit/max = %s (%v)", note.Value, err)
	}

	want := tier + " disabled 0s ago by alice on " + host + ": incident 4711"
	r := tl(t, "status", "--tier", tier)
	wantCode(t, r, 0)
	if !says(r.stdout, want) {
		t.Errorf("status does not say who disabled the tier:\n%s", r.stdout)
	}
	t.Logf("status:\n%s", r.stdout)
	r = tl(t, "check", "--tier", tier)
	wantCode(t, r, 0)
	if !says(r.stdout, tier+" OK: disabled 0s ago by alice on "+host+": incident 4711") {
		t.Errorf("check does not say who disabled the tier:\n%s", r.stdout)
	}
	r = tl(t, "check", "--tier", tier, "--disabled-warning", "1ns")
	wantCode(t, r, 1)
	if !strings.Contains(r.stdout, "incident 4711 (longer than 0s)") {
		t.Errorf("check --disabled-warning:\n%s", r.stdout)
	}
	t.Logf("check --disabled-warning 1ns:\n%s", r.stdout)
	r = tl(t, "status", "--tier", tier, "--format", "json")
	if !strings.Contains(r.stdout, `"reason": "incident 4711"`) {
		t.Errorf("status json lacks the note:\n%s", r.stdout)
	}

	// enable takes the brake off, and its note with it.
	wantCode(t, asPerson(t, "enable", "--tier", tier), 0)
	if p, _, _ := kv.Get(testkit.Prefix(t)+"/"+tier+"/audit/max", q); p != nil {
		t.Errorf("audit/max left after enable: %s", p.Value)
	}
	r = tl(t, "status", "--tier", tier)
	if strings.Contains(r.stdout, "incident 4711") {
		t.Errorf("status still shows the brake after enable:\n%s", r.stdout)
	}
	// ... but who released it stays, in audit/history, with the brake before it.
	if !says(r.stdout, tier+" enabled (max_concurrent 3) 0s ago by alice on "+host) {
		t.Errorf("status does not say who released the brake:\n%s", r.stdout)
	}
	hist, _, err := kv.Get(testkit.Prefix(t)+"/"+tier+"/audit/history", q)
	if err != nil || hist == nil {
		t.Fatalf("no audit/history after enable: %v", err)
	}
	var h struct {
		Action, By string
		UID        *int
		Earlier    []struct{ Action, Reason string }
	}
	if err := json.Unmarshal(hist.Value, &h); err != nil || h.Action != "enable" || h.By != "alice" || h.UID == nil ||
		len(h.Earlier) != 1 || h.Earlier[0].Action != "disable" || h.Earlier[0].Reason != "incident 4711" {
		t.Errorf("audit/history = %s (%v)", hist.Value, err)
	}

	// set-max and release record too; a release's note names the holder.
	wantCode(t, asPerson(t, "set-max", "--tier", tier, "--reason", "canary", "2"), 0)
	failedSlot(t)
	wantCode(t, asPerson(t, "release", "--tier", tier, "--holder", "web-3", "--reason", "disk full, fixed"), 0)
	// A successful run leaves a convergence record; forgetting it is noted too.
	wantCode(t, tl(t, "run", "--tier", tier, "--holder", "web-4", "--", "true"), 0)
	wantCode(t, asPerson(t, "forget", "--tier", tier, "--holder", "web-4", "--reason", "moved to prod/api"), 0)
	r = tl(t, "status", "--tier", tier)
	for _, line := range []string{
		tier + " web-4 forgotten 0s ago by alice on " + host + ": moved to prod/api",
		tier + " max_concurrent set to 2 0s ago by alice on " + host + ": canary",
		tier + " web-3's slot released 0s ago by alice on " + host + ": disk full, fixed",
	} {
		if !says(r.stdout, line) {
			t.Errorf("status lacks %q:\n%s", line, r.stdout)
		}
	}
	testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))
}

// A reason is one line of text: anything else is refused, naming it, and nothing is written.
func TestReasonRefusesControlCharacters(t *testing.T) {
	put(t, "max_concurrent", "3")
	before := dump(t)
	for _, reason := range []string{"two\nlines", "bell\a", "\x1b]0;title\a", strings.Repeat("x", 513)} {
		r := asPerson(t, "disable", "--tier", tier, "--reason", reason)
		wantCode(t, r, 78)
		if !strings.Contains(r.stderr, "--reason") {
			t.Errorf("refusal of %q does not name --reason: %s", reason, r.stderr)
		}
		if strings.ContainsAny(r.stderr, "\a\x1b") {
			t.Errorf("refusal echoes control characters: %q", r.stderr)
		}
	}
	if after := dump(t); after != before {
		t.Errorf("a refused reason wrote something:\n%s\nthen\n%s", before, after)
	}
}

// The history is bounded: the newest lock.MaxHistory changes, newest first.
func TestOperatorHistoryIsBounded(t *testing.T) {
	for i := 1; i <= 20; i++ {
		wantCode(t, asPerson(t, "set-max", "--tier", tier, "--reason", fmt.Sprint("step ", i), fmt.Sprint(i)), 0)
	}
	hist, _, err := agents.Client(t).KV().Get(testkit.Prefix(t)+"/"+tier+"/audit/history", &api.QueryOptions{RequireConsistent: true})
	if err != nil || hist == nil {
		t.Fatalf("no audit/history: %v", err)
	}
	var h struct {
		Reason  string
		Earlier []struct{ Reason string }
	}
	if err := json.Unmarshal(hist.Value, &h); err != nil {
		t.Fatal(err)
	}
	if h.Reason != "step 20" || len(h.Earlier) != 15 || h.Earlier[0].Reason != "step 19" || h.Earlier[14].Reason != "step 5" {
		t.Errorf("history of %d bytes: newest %q, %d earlier: %s", len(hist.Value), h.Reason, len(h.Earlier), hist.Value)
	}
}
