package reliability_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
)

// Single keys that could wedge a tier, each written by hand as anyone with write on the
// prefix could, then tried with the real binaries: run must not be stopped for ever by
// something check calls OK. Each case is listed in docs/reliability.md.
func TestSingleKeysThatCouldWedge(t *testing.T) {
	t.Parallel()
	server := startServer(t, consulagent.Config{})
	admin := clientOf(t, server, "")
	kv := admin.KV()
	h := newHost(t, "web-1", server.Addr)
	put := func(key, value string) {
		t.Helper()
		if _, err := kv.Put(&api.KVPair{Key: key, Value: []byte(value)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	clean := func() {
		t.Helper()
		if _, err := kv.DeleteTree(base, nil); err != nil {
			t.Fatal(err)
		}
	}
	sess, _, err := admin.Session().Create(&api.SessionEntry{TTL: "300s", Behavior: api.SessionBehaviorDelete}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Session().Destroy(sess, nil)
	bound := func(key, value string) {
		t.Helper()
		if ok, _, err := kv.Acquire(&api.KVPair{Key: key, Value: []byte(value), Session: sess}, nil); err != nil || !ok {
			t.Fatalf("acquire %s: %v %v", key, ok, err)
		}
	}
	future := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	for _, tc := range []struct {
		name      string
		setup     func()
		runExit   int    // what `run --wait 1s -- true` exits with
		checkExit int    // what `check` exits with
		says      string // part of check's output
	}{
		{"queue entry without a session", func() { put(base+"queue/zz-ghost", "") }, 0, 1, "queue/zz-ghost: queue entry without a session"},
		// Bound to a live session (the test's), but no run_id: it would rank first and never be
		// handed a slot, so the run would wait behind it and exit 75.
		{"queue entry of the wrong shape", func() { bound(base+"queue/aa-ghost", "{}") }, 0, 1, "queue/aa-ghost: queue entry names no run_id"},
		{"key exactly at queue/", func() { put(base+"queue/", "x") }, 0, 1, `queue/: lock: invalid name: queue holder`},
		{"queue sub-directory", func() { put(base+"queue/a/b", "x") }, 0, 1, `queue/a/b: lock: invalid name: queue holder "a/b"`},
		{"junk max_saved", func() { put(base+"max_saved", "abc") }, 0, 1, `max_saved: "abc" is not an integer`},
		{"running record in the future", func() {
			put(base+"current", "1")
			put(base+"running/ghost", fmt.Sprintf(`{"holder":"ghost","state":"running","started_at":%q}`, future))
		}, 75, 2, "running/ghost: started_at " + future},
		{"running key of a name that is no host", func() {
			put(base+"current", "1")
			put(base+"running/not-a-host", time.Now().Add(-3*time.Hour).UTC().Format(time.RFC3339))
		}, 75, 2, "not-a-host running for 3h"},
		{"running sub-directory", func() { put(base+"current", "1"); put(base+"running/a/b", "x") }, 78, 2, `running/a/b: lock: invalid name: holder "a/b"`},
		{"junk current", func() { put(base+"current", "many") }, 78, 2, `current: "many" is not an integer`},
		{"current far too high", func() { put(base+"current", "1000000") }, 75, 2, "current is 1000000 but there are 0 running/ keys"},
		{"max_concurrent huge", func() { put(base+"max_concurrent", "99999999999999999999") }, 78, 2, "max_concurrent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clean()
			tc.setup()
			o := h.run(t, "run", "--tier", tier, "--wait", "1s", "--", "true")
			if o.code != tc.runExit {
				t.Errorf("run: want exit %d, got %s", tc.runExit, o)
			}
			c := h.run(t, "check")
			if c.code != tc.checkExit || !strings.Contains(c.stdout.String(), tc.says) {
				t.Errorf("check: want exit %d saying %q, got %s", tc.checkExit, tc.says, c)
			}
			s := h.run(t, "status", "--tier", tier)
			if s.code != 0 {
				t.Errorf("status: %s", s)
			}
			t.Logf("run exit %d; check exit %d: %s", o.code, c.code, strings.TrimSpace(c.stdout.String()))
		})
	}

	// A queue head that has waited longer than a run can take: a live session that is no
	// waiter (here, one the test keeps alive) holds the head while the tier is full.
	t.Run("queue head waiting for ever", func(t *testing.T) {
		clean()
		put(base+"max_concurrent", "1")
		id, _, err := admin.Session().Create(&api.SessionEntry{TTL: "60s", Behavior: api.SessionBehaviorDelete}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Session().Destroy(id, nil)
		since := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
		if ok, _, err := kv.Acquire(&api.KVPair{Key: base + "queue/old-waiter", Value: []byte(fmt.Sprintf(`{"holder":"old-waiter","run_id":"r0","since":%q}`, since)), Session: id}, nil); err != nil || !ok {
			t.Fatalf("acquire: %v %v", ok, err)
		}
		c := h.run(t, "check")
		if c.code != 1 || !strings.Contains(c.stdout.String(), "queue/old-waiter: first in the queue, waiting for 1h00m") {
			t.Errorf("check: %s", c)
		}
		t.Logf("check: %s", strings.TrimSpace(c.stdout.String()))
	})
}
