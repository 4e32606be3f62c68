package reliability_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

// What one compromised host can still do with its token, and what it no longer can: a host
// token made from `tierlock acl-policy --role host` runs, queues and releases in its own tier,
// and is refused everything else issue 16 found it could do (make its tier unlimited, change
// another tier, list and destroy another node's session, such as a Vault HA lock). The
// operator, monitoring and reaper tokens can do their commands, and no more.
func TestACLRoles(t *testing.T) {
	t.Parallel()
	server, admin := aclServer(t)
	tokens := map[string]string{}
	for name, args := range map[string][]string{
		"host":            {"--role", "host", "--tier", tier, "--node", server.Node},
		"operator":        {"--role", "operator"},
		"monitor":         {"--role", "monitor"},
		"reaper":          {"--role", "reaper", "--tier", tier, "--tier", "prod/db"},
		"reaper-anywhere": {"--role", "reaper"},
	} {
		createPolicy(t, admin, name, args...)
		tokens[name] = newToken(t, admin, name)
	}
	// Another application's lock on another node: a Vault HA lock, say.
	// Registered in the catalog alone (no serfHealth, which the leader would reap for a node
	// outside the gossip pool), its session bound to no check.
	if _, err := admin.Catalog().Register(&api.CatalogRegistration{Node: "vault-1", Address: "127.0.0.2"}, nil); err != nil {
		t.Fatal(err)
	}
	vault, _, err := admin.Session().CreateNoChecks(&api.SessionEntry{Name: "vault-ha", Node: "vault-1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _, err := admin.KV().Acquire(&api.KVPair{Key: "vault/core/lock", Value: []byte("vault-1"), Session: vault}, nil); !ok || err != nil {
		t.Fatalf("vault lock: %v %v", ok, err)
	}
	kvAs := func(token string) *api.KV { return clientOf(t, server, tokens[token]).KV() }
	put := func(key, value string) {
		t.Helper()
		if _, err := admin.KV().Put(absPair(key, value), nil); err != nil {
			t.Fatal(err)
		}
	}
	reset := func() {
		t.Helper()
		if _, err := admin.KV().DeleteTree("chef/", nil); err != nil {
			t.Fatal(err)
		}
		put(base+"max_concurrent", "1")
		put("chef/prod/db/max_concurrent", "2")
	}
	as := func(token string, args ...string) *outcome {
		t.Helper()
		return newHost(t, "web-1", server.Addr, "CONSUL_HTTP_TOKEN="+tokens[token]).run(t, args...)
	}
	marker := filepath.Join(t.TempDir(), "ran")

	t.Run("host runs, queues and releases in its tier", func(t *testing.T) {
		reset()
		// No max_concurrent at all (the default applies): the run must not need to write it,
		// not even to check that it is still absent.
		if _, err := admin.KV().Delete(base+"max_concurrent", nil); err != nil {
			t.Fatal(err)
		}
		o := as("host", "run", "--tier", tier, "--log-level", "debug", "--", "touch", marker)
		if o.code != 0 || !strings.Contains(o.stderr.String(), "slot acquired") || strings.Contains(o.stderr.String(), "lacks") {
			t.Errorf("run: %s", o)
		}
		if _, err := os.Stat(marker); err != nil {
			t.Error("the command did not run")
		}
		os.Remove(marker)
		if s := tierOf(t, admin); s.Current != 0 || len(s.Holders) != 0 {
			t.Errorf("the slot was not released: current %d, holders %v", s.Current, s.Holders)
		}
		// A failed run keeps its slot; the next one re-enters it and releases it.
		if o := as("host", "run", "--tier", tier, "--", "false"); o.code != 1 {
			t.Errorf("failing run: %s", o)
		}
		if o := as("host", "run", "--tier", tier, "--", "true"); o.code != 0 {
			t.Errorf("re-entering run: %s", o)
		}
		// A mover's take, failure and release write the rollout record: the host may.
		if o := as("host", "run", "--tier", tier, "--revision", "r1", "--", "false"); o.code != 1 {
			t.Errorf("a mover's failing run: %s", o)
		}
		if s := tierOf(t, admin); !s.Rollout.Halted() {
			t.Errorf("a failed canary under ACLs: rollout %+v, want halted", s.Rollout)
		}
		if o := as("host", "run", "--tier", tier, "--revision", "r2", "--", "true"); o.code != 0 {
			t.Errorf("a mover re-entering its failed slot with a new revision: %s", o)
		}
		put(base+"max_concurrent", "1")
		if s := tierOf(t, admin); s.Current != 0 || len(s.Holders) != 0 {
			t.Errorf("the slot was not released after re-entry: current %d, holders %v", s.Current, s.Holders)
		}
		// A full tier: the host queues with a session on its own node, then gives up.
		put(base+"current", "1")
		put(base+"running/web-3", `{"holder":"web-3","state":"failed","started_at":"2026-11-21T09:15:02Z","exit_code":2,"attempts":1,"run_id":"aaaa0003"}`)
		o = as("host", "run", "--tier", tier, "--log-level", "debug", "--wait", "2s", "--", "touch", marker)
		if o.code != 75 || !strings.Contains(o.stderr.String(), "waiting") || strings.Contains(o.stderr.String(), "lacks") {
			t.Errorf("queued run: %s", o)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Error("the command ran without a slot")
		}
		checkTiers(t, admin)
	})

	t.Run("host is refused the rest", func(t *testing.T) {
		reset()
		before := aclDump(t, admin)
		for _, args := range [][]string{
			{"set-max", "--tier", tier, "5"},
			{"set-max", "--tier", tier, "--", "-1"},
			{"disable", "--tier", tier},
			{"enable", "--tier", tier, "9"},
			{"set-max", "--tier", "prod/db", "5"},
			{"run", "--tier", "prod/db", "--", "touch", marker},
		} {
			o := as("host", args...)
			if o.code != 78 || !strings.Contains(o.stderr.String(), "lacks key:") {
				t.Errorf("%q: want 78 naming the missing permission, got %s", args, o)
			}
		}
		if _, err := os.Stat(marker); err == nil {
			t.Error("the command ran in another tier")
		}
		// Straight through the API, as a compromised host would.
		kv := kvAs("host")
		for _, key := range []string{base + "max_concurrent", base + "max_saved", "chef/prod/db/max_concurrent", "chef/prod/db/current",
			"chef/prod/db/running/web-1", "chef/_reaper/critical_since", "vault/core/lock"} {
			if _, err := kv.Put(absPair(key, "-1"), nil); err == nil || !strings.Contains(err.Error(), "Permission denied") {
				t.Errorf("host wrote %s: %v", key, err)
			}
		}
		if _, err := kv.DeleteTree("chef/", nil); err == nil {
			t.Error("host deleted the whole prefix")
		}
		if after := aclDump(t, admin); after != before {
			t.Errorf("Consul changed:\nbefore %s\nafter  %s", before, after)
		}
		// Another node's session: not listed, not readable, not destroyable.
		sessions := clientOf(t, server, tokens["host"]).Session()
		list, _, err := sessions.List(nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range list {
			if s.ID == vault {
				t.Error("host lists the vault session")
			}
		}
		if _, err := sessions.Destroy(vault, nil); err == nil || !strings.Contains(err.Error(), "Permission denied") {
			t.Errorf("host destroyed the vault session: %v", err)
		}
		if _, _, err := sessions.CreateNoChecks(&api.SessionEntry{Node: "vault-1"}, nil); err == nil {
			t.Error("host created a session on another node")
		}
		if s, _, err := admin.Session().Info(vault, nil); err != nil || s == nil {
			t.Errorf("the vault session is gone: %v", err)
		}
		if p, _, err := admin.KV().Get("vault/core/lock", nil); err != nil || p == nil || p.Session != vault {
			t.Errorf("the vault lock is gone: %v %v", p, err)
		}
	})

	t.Run("operator", func(t *testing.T) {
		reset()
		put(base+"current", "1")
		put(base+"running/web-3", `{"holder":"web-3","instance_id":"i-0dead","state":"failed","started_at":"2026-11-21T09:15:02Z","exit_code":2,"attempts":1,"run_id":"aaaa0003"}`)
		for _, c := range []struct {
			args []string
			says string
		}{
			{[]string{"status"}, "web-3"},
			{[]string{"set-max", "--tier", tier, "3"}, "-> 3"},
			{[]string{"disable", "--tier", tier}, "-> 0 (disabled)"},
			{[]string{"enable", "--tier", tier}, "-> 3"},
			{[]string{"set-max", "--tier", "prod/db", "--", "-1"}, "-> -1"},
			{[]string{"release", "--tier", tier, "--holder", "web-3"}, "released web-3"},
			{[]string{"repair", "--tier", tier}, "current"},
			{[]string{"reap", "--holder", "web-9"}, ""},
		} {
			if o := as("operator", c.args...); o.code != 0 || !strings.Contains(o.stdout.String()+o.stderr.String(), c.says) {
				t.Errorf("%q: %s", c.args, o)
			}
		}
		if _, err := kvAs("operator").Put(absPair("chef/_reaper/critical_since", "{}"), nil); err == nil {
			t.Error("the operator wrote the reaper's memory")
		}
		checkTiers(t, admin)
	})

	t.Run("monitor", func(t *testing.T) {
		reset()
		put(base+"current", "1")
		put(base+"running/web-3", `{"holder":"web-3","state":"failed","started_at":"2026-11-21T09:15:02Z","exit_code":2,"attempts":1,"run_id":"aaaa0003"}`)
		if o := as("monitor", "status", "--format", "json"); o.code != 0 || !strings.Contains(o.stdout.String(), `"holder": "web-3"`) {
			t.Errorf("status: %s", o)
		}
		if o := as("monitor", "check"); o.code != 1 && o.code != 2 || !strings.Contains(o.stdout.String(), "TIERLOCK") {
			t.Errorf("check: %s", o)
		}
		before := aclDump(t, admin)
		for _, args := range [][]string{{"set-max", "--tier", tier, "3"}, {"release", "--tier", tier, "--holder", "web-3"}, {"reap", "--holder", "web-3"}} {
			if o := as("monitor", args...); o.code != 78 || !strings.Contains(o.stderr.String(), "lacks key:write") {
				t.Errorf("%q: want a refusal, got %s", args, o)
			}
		}
		if after := aclDump(t, admin); after != before {
			t.Errorf("Consul changed:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("reaper", func(t *testing.T) {
		for _, token := range []string{"reaper", "reaper-anywhere"} {
			reset()
			put(base+"current", "1")
			put(base+"running/web-3", `{"holder":"web-3","instance_id":"i-0dead","node":"gone-node","state":"failed","started_at":"2026-11-21T09:15:02Z","exit_code":2,"attempts":1,"run_id":"aaaa0003"}`)
			// prod/db keeps no max_concurrent: freeing must not need to write it.
			if _, err := admin.KV().Delete("chef/prod/db/max_concurrent", nil); err != nil {
				t.Fatal(err)
			}
			put("chef/prod/db/current", "1")
			put("chef/prod/db/running/db-3", `{"holder":"db-3","instance_id":"i-0dead2","node":"gone-node","state":"failed","started_at":"2026-11-21T09:15:02Z","exit_code":2,"attempts":1,"run_id":"aaaa0004"}`)
			if o := as(token, "reap", "--instance-id", "i-0dead"); o.code != 0 || !strings.Contains(o.stdout.String(), "freed prod/web web-3") {
				t.Errorf("%s: reap --instance-id: %s", token, o)
			}
			if o := as(token, "reap", "--consul-catalog", "--grace", "0s"); o.code != 0 || !strings.Contains(o.stdout.String(), "freed prod/db db-3") ||
				strings.Contains(o.stderr.String(), "lacks") {
				t.Errorf("%s: reap --consul-catalog: %s", token, o)
			}
			checkTiers(t, admin)
		}
		// Scoped to its tiers, the reaper cannot change a tier's settings; across the whole
		// prefix Consul's rules cannot say as much (see docs/security.md).
		before := aclDump(t, admin)
		if o := as("reaper", "set-max", "--tier", tier, "--", "-1"); o.code != 78 || !strings.Contains(o.stderr.String(), "lacks key:write") {
			t.Errorf("the reaper set max_concurrent: %s", o)
		}
		if _, err := kvAs("reaper").Put(absPair("chef/prod/db/max_concurrent", "-1"), nil); err == nil {
			t.Error("the reaper wrote max_concurrent")
		}
		if after := aclDump(t, admin); after != before {
			t.Errorf("Consul changed:\nbefore %s\nafter  %s", before, after)
		}
	})
}

// absPair is a pair at an absolute key (kvPair's are under the test tier).
func absPair(key, value string) *api.KVPair { return &api.KVPair{Key: key, Value: []byte(value)} }
