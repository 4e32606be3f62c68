package lock_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// seedHolders writes n failed slots (h-0000 …) and current n under the test's tier, in
// transactions well under Consul's limit.
func seedHolders(t *testing.T, n int, maxc string) {
	t.Helper()
	base := testkit.Prefix(t) + "/" + tier + "/"
	ops := api.KVTxnOps{{Verb: api.KVSet, Key: base + "max_concurrent", Value: []byte(maxc)}}
	flush := func() {
		if ok, resp, _, err := agent.Client(t).KV().Txn(ops, nil); err != nil || !ok {
			t.Fatalf("seed: %v %+v", err, resp)
		}
		ops = nil
	}
	for i := range n {
		ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: base + fmt.Sprintf("running/h-%04d", i),
			Value: []byte(fmt.Sprintf(`{"holder":"h-%04d","run_id":"r%d","state":"failed","exit_code":1,"attempts":1,"started_at":"2026-01-01T00:00:00Z","instance_id":"i-%d"}`, i, i, i%2))})
		if len(ops) == 64 {
			flush()
		}
	}
	ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: base + "current", Value: []byte(fmt.Sprint(n))})
	flush()
}

// Every kind of write works on tiers around Consul's limit of 128 operations per
// transaction, and far above it, keeping the invariant: the emergency brake (disable) most of
// all must work on the biggest tiers.
func TestBigTiers(t *testing.T) {
	for _, n := range []int{120, 123, 124, 125, 126, 127, 128, 130, 600} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			seedHolders(t, n, "-1")
			s := newSem(t, 1)
			c := testkit.Ctx(t)
			step := func(what string, err error) {
				t.Helper()
				if err != nil {
					t.Fatalf("%s at %d holders: %v", what, n, err)
				}
				testkit.CheckInvariant(t, agent.Client(t), testkit.Prefix(t))
			}
			_, err := s.Disable(c)
			step("disable", err)
			if v := values(t); v["max_concurrent"] != "0" || v["max_saved"] != "-1" {
				t.Fatalf("after disable: max %q saved %q", v["max_concurrent"], v["max_saved"])
			}
			_, err = s.Enable(c, nil)
			step("enable", err)
			_, err = s.SetMax(c, n+5)
			step("set-max", err)
			// A holder re-enters its slot, fails, and a new one takes a slot.
			slot, err := s.Acquire(c, req("h-0000", "again"))
			step("re-enter", err)
			if !slot.Reentered {
				t.Errorf("h-0000 did not re-enter: %+v", slot)
			}
			step("mark failed", s.MarkFailed(c, slot, 2))
			fresh, err := s.Acquire(c, req("new-1", "n1"))
			step("take", err)
			step("mark interrupted", s.MarkInterrupted(c, fresh, nil))
			again, err := s.Acquire(c, req("new-1", "n2"))
			step("re-enter after interrupt", err)
			step("release", s.Release(c, again))
			_, err = s.ForceRelease(c, "h-0001", "r1")
			step("force release", err)
			// Drift, then repair.
			put(t, "current", "3")
			_, err = s.Repair(c)
			step("repair", err)
			// The tier full: a new holder joins the queue and takes a slot from it once one is
			// freed.
			_, err = s.SetMax(c, n-1)
			step("set-max to full", err)
			got := make(chan error, 1)
			go func() {
				r := req("waiter", "w1")
				r.WaitUntil = time.Now().Add(20 * time.Second)
				_, err := s.Acquire(c, r)
				got <- err
			}()
			waitQueued(t, "waiter")
			_, err = s.ForceRelease(c, "h-0002", "r2")
			step("force release for the waiter", err)
			step("take from the queue", <-got)
			// Reap half the holders, then every one.
			ev, err := s.Evict(c, func(_ string, r schema.Record) bool { return r.InstanceID == "i-1" })
			step("evict half", err)
			if len(ev.Slots) < n/2-2 {
				t.Errorf("evicted %d slots of instance i-1, want about %d", len(ev.Slots), n/2)
			}
			_, err = s.Evict(c, func(string, schema.Record) bool { return true })
			step("evict all", err)
			if v := values(t); v["current"] != "0" {
				t.Errorf("after evicting every slot: current %q", v["current"])
			}
		})
	}
}

// waitQueued waits until holder has a queue entry in the test's tier.
func waitQueued(t *testing.T, holder string) {
	t.Helper()
	testkit.Eventually(t, holder+" to queue", func() bool {
		_, ok := values(t)["queue/"+holder]
		return ok
	})
}

// Names made of the words of Consul's messages are names like any other: a race on them is
// still a race, and a write is still a write.
func TestNamesWithConsulsWords(t *testing.T) {
	for _, holder := range []string{"exists", "stale", "doesn-t-exist", "index", "held", "lock", "Permission", "denied"} {
		t.Run(holder, func(t *testing.T) {
			s, err := lock.New(agent.Client(t).KV(), lock.Options{Prefix: testkit.Prefix(t), Tier: "exists/exists", DefaultMax: 1, Sessions: agent.Client(t).Session()})
			if err != nil {
				t.Fatal(err)
			}
			c := testkit.Ctx(t)
			slot, err := s.Acquire(c, req(holder, "r1"))
			if err != nil {
				t.Fatal(err)
			}
			// Another holder waits in the queue (a check-not-exists and a lock on names with
			// the words), then gives up: ErrNoSlot, not a refusal.
			r := req("exists-too", "r2")
			r.WaitUntil = time.Now().Add(300 * time.Millisecond)
			if _, err := s.Acquire(c, r); !errors.Is(err, lock.ErrNoSlot) {
				t.Errorf("the second holder: %v, want ErrNoSlot", err)
			}
			if err := s.Release(c, slot); err != nil {
				t.Fatal(err)
			}
			if err := s.Release(c, slot); err != nil {
				t.Errorf("a second release (released by this run already): %v, want nil", err)
			}
			if _, err := s.Disable(c); err != nil || strings.Contains(fmt.Sprint(err), "rejected") {
				t.Errorf("disable: %v", err)
			}
		})
	}
}

// Holders racing on a tier and names full of Consul's words: every lost race is told from a
// refusal by its whole message, so none of them is taken for one (ErrRejected).
func TestRacesOnNamesWithConsulsWords(t *testing.T) {
	s, err := lock.New(agent.Client(t).KV(), lock.Options{Prefix: testkit.Prefix(t), Tier: "exists/exists", DefaultMax: 2, Sessions: agent.Client(t).Session()})
	if err != nil {
		t.Fatal(err)
	}
	c := testkit.Ctx(t)
	errs := make(chan error, 6)
	for i := range 6 {
		go func() {
			holder := fmt.Sprintf("exists-index-is-stale-%d", i)
			for round := range 8 {
				r := req(holder, fmt.Sprintf("r%d", round))
				r.WaitUntil = time.Now().Add(20 * time.Second)
				slot, err := s.Acquire(c, r)
				if err == nil {
					err = s.Release(c, slot)
				}
				if err != nil {
					errs <- fmt.Errorf("%s round %d: %w", holder, round, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 6 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// A tier of 10,000 hosts, every one converged once and waiting now: 20,000 keys, which a
// read took for junk when the cap was 4096. status, check and the reaper read it whole
// (ReadAll), a holder that finds it full waits in line behind all of them and gives up when
// its wait ends, and the reaper frees a host's slot there.
func TestTenThousandHosts(t *testing.T) {
	const hosts = 10000
	start := time.Now()
	c := testkit.Ctx(t)
	client := agent.Client(t)
	base := testkit.Prefix(t) + "/" + tier + "/"
	id, _, err := client.Session().Create(&api.SessionEntry{TTL: "60s", Behavior: api.SessionBehaviorDelete}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = client.Session().Destroy(id, nil) })
	var ops api.KVTxnOps
	flush := func() {
		if ok, resp, _, err := client.KV().Txn(ops, nil); err != nil || !ok {
			t.Fatalf("seed: %v %+v", err, resp)
		}
		ops = nil
	}
	for i := range hosts {
		h := fmt.Sprintf("web-%05d", i)
		ops = append(ops,
			&api.KVTxnOp{Verb: api.KVSet, Key: base + "converged/" + h, Value: []byte(fmt.Sprintf(
				`{"holder":%q,"converged_at":"2026-12-01T00:00:%02dZ","run_id":"c%d","duration_seconds":42,"instance_id":"i-%d","node":%q}`, h, i%60, i, i, h))},
			&api.KVTxnOp{Verb: api.KVLock, Key: base + "queue/" + h, Session: id, Value: []byte(fmt.Sprintf(
				`{"holder":%q,"run_id":"w%d","since":"2026-12-06T00:00:00Z","converged_at":"2026-12-01T00:00:%02dZ","hostname":"%s.prod","pid":4242,"command":"chef-client","version":"tierlock 0.1.0","protocol":2}`, h, i, i%60, h))})
		if len(ops) == 128 {
			flush()
		}
	}
	ops = append(ops,
		&api.KVTxnOp{Verb: api.KVSet, Key: base + "max_concurrent", Value: []byte("1")},
		&api.KVTxnOp{Verb: api.KVSet, Key: base + "current", Value: []byte("1")},
		&api.KVTxnOp{Verb: api.KVSet, Key: base + "running/web-busy", Value: []byte(`{"holder":"web-busy","run_id":"b1","state":"failed","exit_code":1,"attempts":1,"started_at":"2026-12-06T00:00:00Z","instance_id":"i-busy"}`)})
	flush()
	step := func(what string) {
		t.Logf("%s: %s", what, time.Since(start).Round(time.Millisecond))
		start = time.Now()
	}
	step("seeded")

	all, err := lock.ReadAll(c, client.KV(), lock.Options{Prefix: testkit.Prefix(t), RequestTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || len(all[0].Problems) != 0 || len(all[0].Queue) != hosts || len(all[0].Converged) != hosts || all[0].Held() != 1 {
		t.Fatalf("ReadAll of %d hosts: %d tiers, problems %v", hosts, len(all), all[0].Problems)
	}

	step("read whole (ReadAll)")
	// A consistent read of 20,000 keys under the race detector, beside cmd/tierlock's tests in
	// make test, outlasted the default 10s bound of a request once (the eviction's): this test
	// is about what lock does with 10,000 hosts, not about that bound.
	s, err := lock.New(client.KV(), lock.Options{Prefix: testkit.Prefix(t), Tier: tier, DefaultMax: 1,
		Sessions: client.Session(), RequestTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	r := req("web-late", "l1")
	r.WaitUntil = time.Now().Add(time.Second)
	_, err = s.Acquire(c, r)
	if !errors.Is(err, lock.ErrNoSlot) || !strings.Contains(err.Error(), fmt.Sprintf("%d waiting", hosts)) {
		t.Fatalf("a holder in the full tier: %v, want ErrNoSlot with %d waiting", err, hosts)
	}
	step("a newcomer waited 1s and gave up")
	// The reaper's way: every key of instance i-busy goes; the slot it frees goes to the
	// first in line (all converged at :00 rank by arrival: web-00000 joined first).
	ev, err := s.Evict(c, func(_ string, rec schema.Record) bool { return rec.InstanceID == "i-busy" })
	if err != nil || len(ev.Slots) != 1 {
		t.Fatalf("evict: %v %+v", err, ev)
	}
	step("evicted a holder, its slot handed over")
	testkit.CheckInvariant(t, client, testkit.Prefix(t))
	if v := values(t); v["current"] != "1" || !strings.Contains(v["running/web-00000"], `"run_id":"w0"`) {
		t.Errorf("after the eviction: current %q, web-00000's slot %q", v["current"], v["running/web-00000"])
	}
}
