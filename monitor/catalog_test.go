package monitor_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/monitor"
)

// register puts node in the catalog, with a serfHealth check in status if status is not "".
func register(t *testing.T, node, status string) {
	t.Helper()
	reg := &api.CatalogRegistration{Node: node, Address: "127.0.0.1"}
	if status != "" {
		reg.Check = &api.AgentCheck{Node: node, CheckID: "serfHealth", Name: "Serf Health Status", Status: status}
	}
	if _, err := agent.Client(t).Catalog().Register(reg, nil); err != nil {
		t.Fatal(err)
	}
}

func deregister(t *testing.T, node string) {
	t.Helper()
	if _, err := agent.Client(t).Catalog().Deregister(&api.CatalogDeregistration{Node: node}, nil); err != nil {
		t.Fatal(err)
	}
}

// testNode names a catalog node of the test's own: the agent's catalog is shared by the
// package's tests, and a node name takes no _.
func testNode(t *testing.T, kind string) string {
	return kind + "-" + strings.ReplaceAll(strings.TrimPrefix(testkit.Prefix(t), "test/"), "_", "-")
}

func agentNode(t *testing.T) string {
	t.Helper()
	n, err := agent.Client(t).Agent().NodeName()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func reapCatalog(t *testing.T, r *monitor.Reaper, grace time.Duration, dry bool) monitor.CatalogResult {
	t.Helper()
	res, err := r.ReapCatalog(testkit.Ctx(t), agent.Client(t).Catalog(), agent.Client(t).Health(), monitor.CatalogOptions{Grace: grace, DryRun: dry})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// verdict returns the reason given for node, prefixed with "dead: " when it was judged dead.
func verdict(res monitor.CatalogResult, node string) string {
	for _, v := range res.Verdicts {
		if v.Node == node {
			if v.Dead {
				return "dead: " + v.Reason
			}
			return v.Reason
		}
	}
	return "(not judged)"
}

// A node that leaves the catalog keeps its slots through the grace, as a failing one does
// (measured with an injected clock from when the reaper first saw it missing), and loses them
// after, in every tier; a healthy node's slot and a slot that recorded no node stay.
func TestReapCatalogFreesNodesThatLeftPastTheGrace(t *testing.T) {
	gone, healthy := testNode(t, "left"), agentNode(t)
	register(t, gone, "")
	take(t,
		slot{"prod/web", "web-7", "", gone},
		slot{"prod/db", "web-7", "", gone},
		slot{"prod/web", "web-1", "", healthy},
		slot{"prod/web", "old-1", "", ""},
	)
	t0 := time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)
	now := t0
	r := newReaper(t, func() time.Time { return now })
	const grace = 10 * time.Minute

	res := reapCatalog(t, r, grace, false)
	if len(res.Freed) != 0 || verdict(res, gone) != "alive" || verdict(res, healthy) != "alive" {
		t.Fatalf("while registered: freed %s, verdicts %+v", freedList(res.Freed), res.Verdicts)
	}

	deregister(t, gone)
	res = reapCatalog(t, r, grace, false)
	if len(res.Freed) != 0 || verdict(res, gone) != "not in the catalog for 0s, within the grace of 10m0s" {
		t.Errorf("first seen missing: freed %s, verdict %q", freedList(res.Freed), verdict(res, gone))
	}
	if since := criticalSince(t); !since[strings.ToLower(gone)].Equal(t0) || len(since) != 1 {
		t.Errorf("remembered %v, want %s at %s", since, gone, t0)
	}
	now = t0.Add(grace - time.Second)
	if res = reapCatalog(t, r, grace, false); len(res.Freed) != 0 {
		t.Errorf("freed within the grace: %s", freedList(res.Freed))
	}

	now = t0.Add(grace)
	res = reapCatalog(t, r, grace, true)
	if freedList(res.Freed) != "prod/db:web-7 prod/web:web-7" || verdict(res, gone) != "dead: not in the catalog for 10m0s (grace 10m0s)" {
		t.Errorf("dry run: would free %s, verdicts %+v", freedList(res.Freed), res.Verdicts)
	}
	if n := len(held(t)); n != 4 {
		t.Fatalf("the dry run freed something: %d slots left", n)
	}

	res = reapCatalog(t, r, grace, false)
	if freedList(res.Freed) != "prod/db:web-7 prod/web:web-7" {
		t.Errorf("freed %s", freedList(res.Freed))
	}
	if got := strings.Join(held(t), " "); got != "prod/web:old-1 prod/web:web-1" {
		t.Errorf("left: %s", got)
	}
	if res = reapCatalog(t, r, grace, false); len(res.Freed) != 0 {
		t.Errorf("a second reaping freed %s", freedList(res.Freed))
	}
	if since := criticalSince(t); len(since) != 0 {
		t.Errorf("still remembered: %v", since)
	}
}

// A node that comes back into the catalog within the grace is forgotten, and keeps its slot.
func TestReapCatalogForgetsNodesThatCameBack(t *testing.T) {
	node := testNode(t, "back")
	take(t, slot{"prod/web", "web-7", "", node})
	t0 := time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)
	now := t0
	r := newReaper(t, func() time.Time { return now })
	if res := reapCatalog(t, r, time.Hour, false); len(res.Freed) != 0 || len(criticalSince(t)) != 1 {
		t.Fatalf("missing: freed %s, remembered %v", freedList(res.Freed), criticalSince(t))
	}
	register(t, node, "")
	defer deregister(t, node)
	now = t0.Add(2 * time.Hour)
	if res := reapCatalog(t, r, time.Hour, false); len(res.Freed) != 0 || verdict(res, node) != "alive" || len(criticalSince(t)) != 0 {
		t.Errorf("back: freed %s, verdict %q, remembered %v", freedList(res.Freed), verdict(res, node), criticalSince(t))
	}
}

// A node whose serfHealth is critical keeps its slot through the grace, measured with an
// injected clock from when the reaper first saw it critical, and loses it after.
func TestReapCatalogFreesNodesCriticalPastTheGrace(t *testing.T) {
	retryIfReaped(t, func(t *testing.T, sick string) []string {
		var errs []string
		healthy := agentNode(t)
		take(t, slot{"prod/web", "web-7", "", sick}, slot{"prod/web", "web-1", "", healthy}, slot{"prod/db", "web-7", "", sick})
		t0 := time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)
		now := t0
		r := newReaper(t, func() time.Time { return now })
		const grace = 10 * time.Minute

		res := reapCatalog(t, r, grace, false)
		if len(res.Freed) != 0 || verdict(res, sick) != "serfHealth critical for 0s, within the grace of 10m0s" {
			errs = append(errs, fmt.Sprintf("first seen: freed %s, verdict %q", freedList(res.Freed), verdict(res, sick)))
		}
		if since := criticalSince(t); !since[strings.ToLower(sick)].Equal(t0) || len(since) != 1 {
			errs = append(errs, fmt.Sprintf("remembered %v, want %s at %s", since, sick, t0))
		}
		now = t0.Add(grace - time.Second)
		if res = reapCatalog(t, r, grace, false); len(res.Freed) != 0 {
			errs = append(errs, "freed within the grace: "+freedList(res.Freed))
		}
		now = t0.Add(grace)
		if res = reapCatalog(t, r, grace, true); freedList(res.Freed) != "prod/db:web-7 prod/web:web-7" || len(held(t)) != 3 {
			errs = append(errs, fmt.Sprintf("dry run past the grace: would free %s, %d held", freedList(res.Freed), len(held(t))))
		}
		res = reapCatalog(t, r, grace, false)
		if freedList(res.Freed) != "prod/db:web-7 prod/web:web-7" || verdict(res, sick) != "dead: serfHealth critical for 10m0s (grace 10m0s)" {
			errs = append(errs, fmt.Sprintf("past the grace: freed %s, verdict %q", freedList(res.Freed), verdict(res, sick)))
		}
		if got := strings.Join(held(t), " "); got != "prod/web:web-1" {
			errs = append(errs, "left: "+got)
		}
		// No slot records the sick node any more: it is forgotten.
		reapCatalog(t, r, grace, false)
		if since := criticalSince(t); len(since) != 0 {
			errs = append(errs, fmt.Sprintf("still remembered: %v", since))
		}
		return errs
	})
}

// A node that recovers is forgotten: when it turns critical again, the grace starts over.
func TestReapCatalogGraceStartsOverAfterRecovery(t *testing.T) {
	retryIfReaped(t, func(t *testing.T, sick string) []string {
		var errs []string
		take(t, slot{"prod/web", "web-7", "", sick})
		t0 := time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)
		now := t0
		r := newReaper(t, func() time.Time { return now })
		reapCatalog(t, r, time.Hour, false)

		register(t, sick, api.HealthPassing)
		now = t0.Add(30 * time.Minute)
		if res := reapCatalog(t, r, time.Hour, false); verdict(res, sick) != "alive" || len(criticalSince(t)) != 0 {
			errs = append(errs, fmt.Sprintf("recovered: verdict %q, remembered %v", verdict(res, sick), criticalSince(t)))
		}
		register(t, sick, api.HealthCritical)
		now = t0.Add(2 * time.Hour)
		res := reapCatalog(t, r, time.Hour, false)
		if len(res.Freed) != 0 || verdict(res, sick) != "serfHealth critical for 0s, within the grace of 1h0m0s" {
			errs = append(errs, fmt.Sprintf("critical again: freed %s, verdict %q", freedList(res.Freed), verdict(res, sick)))
		}
		return errs
	})
}

// retryIfReaped registers a node through the catalog API, with a critical serfHealth check,
// and runs a scenario about it. Consul's leader deregisters such nodes, unknown to Serf, when
// it reconciles (every 60s): if that happened during the scenario (the node is gone, or was
// created anew), its findings mean nothing and it runs again with a fresh node and prefix.
func retryIfReaped(t *testing.T, scenario func(t *testing.T, node string) []string) {
	for attempt := 1; attempt <= 3; attempt++ {
		var errs []string
		reaped := false
		t.Run(fmt.Sprint("attempt-", attempt), func(t *testing.T) {
			node := testNode(t, "sick")
			register(t, node, api.HealthCritical)
			created := createIndex(t, node)
			errs = scenario(t, node)
			reaped = createIndex(t, node) != created
			deregister(t, node)
		})
		if !reaped {
			for _, e := range errs {
				t.Error(e)
			}
			return
		}
		t.Logf("attempt %d: Consul reaped the test node during the scenario; again", attempt)
	}
	t.Fatal("Consul reaped the test node during every attempt")
}

// createIndex is the node's catalog CreateIndex, 0 if it is not registered.
func createIndex(t *testing.T, node string) uint64 {
	t.Helper()
	n, _, err := agent.Client(t).Catalog().Node(node, &api.QueryOptions{RequireConsistent: true})
	if err != nil {
		t.Fatal(err)
	}
	if n == nil || n.Node == nil {
		return 0
	}
	return n.Node.CreateIndex
}

// criticalSince reads what the catalog reaper remembers.
func criticalSince(t *testing.T) map[string]time.Time {
	t.Helper()
	p, _, err := agent.Client(t).KV().Get(testkit.Prefix(t)+"/_reaper/critical_since", &api.QueryOptions{RequireConsistent: true})
	if err != nil {
		t.Fatal(err)
	}
	since := map[string]time.Time{}
	if p != nil {
		if err := json.Unmarshal(p.Value, &since); err != nil {
			t.Fatal(err)
		}
	}
	return since
}
