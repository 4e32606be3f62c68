package main_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/internal/testkit/faultproxy"
)

// slots lists the test's held slots as tier:holder, sorted, and checks each tier's invariant.
func slots(t *testing.T) []string {
	t.Helper()
	pairs, _, err := agents.Client(t).KV().List(testkit.Prefix(t)+"/", &api.QueryOptions{RequireConsistent: true})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range pairs {
		parts := strings.SplitN(strings.TrimPrefix(p.Key, testkit.Prefix(t)+"/"), "/", 3)
		if len(parts) == 3 && strings.HasPrefix(parts[2], "running/") {
			out = append(out, parts[0]+"/"+parts[1]+":"+strings.TrimPrefix(parts[2], "running/"))
		}
	}
	testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))
	slices.Sort(out)
	return out
}

// failRun leaves a failed run's slot held in tier.
func failRun(t *testing.T, tier, holder, instance string) {
	t.Helper()
	args := []string{"run", "--tier", tier, "--holder", holder, "--default-max", "-1", "--wait", "0s"}
	if instance != "" {
		args = append(args, "--instance-id", instance)
	}
	wantCode(t, tl(t, append(args, "--", "false")...), 1)
}

func TestReapInstanceID(t *testing.T) {
	failRun(t, "prod/web", "web-3", "i-0dead")
	failRun(t, "prod/db", "web-3", "i-0dead")
	failRun(t, "prod/web", "web-4", "i-0live")

	r := tl(t, "reap", "--instance-id", "i-0dead", "--dry-run")
	wantCode(t, r, 0)
	if !strings.Contains(r.stdout, "would free prod/db web-3 (state failed, instance i-0dead") ||
		!strings.Contains(r.stdout, "would free prod/web web-3") || len(slots(t)) != 3 {
		t.Errorf("dry run: %s, slots %v", r.stdout, slots(t))
	}

	r = tl(t, "reap", "--instance-id", "i-0dead")
	wantCode(t, r, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "freed prod/db web-3 (state failed, instance i-0dead, node ") ||
		!strings.HasPrefix(lines[1], "freed prod/web web-3 (state failed, instance i-0dead") {
		t.Errorf("output:\n%s", r.stdout)
	}
	if got := strings.Join(slots(t), " "); got != "prod/web:web-4" {
		t.Errorf("left: %s", got)
	}

	// A repeated (or late) reaping frees nothing and succeeds.
	r = tl(t, "reap", "--instance-id", "i-0dead")
	wantCode(t, r, 0)
	if strings.TrimSpace(r.stdout) != "nothing to free: no slot, queue entry or convergence record belongs to instance i-0dead" {
		t.Errorf("second reaping: %s", r.stdout)
	}
}

func TestReapHolder(t *testing.T) {
	failRun(t, "prod/web", "web-3", "")
	failRun(t, "stage/web", "web-3", "")
	failRun(t, "prod/web", "web-30", "")
	r := tl(t, "reap", "--holder", "web-3")
	wantCode(t, r, 0)
	if strings.Count(r.stdout, "freed ") != 2 {
		t.Errorf("output:\n%s", r.stdout)
	}
	if got := strings.Join(slots(t), " "); got != "prod/web:web-30" {
		t.Errorf("left: %s", got)
	}
}

// The catalog reaper frees a slot whose node has not been in the catalog for --grace; the
// slot of a run on a live node (the test agent's, recorded by tierlock run) stays.
func TestReapConsulCatalog(t *testing.T) {
	failRun(t, "prod/web", "web-1", "")
	if rec, _ := getRecord(t, "web-1"); rec.Node == "" {
		t.Fatal("tierlock run recorded no node")
	}
	put(t, "running/web-9", `{"holder":"web-9","node":"gone-9","state":"failed","started_at":"2026-11-21T09:15:02Z"}`)
	put(t, "current", "2")

	// Missing, first seen now: not freed, as a failing node would not be.
	r := tl(t, "reap", "--consul-catalog", "--dry-run")
	wantCode(t, r, 0)
	if !strings.Contains(r.stdout, "node gone-9: not in the catalog for 0s, within the grace of 1h0m0s") ||
		strings.Contains(r.stdout, "would free") || len(slots(t)) != 2 {
		t.Errorf("dry run, first seen:\n%s", r.stdout)
	}
	// Missing for 40 minutes, as an earlier reaping remembered.
	missingSince(t, "gone-9", time.Now().Add(-40*time.Minute))
	r = tl(t, "reap", "--consul-catalog", "--dry-run", "--grace", "30m")
	wantCode(t, r, 0)
	if !strings.Contains(r.stdout, "would free prod/web web-9 (state failed, node gone-9, started 2026-11-21T09:15:02Z)") ||
		len(slots(t)) != 2 {
		t.Errorf("dry run past the grace:\n%s", r.stdout)
	}
	r = tl(t, "reap", "--consul-catalog", "--grace", "30m")
	wantCode(t, r, 0)
	if !strings.Contains(r.stdout, "freed prod/web web-9") || strings.Contains(r.stdout, "web-1") {
		t.Errorf("output:\n%s", r.stdout)
	}
	if got := strings.Join(slots(t), " "); got != "prod/web:web-1" {
		t.Errorf("left: %s", got)
	}
}

// missingSince makes the catalog reaper remember node as missing (or critical) since at.
func missingSince(t *testing.T, node string, at time.Time) {
	t.Helper()
	v := fmt.Sprintf(`{%q:%q}`, node, at.UTC().Format(time.RFC3339))
	if _, err := agents.Client(t).KV().Put(&api.KVPair{Key: testkit.Prefix(t) + "/_reaper/critical_since", Value: []byte(v)}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestReapBadInput(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{}, "exactly one of --instance-id, --holder or --consul-catalog (got none)"},
		{[]string{"--instance-id", "i-1", "--holder", "web-3"}, "(got --instance-id and --holder)"},
		{[]string{"--instance-id", "i-0abc/../x"}, `instance id "i-0abc/../x" has '/'`},
		{[]string{"--instance-id", ""}, "instance id is empty"},
		{[]string{"--holder", "web 3"}, `holder "web 3" has ' '`},
		{[]string{"--holder", "web-3", "--grace", "5m"}, "--grace 5m0s only applies to --consul-catalog"},
		{[]string{"--consul-catalog", "--grace", "-5m"}, "--grace -5m0s is negative"},
		{[]string{"--consul-catalog", "--grace", "soon"}, `"soon"`},
		{[]string{"--consul-catalog=false"}, "--consul-catalog=false selects nothing"},
		{[]string{"--holder", "web-3", "--consul-timeout", "0s"}, "--consul-timeout 0s must be positive"},
	}
	for _, tt := range tests {
		r := tl(t, append([]string{"reap"}, tt.args...)...)
		if r.code != 78 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("reap %q: exit %d, stderr %q; want 78 and %q", tt.args, r.code, r.stderr, tt.want)
		}
	}
	r := tl(t, "reap", "--holder", "web-3", "--prefix", "chef/../x")
	if r.code != 78 || !strings.Contains(r.stderr, `".."`) {
		t.Errorf("bad prefix: exit %d, %s", r.code, r.stderr)
	}
}

func TestReapConsulUnreachable(t *testing.T) {
	p := faultproxy.New(agentAddr(t))
	addr := p.Addr
	p.Close()
	r := run(t, cli(t, addr, "reap", "--instance-id", "i-0dead", "--consul-timeout", "1s"))
	wantCode(t, r, 75)
	if !strings.Contains(r.stderr, "retrying") {
		t.Errorf("no retries logged: %s", r.stderr)
	}
	// Nothing was read: that is not "nothing to free".
	if strings.Contains(r.stdout, "nothing to free") {
		t.Errorf("a reaping that read nothing says: %s", r.stdout)
	}
}
