package lock_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/consulclient"
	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// boundedKV is a client of the package agent built as the commands build theirs
// (internal/consulclient), which honours the answer limits a read sets.
func boundedKV(t *testing.T) lock.KV {
	t.Helper()
	a, _ := agent.Get(t)
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Scheme, cfg.Token, cfg.TokenFile = a.Addr, "http", "", ""
	cfg.TLSConfig = api.TLSConfig{}
	c, err := consulclient.FromConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c.KV()
}

// putKey stores key (under the test's prefix) with value.
func putKey(t *testing.T, key string, value []byte) {
	t.Helper()
	if _, err := agent.Client(t).KV().Put(&api.KVPair{Key: testkit.Prefix(t) + "/" + key, Value: value}, nil); err != nil {
		t.Fatalf("put %.80s: %v", key, err)
	}
}

// byTier reads every tier under pfx through kv.
func byTier(t *testing.T, kv lock.KV, pfx string) map[string]*lock.Snapshot {
	t.Helper()
	snaps, err := lock.ReadAll(testkit.Ctx(t), kv, lock.Options{Prefix: pfx, DefaultMax: 1})
	if err != nil {
		t.Fatalf("ReadAll: %.2000v", err)
	}
	out := map[string]*lock.Snapshot{}
	for _, s := range snaps {
		out[s.Tier] = s
	}
	return out
}

// Keys with names of 600 KB under one tier (a host of the tier may write its running/,
// queue/ and converged/) are skipped and reported, cut, for that tier alone: every tier is
// read, and the tier itself still runs and reaps. They used to fail every read of the prefix:
// a transaction that fetched one was larger than Consul takes (txn_max_req_len).
func TestJunkNames(t *testing.T) {
	db, err := lock.New(agent.Client(t).KV(), lock.Options{Prefix: testkit.Prefix(t), Tier: "db/main", DefaultMax: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Acquire(testkit.Ctx(t), req("db-1", "r1")); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 600<<10)
	for _, dir := range []string{"converged/", "running/", "queue/"} {
		putKey(t, tier+"/"+dir+long, []byte("{}"))
	}
	pfx := testkit.Prefix(t)
	for name, kv := range map[string]lock.KV{"plain client": agent.Client(t).KV(), "bounded client": boundedKV(t)} {
		t.Run(name, func(t *testing.T) {
			tiers := byTier(t, kv, pfx)
			if s := tiers["db/main"]; s == nil || len(s.Holders) != 1 || len(s.Suspect)+len(s.Problems) != 0 {
				t.Errorf("db/main: %+v", s)
			}
			web := tiers[tier]
			if web == nil || len(web.Suspect) != 1 || len(web.Problems) != 0 {
				t.Fatalf("prod/web: %+v", web)
			}
			msg := web.Suspect[0].Error()
			if !strings.HasPrefix(msg, "3 keys under test/") || !strings.Contains(msg, "/prod/web/converged/"+strings.Repeat("x", 20)) ||
				len(msg) > 600 {
				t.Errorf("prod/web's report: %.1000s", msg)
			}
		})
	}
	// The tier of the junk still works: a run takes a slot (the junk running/ key is no
	// slot), a read of it reports the junk, and an eviction frees the slot.
	web := newSem(t, 1)
	if _, err := web.Acquire(testkit.Ctx(t), req("web-1", "r1")); err != nil {
		t.Fatalf("acquire beside the junk: %.500v", err)
	}
	snap, err := web.Read(testkit.Ctx(t))
	if err != nil || len(snap.Holders) != 1 || len(snap.Suspect) != 1 {
		t.Fatalf("read: %.500v %+v", err, snap)
	}
	ev, err := web.Evict(testkit.Ctx(t), func(h string, _ schema.Record) bool { return h == "web-1" })
	if err != nil || len(ev.Slots) != 1 {
		t.Errorf("evict beside the junk: %.500v %+v", err, ev)
	}
}

// More junk names under one tier than a listing reads: that tier is returned unread, the
// cap in its Problems; the others are read (the prefix listed tier by tier).
func TestJunkNamesPastTheListing(t *testing.T) {
	db, err := lock.New(agent.Client(t).KV(), lock.Options{Prefix: testkit.Prefix(t), Tier: "db/main", DefaultMax: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Acquire(testkit.Ctx(t), req("db-1", "r1")); err != nil {
		t.Fatal(err)
	}
	put(t, "max_concurrent", "2")
	for i := range 8 { // 8 × 600 KB: more than the 4 MB a listing reads
		putKey(t, fmt.Sprintf("%s/converged/%d%s", tier, i, strings.Repeat("x", 600<<10)), []byte("{}"))
	}
	tiers := byTier(t, boundedKV(t), testkit.Prefix(t))
	if s := tiers["db/main"]; s == nil || len(s.Holders) != 1 || len(s.Suspect)+len(s.Problems) != 0 {
		t.Errorf("db/main: %+v", s)
	}
	web := tiers[tier]
	if web == nil || len(web.Problems) != 1 || !strings.Contains(web.Problems[0].Error(), "come to more than the 4 MB a listing reads") {
		t.Fatalf("prod/web: %+v", web)
	}
}

// Values of 500 KB in a tier's running/ (each within Consul's limit): they are fetched a few
// at a time (an answer of every batch stays under its cap), reported as unreadable slots, and
// the tier's other slots are read.
func TestJunkValues(t *testing.T) {
	s := newSem(t, -1)
	if _, err := s.Acquire(testkit.Ctx(t), req("web-1", "r1")); err != nil {
		t.Fatal(err)
	}
	blob := []byte(strings.Repeat("j", 500<<10))
	for i := range 10 {
		putKey(t, fmt.Sprintf("%s/running/junk-%02d", tier, i), blob)
	}
	put(t, "current", "11")
	// Another tier's values come to more than a read fetches from a tier: it is left unread.
	for i := range 40 {
		putKey(t, fmt.Sprintf("prod/junk/converged/junk-%02d", i), blob)
	}
	tiers := byTier(t, boundedKV(t), testkit.Prefix(t))
	web := tiers[tier]
	if web == nil || len(web.Holders) != 1 || len(web.Unreadable()) != 10 || web.RunningKeys != 11 ||
		!strings.Contains(web.Problems[0].Error(), "<a value of 512000 bytes") {
		t.Fatalf("prod/web: %+v", web)
	}
	if junk := tiers["prod/junk"]; junk == nil || len(junk.Problems) != 1 ||
		!strings.Contains(junk.Problems[0].Error(), "the values under "+testkit.Prefix(t)+"/prod/junk/ come to more than the 16 MB a read fetches from a tier") {
		t.Errorf("prod/junk: %+v", junk)
	}
	// Read alone, as a run's read falls back to, it is refused the same way.
	// A minute per request: what is tested is the refusal, not the speed of fetching 16 MB
	// on a machine busy with other packages' tests (it took longer than the default 10s).
	s2, err := lock.New(boundedKV(t), lock.Options{Prefix: testkit.Prefix(t), Tier: "prod/junk", RequestTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Read(testkit.Ctx(t)); !errors.Is(err, lock.ErrTooManyKeys) {
		t.Errorf("read of prod/junk: %v", err)
	}
}
