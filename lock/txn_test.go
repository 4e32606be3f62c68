package lock

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/lock/schema"
)

// pairsOn returns a maker of s's tier's keys as Consul lists them, each at the next index.
func pairsOn(s *Semaphore) func(key, value string) *api.KVPair {
	idx := uint64(10)
	return func(key, value string) *api.KVPair {
		idx++
		return &api.KVPair{Key: s.base + key, Value: []byte(value), ModifyIndex: idx, CreateIndex: idx}
	}
}

// tierWith is a snapshot of a tier with n running/ keys (holder-0000 …), max_concurrent max,
// max_saved 3, current n and one waiter, as Consul would list it.
func tierWith(t *testing.T, s *Semaphore, n, maxc int) *Snapshot {
	t.Helper()
	pair := pairsOn(s)
	waiter := pair(queueDir+"waiter", `{"holder":"waiter","run_id":"w1"}`)
	waiter.Session = "s" // tierlock's entries are session-bound; unbound ones are ignored
	pairs := api.KVPairs{pair(keyMax, strconv.Itoa(maxc)), pair(keyCurrent, strconv.Itoa(n)), pair(keySaved, "3"), waiter}
	for i := range n {
		h := fmt.Sprintf("holder-%04d", i)
		pairs = append(pairs, pair(runningDir+h, fmt.Sprintf(`{"holder":%q,"run_id":"r%d","state":"failed","started_at":"2026-11-21T09:15:02Z"}`, h, i)))
	}
	snap := newSnapshot(s.opts.Tier, 1, OrderConverged, pairs, s.base)
	if len(snap.Problems) > 0 {
		t.Fatalf("test tier: %v", snap.Problems)
	}
	return snap
}

// Every kind of write, at any number of holders, fits Consul's limit, keeps its mandatory
// operations (the check on max_concurrent, the check-and-set on current or the check of its
// index, its own writes), and carries every optional guard while they fit.
func TestTxnFitsAtAnyNumberOfHolders(t *testing.T) {
	s, err := New(nil, Options{Tier: "exists/exists"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 21, 9, 15, 2, 0, time.UTC)
	rec := &schema.Record{Holder: "new", RunID: "n1", State: schema.StateRunning, StartedAt: now, UpdatedAt: now, Attempts: 1}
	kinds := []struct {
		name      string
		mandatory int // operations that must go in, besides a hand-over
		guarded   func(n int) int
		build     func(snap *Snapshot) (*txn, error)
		after     func(n int) int // holders the write leaves (-1: it hands nothing over)
		limit     int             // max_concurrent after the write (0: the tier's 2)
	}{
		{"take", 3, func(n int) int { return n }, func(snap *Snapshot) (*txn, error) { return s.acquireTxn(snap, "new", rec, nil) }, func(n int) int { return n + 1 }, 0},
		{"take from the queue", 4, func(n int) int { return n }, func(snap *Snapshot) (*txn, error) { return s.acquireTxn(snap, "waiter", rec, nil) }, func(int) int { return -1 }, 0},
		{"re-enter", 3, func(n int) int { return max(n-1, 0) }, func(snap *Snapshot) (*txn, error) {
			return s.acquireTxn(snap, "holder-0000", rec, nil)
		}, func(n int) int { return max(n, 1) }, 0},
		{"mark failed", 3, func(n int) int { return max(n-1, 0) }, func(snap *Snapshot) (*txn, error) {
			return s.changeTxn(snap, change{holder: "holder-0000", rec: rec})
		}, func(n int) int { return max(n, 1) }, 0},
		{"release", 3, func(n int) int { return max(n-1, 0) }, func(snap *Snapshot) (*txn, error) {
			return s.changeTxn(snap, change{holder: "holder-0000", delete: true})
		}, func(n int) int { return max(n-1, 0) }, 0},
		{"repair", 2, func(n int) int { return n }, func(snap *Snapshot) (*txn, error) { return s.changeTxn(snap, change{}) }, func(n int) int { return n }, 0},
		{"set-max", 3, func(n int) int { return n }, func(snap *Snapshot) (*txn, error) {
			return s.withWake(snap, 7, s.set(snap, keyMax, "7"))
		}, func(n int) int { return n }, 7},
		// Disabling deletes the queue entry, so that its waiter wakes and leaves.
		{"disable", 5, func(n int) int { return n }, func(snap *Snapshot) (*txn, error) {
			return s.withWake(snap, 0, s.set(snap, keyMax, "0"), s.set(snap, keySaved, "2"))
		}, func(int) int { return -1 }, 0},
		{"enable", 4, func(n int) int { return n }, func(snap *Snapshot) (*txn, error) {
			return s.withWake(snap, 2, s.set(snap, keyMax, "2"), s.del(snap, keySaved))
		}, func(n int) int { return n }, 0},
		{"join the queue", 3, func(int) int { return 0 }, func(*Snapshot) (*txn, error) {
			return &txn{writes: api.KVTxnOps{{Verb: api.KVDelete, Key: "k"}, {Verb: api.KVLock, Key: "k"}},
				reads: api.KVTxnOps{{Verb: api.KVGetTree, Key: s.base}}}, nil
		}, func(int) int { return -1 }, 0},
	}
	for _, n := range []int{0, 1, 100, 121, 122, 123, 124, 125, 126, 127, 128, 129, 130, 600, 5000} {
		for _, k := range kinds {
			t.Run(fmt.Sprintf("%s/%d holders", k.name, n), func(t *testing.T) {
				snap := tierWith(t, s, n, 2)
				tx, err := k.build(snap)
				if err != nil {
					t.Fatal(err)
				}
				ops, err := tx.ops()
				if err != nil {
					t.Fatal(err)
				}
				mandatory, guarded := k.mandatory, k.guarded(n)
				limit := k.limit
				if limit == 0 {
					limit = 2
				}
				granted := false
				if after := k.after(n); after >= 0 && after < limit {
					mandatory += opsPerGrant // a slot free under max 2: handed to the waiter in the same write
					granted = true
				}
				// A write that leaves the number of holders as it was touches neither current
				// nor the others' keys: a failure recorded, a re-entry, a release handed over.
				preserving := false
				switch k.name {
				case "re-enter", "mark failed":
					preserving = n >= 1 && !granted
				case "release":
					preserving = n >= 1 && granted
				}
				if preserving {
					mandatory, guarded = mandatory-1, 0
				}
				if k.name == "release" && n >= 1 {
					mandatory++ // the check that the slot is still there (a delete-cas of a gone key succeeds)
				}
				if tx.mandatory() != mandatory {
					t.Errorf("%d mandatory operations, want %d", tx.mandatory(), mandatory)
				}
				want := min(maxTxnOps, mandatory+guarded)
				if len(ops) != want {
					t.Errorf("%d operations, want %d (limit %d)", len(ops), want, maxTxnOps)
				}
				// The guard on current: a check-and-set of it, or a check of its index.
				cur := false
				for _, op := range ops {
					if op.Key == s.base+keyCurrent && (op.Verb == api.KVCAS || op.Verb == api.KVCheckIndex) {
						cur = true
					}
				}
				if cur == preserving && k.name != "join the queue" {
					t.Errorf("check of current's index among %d operations: %v, want %v", len(ops), cur, !preserving)
				}
			})
		}
	}
}

// Eviction takes as many transactions as it needs, each within the limit, each keeping the
// invariant: the current it writes is the number of running/ keys it leaves.
func TestEvictTxnBatches(t *testing.T) {
	s, err := New(nil, Options{Tier: "t/s"})
	if err != nil {
		t.Fatal(err)
	}
	all := func(string, schema.Record) bool { return true }
	for _, n := range []int{1, 125, 126, 127, 128, 600, 5000} {
		snap := tierWith(t, s, n, 2)
		ev, tx, more := s.evictTxn(snap, all)
		ops, err := tx.ops()
		if err != nil {
			t.Fatalf("%d holders: %v", n, err)
		}
		removed := len(ev.Slots)
		// Room for the check of max_concurrent, the write of current, and the read-back
		// that hands freed slots over (commit).
		room := maxTxnOps - 2 - len(s.treeOps(""))
		if !tx.free || len(ops) > maxTxnOps || tx.mandatory()+len(s.treeOps("")) > maxTxnOps || removed+len(ev.Waiters) != min(n+1, room) || more != (n+1 > room) {
			t.Errorf("%d holders: %d operations, %d slots and %d waiters removed, more %v", n, len(ops), removed, len(ev.Waiters), more)
		}
		last := ops[len(ops)-1]
		if last.Key != s.base+keyCurrent || string(last.Value) != strconv.Itoa(n-removed) {
			t.Errorf("%d holders: last op %s %s=%s, want current=%d", n, last.Verb, last.Key, last.Value, n-removed)
		}
	}
}

func TestTxnRefusesTooManyMandatoryOps(t *testing.T) {
	tx := &txn{writes: make(api.KVTxnOps, maxTxnOps+1)}
	if _, err := tx.ops(); err == nil {
		t.Error("a transaction of 129 mandatory operations was built")
	}
}

// A release hands its slot to the head of the line; one that lost the head to another release
// at the same moment (spread) hands it as far down the line as it is down the holders.
func TestGrantsSpreadOnRetry(t *testing.T) {
	s, err := New(nil, Options{Tier: "t/s"})
	if err != nil {
		t.Fatal(err)
	}
	pair := pairsOn(s)
	pairs := api.KVPairs{pair(keyMax, "3"), pair(keyCurrent, "3")}
	for i, started := range []string{"09:00:00", "09:00:00", "09:00:01"} {
		h := fmt.Sprintf("h%d", i)
		pairs = append(pairs, pair(runningDir+h, fmt.Sprintf(`{"holder":%q,"run_id":"r%d","state":"running","started_at":"2026-11-21T%sZ"}`, h, i, started)))
	}
	for i := range 4 {
		w := pair(queueDir+fmt.Sprintf("w%d", i), fmt.Sprintf(`{"holder":"w%d","run_id":"q%d"}`, i, i))
		w.Session = "s"
		pairs = append(pairs, w)
	}
	snap := newSnapshot("t/s", 1, OrderArrival, pairs, s.base)
	for _, tt := range []struct {
		holder string
		spread bool
		want   string
	}{
		{"h1", false, "w0"}, {"h0", true, "w0"}, {"h1", true, "w1"}, {"h2", true, "w2"},
	} {
		reach := 0
		if tt.spread {
			reach = snap.holderRank(tt.holder)
		}
		_, to, _, err := s.grants(snap, tt.holder, 2, reach, nil, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(to) != 1 || !to[tt.want] {
			t.Errorf("release by %s (spread %v) hands over to %v, want %s", tt.holder, tt.spread, to, tt.want)
		}
	}
}

// A write that lost a race is decided again on the same read only when all it lost are
// waiters another write handed a slot first: each one's entry check failed and so did the
// write of its running/ key. Anything else (a waiter that left or was nudged and still
// waits, a holder's key, current) means reading again.
func TestTakenWaiters(t *testing.T) {
	s, err := New(nil, Options{Tier: "prod/web"})
	if err != nil {
		t.Fatal(err)
	}
	snap := tierWith(t, s, 2, 2)
	q, r := s.base+queueDir+"waiter", s.base+runningDir+"waiter"
	for _, tc := range []struct {
		name string
		lost []string
		want bool
	}{
		{"handed a slot by another write", []string{q, r}, true},
		{"its slot alone", []string{r}, true},
		{"the entry alone: it left, or was nudged", []string{q}, false},
		{"and a holder's key", []string{q, r, s.base + runningDir + "holder-0000"}, false},
		{"current", []string{s.base + keyCurrent}, false},
		{"a waiter not in the line", []string{s.base + queueDir + "stranger", s.base + runningDir + "stranger"}, false},
		{"nothing named", nil, false},
	} {
		got := s.takenWaiters(snap, tc.lost)
		if (got != nil) != tc.want || (tc.want && !got["waiter"]) {
			t.Errorf("%s: %v, want taken: %v", tc.name, got, tc.want)
		}
		if got != nil {
			if left := snap.without(got); len(left.Queue) != 0 || len(snap.Queue) != 1 {
				t.Errorf("%s: without: %d waiters left (snapshot itself %d), want 0 (1)", tc.name, len(left.Queue), len(snap.Queue))
			}
		}
	}
}

// The safety net's period grows with the line a waiter joined, so that the line looks about
// netLooks times a second, between a minute and Consul's longest blocking query.
func TestSafetyNetGrowsWithTheLine(t *testing.T) {
	for _, c := range []struct {
		n    int
		want time.Duration
	}{{0, time.Minute}, {1, time.Minute}, {240, time.Minute}, {241, 60250 * time.Millisecond},
		{2000, 500 * time.Second}, {2400, 10 * time.Minute}, {100000, 10 * time.Minute}} {
		if got := safetyNet(c.n, minNet); got != c.want {
			t.Errorf("safetyNet(%d) = %s, want %s", c.n, got, c.want)
		}
	}
	if got := safetyNet(3, time.Second); got != time.Second {
		t.Errorf("safetyNet(3, 1s) = %s, want the least given", got)
	}
}

// A release in a wide tier reaches as far down the head as its holder is down those admitted
// with it: runs running that started before it, by at most a tenth of its run so far. A failed
// run never releases, and a run started long before is no part of the cohort.
func TestCohortRank(t *testing.T) {
	s, err := New(nil, Options{Tier: "t/s"})
	if err != nil {
		t.Fatal(err)
	}
	pair := pairsOn(s)
	pairs := api.KVPairs{pair(keyMax, "20"), pair(keyCurrent, "5")}
	for _, h := range []struct{ name, state, started string }{
		{"early", "running", "09:00:00"}, // 10 minutes before: no part of the cohort
		{"failed", "failed", "09:09:50"}, // never releases
		{"a", "running", "09:09:50"},     // within a minute (a tenth of ten)
		{"b", "running", "09:10:00"},     // at the same moment, and named before c
		{"c", "running", "09:10:00"},     // the holder
		{"d", "running", "09:10:01"},     // after
	} {
		pairs = append(pairs, pair(runningDir+h.name, fmt.Sprintf(`{"holder":%q,"run_id":"r-%s","state":%q,"started_at":"2026-11-21T%sZ"}`, h.name, h.name, h.state, h.started)))
	}
	snap := newSnapshot("t/s", 20, OrderArrival, pairs, s.base)
	snap.now = time.Date(2026, 11, 21, 9, 20, 0, 0, time.UTC)
	if got := snap.cohortRank("c"); got != 2 {
		t.Errorf("cohortRank(c) = %d, want 2 (a and b)", got)
	}
	if got := snap.cohortRank("early"); got != 0 {
		t.Errorf("cohortRank(early) = %d, want 0", got)
	}
}
