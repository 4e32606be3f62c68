package main_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit"
)

// A key with a 600 KB name under one tier's converged/ (where a host of that tier may write):
// reap frees a slot of another tier, and status and check judge every tier, the junk reported
// for its own tier alone, its name cut. It used to fail them all: the name made every
// transaction that fetched it larger than Consul takes.
func TestJunkNameInOneTier(t *testing.T) {
	failRun(t, "db/main", "db-1", "i-0dead")
	put(t, "max_concurrent", "2") // prod/web, where the junk goes
	huge := testkit.Prefix(t) + "/prod/web/converged/" + strings.Repeat("x", 600<<10)
	if _, err := agents.Client(t).KV().Put(&api.KVPair{Key: huge, Value: []byte("{}")}, nil); err != nil {
		t.Fatal(err)
	}
	cut := huge[:77] + "..."

	r := tl(t, "reap", "--instance-id", "i-0dead", "--dry-run")
	wantCode(t, r, 0)
	if !strings.Contains(r.stdout, "would free db/main db-1 (state failed, instance i-0dead") {
		t.Errorf("dry run: %s\n%s", r.stdout, clipped(r.stderr))
	}
	r = tl(t, "reap", "--instance-id", "i-0dead")
	wantCode(t, r, 0)
	if !strings.HasPrefix(r.stdout, "freed db/main db-1 (state failed, instance i-0dead") || strings.Contains(r.stdout, "nothing to free") {
		t.Errorf("reap: %s\n%s", r.stdout, clipped(r.stderr))
	}
	if got := slots(t); len(got) != 0 {
		t.Errorf("left: %v", got)
	}

	r = tl(t, "status")
	wantCode(t, r, 0)
	if !strings.Contains(r.stdout, "prod/web WARNING: 1 key under "+testkit.Prefix(t)+"/prod/web/ with names longer than any tierlock key can have") ||
		!strings.Contains(r.stdout, cut) || !strings.Contains(r.stdout, "db/main") {
		t.Errorf("status: %s", clipped(r.stdout))
	}
	r = tl(t, "check", "--verbose")
	wantCode(t, r, 1)
	if !strings.HasPrefix(r.stdout, "TIERLOCK WARNING") || !strings.Contains(r.stdout, "prod/web WARNING") || !strings.Contains(r.stdout, cut) ||
		!strings.Contains(r.stdout, "db/main OK") {
		t.Errorf("check: %s", clipped(r.stdout))
	}
	t.Logf("check:\n%s", clipped(r.stdout))
	// No output quotes more of the name than the cut.
	for _, out := range []string{r.stdout, r.stderr} {
		if strings.Contains(out, strings.Repeat("x", 100)) {
			t.Errorf("output quotes the junk name at length: %s", clipped(out))
		}
	}
}

// clipped keeps a failure's output readable when it holds a junk name.
func clipped(s string) string {
	if len(s) > 4000 {
		return s[:4000] + "..."
	}
	return s
}

// More junk names under one tier than a listing reads: reap frees the slot in another tier,
// exits 0, and warns that the junk tier was not read.
func TestReapBesideAnUnreadTier(t *testing.T) {
	failRun(t, "db/main", "db-1", "i-0dead")
	for i := range 8 { // 8 × 600 KB: more than the 4 MB a listing reads
		key := fmt.Sprintf("%s/stage/junk/queue/%d%s", testkit.Prefix(t), i, strings.Repeat("x", 600<<10))
		if _, err := agents.Client(t).KV().Put(&api.KVPair{Key: key, Value: []byte("{}")}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// The dry run says so too, rather than "nothing to free" there.
	r := tl(t, "reap", "--instance-id", "i-0dead", "--dry-run")
	wantCode(t, r, 0)
	if !strings.HasPrefix(r.stdout, "would free db/main db-1") || !strings.Contains(r.stderr, "tier not read: a slot there, if any, is not freed") {
		t.Errorf("dry run: %s\n%s", clipped(r.stdout), clipped(r.stderr))
	}
	r = tl(t, "reap", "--instance-id", "i-0dead")
	wantCode(t, r, 0)
	// Refused for the size of its names, or, on a busy machine, for how long Consul took to
	// list them: either way the junk tier alone is not read.
	tooMany := "monitor: tier stage/junk not read: lock: too many keys: "
	if !strings.HasPrefix(r.stdout, "freed db/main db-1") ||
		!strings.Contains(r.stderr, "tier not read: a slot there, if any, is not freed") ||
		!strings.Contains(r.stderr, tooMany+"the names of the keys under "+testkit.Prefix(t)+"/stage/junk/ come to more than the 4 MB") &&
			!strings.Contains(r.stderr, tooMany+"consul took longer than") {
		t.Errorf("reap: %s\n%s", clipped(r.stdout), clipped(r.stderr))
	}
}
