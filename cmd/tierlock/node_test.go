package main_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
	"github.com/tierlock/tierlock/internal/testkit/faultproxy"
)

// clientAgent starts a client agent that joins the package's agent.
func clientAgent(t *testing.T, name string) *consulagent.Agent {
	t.Helper()
	server, _ := agents.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	a, err := consulagent.Launch(ctx, consulagent.Need(t), consulagent.Config{Client: true, DataDir: filepath.Join(dir, "data"),
		Join: []string{server.SerfAddr}, LogPath: filepath.Join(dir, name+".log")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	return a
}

// inCatalog says whether node is registered, as the servers see it.
func inCatalog(t *testing.T, node string) bool {
	t.Helper()
	n, _, err := agents.Client(t).Catalog().Node(node, &api.QueryOptions{RequireConsistent: true})
	if err != nil {
		t.Fatal(err)
	}
	return n != nil && n.Node != nil
}

// A host's agent renamed between two runs (a first chef run sets the hostname and restarts
// the agent): the next run records the new node, never the old, even with an earlier
// version's kept node name in the state dir; and once the old node has left the catalog, the
// catalog reaper leaves the live host's failed slot alone.
func TestRunRecordsTheAgentsNodeAtThisRun(t *testing.T) {
	before, after := clientAgent(t, "before"), clientAgent(t, "after")
	// One address in front of one agent, then another: a host's local agent restarted under
	// a new node name, as CONSUL_HTTP_ADDR still finds it.
	p := faultproxy.New(before.Addr)
	t.Cleanup(p.Close)
	state := stateDir(t)

	r := run(t, cli(t, p.Addr, "run", "--tier", tier, "--holder", "web-1", "--", "false"))
	wantCode(t, r, 1)
	if rec, _ := getRecord(t, "web-1"); rec.Node != before.Node {
		t.Fatalf("first run recorded node %q, want %q", rec.Node, before.Node)
	}

	// Renamed: the same address answers with another node. What an earlier version kept in
	// the state dir (the old name, for this address, fresh) must not be used.
	p.Retarget(after.Addr)
	kept := fmt.Sprintf("v1 %s %s %d\n", p.Addr, before.Node, time.Now().Unix())
	if err := os.WriteFile(filepath.Join(state, "consul-node"), []byte(kept), 0o644); err != nil {
		t.Fatal(err)
	}
	r = run(t, cli(t, p.Addr, "run", "--tier", tier, "--holder", "web-1", "--", "false"))
	wantCode(t, r, 1)
	if rec, _ := getRecord(t, "web-1"); rec.Node != after.Node {
		t.Errorf("the run after the rename recorded node %q, want %q (the old one was %q)", rec.Node, after.Node, before.Node)
	}
	if _, err := os.Lstat(filepath.Join(state, "consul-node")); !os.IsNotExist(err) {
		t.Errorf("an earlier version's node name file is still in the state dir: %v", err)
	}

	// The old node leaves the catalog; the host's failed slot is its brake and stays. The
	// leaving agent's last anti-entropy sync can put its node back without checks, which the
	// leader takes out at its next reconciliation (a minute): the test does it at once.
	if c, err := before.Client(); err != nil {
		t.Fatal(err)
	} else if err := c.Agent().Leave(); err != nil {
		t.Fatal(err)
	}
	before.Stop()
	if _, err := agents.Client(t).Catalog().Deregister(&api.CatalogDeregistration{Node: before.Node}, nil); err != nil {
		t.Fatal(err)
	}
	if inCatalog(t, before.Node) {
		t.Fatalf("node %s still in the catalog after it left", before.Node)
	}
	r = tl(t, "reap", "--consul-catalog", "--dry-run", "--grace", "0s")
	wantCode(t, r, 0)
	if strings.Contains(r.stdout, "would free") || strings.Contains(r.stdout, "node "+after.Node) || !strings.Contains(r.stdout, "nothing to free") {
		t.Errorf("reap --consul-catalog --dry-run:\n%s", r.stdout)
	}
}

// Nothing in the state dir shares a name with a tier: a tier whose environment is named like
// the file an earlier version kept there (consul-node) runs, that file there or not.
func TestRunTierNamedLikeAStateFile(t *testing.T) {
	state := stateDir(t)
	for i, stale := range []bool{true, false} {
		if stale {
			if err := os.WriteFile(filepath.Join(state, "consul-node"), []byte("v1 127.0.0.1:8500 web-1 1764331200\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		r := tl(t, "run", "--tier", "consul-node/web", "--holder", "web-1", "--", "true")
		if r.code != 0 {
			t.Errorf("run %d (an earlier version's file there: %v): exit %d\n%s", i+1, stale, r.code, r.stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(state, "tier=consul-node", "web.lock")); err != nil {
		t.Errorf("the tier's lock file: %v", err)
	}
}
