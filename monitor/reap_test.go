package monitor_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/internal/testkit/faultproxy"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
	"github.com/tierlock/tierlock/monitor"
)

// The slots of one dead instance, in several tiers, are freed; nobody else's are; a second
// reaping (a repeated or late event) frees nothing and is not an error.
func TestReapByInstanceAcrossTiers(t *testing.T) {
	take(t,
		slot{"prod/web", "web-3", "i-0dead", ""},
		slot{"prod/web", "web-4", "i-0live", ""},
		slot{"prod/db", "web-3", "i-0dead", ""},
		slot{"stage/cache", "web-3", "i-0dead", ""},
		slot{"stage/cache", "web-9", "i-0live2", ""},
		// Held under the instance's own (resource-based) host name, without an instance id.
		slot{"ops/metrics", "i-0dead.eu-west-1.compute.internal", "", ""},
		// A longer id that merely starts like it is another instance.
		slot{"ops/metrics", "i-0deadbeef", "", ""},
	)
	r := newReaper(t, nil)

	look, err := r.Find(testkit.Ctx(t), monitor.ByInstance("i-0dead"))
	found := look.Freed
	if err != nil {
		t.Fatal(err)
	}
	want := "ops/metrics:i-0dead.eu-west-1.compute.internal prod/db:web-3 prod/web:web-3 stage/cache:web-3"
	if got := freedList(found); got != want {
		t.Errorf("find: %s\nwant %s", got, want)
	}
	if n := len(held(t)); n != 7 {
		t.Errorf("find wrote: %d slots left, want 7", n)
	}

	rep, err := r.Reap(testkit.Ctx(t), monitor.ByInstance("i-0dead"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := freedList(rep.Freed); got != want {
		t.Errorf("reap: %s\nwant %s", got, want)
	}
	if got, want := strings.Join(held(t), " "), "ops/metrics:i-0deadbeef prod/web:web-4 stage/cache:web-9"; got != want {
		t.Errorf("left: %s\nwant %s", got, want)
	}

	again, err := r.Reap(testkit.Ctx(t), monitor.ByInstance("i-0dead"), nil)
	if err != nil || len(again.Freed) != 0 || len(again.Unread) != 0 {
		t.Errorf("repeated reap: %v, %v", again, err)
	}
}

// A holder is found by name even where its value cannot be read (older tooling, a hand edit).
func TestReapByHolderIncludesUnreadableSlots(t *testing.T) {
	take(t, slot{"prod/web", "web-3", "i-1", ""}, slot{"prod/web", "web-4", "i-2", ""})
	for _, kv := range []*api.KVPair{
		{Key: testkit.Prefix(t) + "/prod/db/running/web-3", Value: []byte("garbage")},
		{Key: testkit.Prefix(t) + "/prod/db/current", Value: []byte("1")},
	} {
		if _, err := agent.Client(t).KV().Put(kv, nil); err != nil {
			t.Fatal(err)
		}
	}
	r := newReaper(t, nil)
	look, err := r.Find(testkit.Ctx(t), monitor.ByHolder("web-3"))
	found := look.Freed
	if err != nil || freedList(found) != "prod/db:web-3 prod/web:web-3" {
		t.Errorf("find: %s, %v", freedList(found), err)
	}
	rep, err := r.Reap(testkit.Ctx(t), monitor.ByHolder("web-3"), nil)
	if err != nil || freedList(rep.Freed) != "prod/db:web-3 prod/web:web-3" {
		t.Errorf("reap: %s, %v", freedList(rep.Freed), err)
	}
	if got := strings.Join(held(t), " "); got != "prod/web:web-4" {
		t.Errorf("left: %s", got)
	}
}

func TestReapNothingUnderAnEmptyPrefix(t *testing.T) {
	rep, err := newReaper(t, nil).Reap(testkit.Ctx(t), monitor.ByInstance("i-0abc"), nil)
	if err != nil || len(rep.Freed) != 0 || len(rep.Unread) != 0 {
		t.Errorf("reap: %v, %v", rep, err)
	}
}

func TestNewReaperRefusesABadPrefix(t *testing.T) {
	if _, err := monitor.NewReaper(agent.Client(t).KV(), monitor.Options{Prefix: "chef/../x"}); err == nil ||
		!strings.Contains(err.Error(), `".."`) {
		t.Errorf("err = %v, want one naming the bad element", err)
	}
}

// A dead host's queue entry (in a tier where it waited while its session had not yet expired)
// is found and removed with its slots.
func TestReapRemovesQueueEntries(t *testing.T) {
	take(t, slot{"prod/web", "web-3", "i-0dead", ""})
	full, err := lock.New(agent.Client(t).KV(), lock.Options{Prefix: testkit.Prefix(t), Tier: "prod/db", DefaultMax: 1, Sessions: agent.Client(t).Session()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := full.Acquire(testkit.Ctx(t), lock.Request{Record: schema.Record{Holder: "db-1", RunID: "r-db"}}); err != nil {
		t.Fatal(err)
	}
	waiting, stop := context.WithCancel(testkit.Ctx(t))
	done := make(chan error, 1)
	go func() {
		_, err := full.Acquire(waiting, lock.Request{
			Record:    schema.Record{Holder: "web-3", RunID: "r-wait", InstanceID: "i-0dead"},
			WaitUntil: time.Now().Add(time.Minute),
		})
		done <- err
	}()
	defer func() { stop(); <-done }()
	testkit.Eventually(t, "web-3 to queue", func() bool {
		snap, err := full.Read(testkit.Ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		return len(snap.Queue) == 1
	})

	r := newReaper(t, nil)
	look, err := r.Find(testkit.Ctx(t), monitor.ByInstance("i-0dead"))
	found := look.Freed
	if err != nil || freedList(found) != "prod/db:web-3 prod/web:web-3" || !found[0].Queued || found[1].Queued {
		t.Fatalf("find: %+v, %v", found, err)
	}
	rep, err := r.Reap(testkit.Ctx(t), monitor.ByInstance("i-0dead"), nil)
	if freed := rep.Freed; err != nil || freedList(freed) != "prod/db:web-3 prod/web:web-3" || !freed[0].Queued || freed[0].RunID != "r-wait" {
		t.Fatalf("reap: %+v, %v", freed, err)
	}
	if got := strings.Join(held(t), " "); got != "prod/db:db-1" {
		t.Errorf("left: %s", got)
	}
}

// A write whose answer is lost after Consul applied it fails the attempt; the caller's do makes
// it again, and Reap reads again to learn what was freed: everything the dead host held, even
// what the lost answer freed, and nothing of the bystander's. Without a failure, do is asked
// for the reaping alone.
func TestReapReportsWhatALostAnswerFreed(t *testing.T) {
	take(t,
		slot{"prod/web", "web-3", "i-0dead", ""},
		slot{"prod/web", "web-4", "i-0live", ""},
		slot{"prod/db", "web-3", "i-0dead", ""},
		slot{"stage/cache", "web-3", "i-0dead", ""},
	)
	a, _ := agent.Get(t)
	proxy := faultproxy.New(a.Addr)
	t.Cleanup(proxy.Close)
	writes := 0
	proxy.SetRule(func(r *http.Request) int {
		if faultproxy.IsWriteTxn(r) {
			if writes++; writes == 1 {
				return faultproxy.DropAfterCommit
			}
		}
		return faultproxy.Pass
	})
	cfg := api.DefaultConfig()
	cfg.Address = proxy.Addr
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := monitor.NewReaper(c.KV(), monitor.Options{Prefix: testkit.Prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	do := func(ctx context.Context, what string, op func(context.Context) error) (err error) {
		steps = append(steps, what)
		for range 3 {
			if err = op(ctx); err == nil {
				return nil
			}
		}
		return err
	}

	rep, err := r.Reap(testkit.Ctx(t), monitor.ByInstance("i-0dead"), do)
	if err != nil {
		t.Fatal(err)
	}
	if proxy.Injected() != 1 {
		t.Errorf("%d faults injected, want 1", proxy.Injected())
	}
	if got, want := freedList(rep.Freed), "prod/db:web-3 prod/web:web-3 stage/cache:web-3"; got != want {
		t.Errorf("reported freed: %s\nwant %s", got, want)
	}
	if got, want := strings.Join(steps, ", "), "reap, read what was freed"; got != want {
		t.Errorf("steps: %s, want %s", got, want)
	}
	if got := strings.Join(held(t), " "); got != "prod/web:web-4" {
		t.Errorf("left: %s", got)
	}

	take(t, slot{"prod/web", "web-5", "i-0dead2", ""})
	steps = nil
	rep, err = r.Reap(testkit.Ctx(t), monitor.ByInstance("i-0dead2"), do)
	if err != nil || freedList(rep.Freed) != "prod/web:web-5" {
		t.Errorf("reap without a fault: %s, %v", freedList(rep.Freed), err)
	}
	if got := strings.Join(steps, ", "); got != "reap" {
		t.Errorf("steps without a fault: %s, want reap", got)
	}
}
