package lock

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/consul/api"
)

// Reading is bounded, because anyone who may write under the prefix can store junk there
// (Consul takes values up to 512 KB), and the Lambda that reaps has 128 MB. A read therefore
// lists key names first (KV.Keys), then fetches the values of the tier's own keys only, a
// batch at a time in read-only transactions, and keeps no value larger than a record can be.
const (
	// MaxTierKeys caps the keys of one tier's layout (max_concurrent, current, max_saved,
	// running/, queue/) that a read fetches. A tier with more is refused with ErrTooManyKeys:
	// fetching them all could hold MaxTierKeys × 512 KB.
	MaxTierKeys = 4096
	// MaxListKeys caps the key names one listing of the whole prefix may return (ReadAll).
	MaxListKeys = 100000
	// DefaultReadBatch is the number of values fetched per transaction unless
	// Options.ReadBatch says otherwise: Consul's limit of 128 operations, so that a tier of
	// ordinary size costs the listing and one request. At most 128 × 512 KB of junk (64 MB)
	// in one answer: fine for the CLI on a host; the Lambda, with 128 MB, asks for 4.
	DefaultReadBatch = maxTxnOps
	// maxRereads bounds how often a read starts again because the tier changed between the
	// listing of its keys and the fetching of their values.
	maxRereads = 20
)

// tierKey reports whether rel (a key relative to a tier) belongs to the tier layout.
func tierKey(rel string) bool {
	return rel == keyMax || rel == keyCurrent || rel == keySaved ||
		strings.HasPrefix(rel, runningDir) || strings.HasPrefix(rel, queueDir) || strings.HasPrefix(rel, convergedDir) ||
		strings.HasPrefix(rel, auditDir)
}

// listKeys lists the key names under prefix, as q says (consistent, or blocking until
// something under prefix changes).
func listKeys(ctx context.Context, kv KV, prefix string, q *api.QueryOptions) ([]string, uint64, error) {
	keys, meta, err := kv.Keys(prefix, "", q.WithContext(ctx))
	if err != nil {
		return nil, 0, fmt.Errorf("lock: read %s: %w", prefix, err)
	}
	if err := filtered(meta, prefix); err != nil {
		return nil, 0, err
	}
	return keys, meta.LastIndex, nil
}

// tooManyKeys is the error of a tier whose layout has more than MaxTierKeys keys.
func tooManyKeys(base string, n int) error {
	return fmt.Errorf("%w: %s has %d keys, more than the cap of %d a read fetches (lock.MaxTierKeys): delete the junk under it",
		ErrTooManyKeys, base, n, MaxTierKeys)
}

// fetch gets the values of keys consistently, batchSize per transaction. A key deleted after
// it was listed is returned in gone, not as an error. Values larger than maxValueLen are
// replaced by a short text saying so (which no parser accepts), so that a batch of junk is
// not kept: at most one batch of raw values is held at a time.
func fetch(ctx context.Context, kv KV, keys []string, batchSize int) (map[string]*api.KVPair, map[string]bool, error) {
	if batchSize <= 0 {
		batchSize = DefaultReadBatch
	}
	batchSize = min(batchSize, maxTxnOps)
	got := make(map[string]*api.KVPair, len(keys))
	gone := map[string]bool{}
	for len(keys) > 0 {
		batch := keys[:min(batchSize, len(keys))]
		ops := make(api.KVTxnOps, 0, len(batch))
		for _, k := range batch {
			if !gone[k] {
				ops = append(ops, &api.KVTxnOp{Verb: api.KVGet, Key: k})
			}
		}
		if len(ops) == 0 {
			keys = keys[len(batch):]
			continue
		}
		ok, resp, _, err := kv.Txn(ops, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
		if err != nil {
			return nil, nil, fmt.Errorf("lock: read %s: %w", batch[0], err)
		}
		if !ok {
			// Consul fails a get of a missing key, and with it the whole transaction: drop
			// the keys that went away since the listing and fetch the batch again.
			var reasons []string
			for _, e := range resp.Errors {
				if e.OpIndex >= 0 && e.OpIndex < len(ops) && e.What == fmt.Sprintf("key %q doesn't exist", ops[e.OpIndex].Key) {
					gone[ops[e.OpIndex].Key] = true
					continue
				}
				reasons = append(reasons, e.What)
			}
			if len(reasons) > 0 || len(resp.Errors) == 0 {
				if len(reasons) == 0 {
					reasons = append(reasons, "consul refused the read without saying why")
				}
				return nil, nil, fmt.Errorf("%w: read %s: %s", ErrRejected, batch[0], strings.Join(reasons, "; "))
			}
			continue
		}
		for _, r := range resp.Results {
			if len(r.Value) > maxValueLen {
				r.Value = []byte(fmt.Sprintf("<a value of %d bytes, more than the %d a stored value may have: not read>", len(r.Value), maxValueLen))
			}
			got[r.Key] = r
		}
		keys = keys[len(batch):]
	}
	return got, gone, nil
}

// current reports whether the values fetched for keys are those the listing at index saw:
// none went away, none was written after it. A tier read otherwise could pair a current
// from after a write with running/ keys from before it.
func current(keys []string, got map[string]*api.KVPair, gone map[string]bool, index uint64) bool {
	for _, k := range keys {
		p, ok := got[k]
		if gone[k] || !ok || p.ModifyIndex > index {
			return false
		}
	}
	return true
}

// readTier reads one tier (base ends in "/"): its layout keys listed, their values fetched,
// again from the start while the tier changes in between. waitIndex > 0 makes the listing a
// blocking query (q carries its wait time); the fetches are always consistent.
//
// want, if not nil, narrows the values fetched to the layout keys it accepts (relative to
// the tier): a host asking for a slot needs neither the other hosts' convergence records nor
// the operators' notes, and a tier of M hosts has M of those.
func readTier(ctx context.Context, kv KV, tier string, defaultMax int, queueOrder QueueOrder, batchSize int, base string, q *api.QueryOptions, want func(rel string) bool) (*Snapshot, error) {
	for range maxRereads {
		all, index, err := listKeys(ctx, kv, base, q)
		if err != nil {
			return nil, err
		}
		keys := layoutKeys(all, base, want)
		if len(keys) > MaxTierKeys {
			return nil, tooManyKeys(base, len(keys))
		}
		got, gone, err := fetch(ctx, kv, keys, batchSize)
		if err != nil {
			return nil, err
		}
		if current(keys, got, gone, index) {
			return newSnapshot(tier, defaultMax, queueOrder, pairsOf(keys, got), base), nil
		}
		// Changed meanwhile: list again at once (not blocking: the change is the news).
		q = &api.QueryOptions{RequireConsistent: true}
	}
	return nil, fmt.Errorf("lock: read %s: it changed between listing and fetching %d times in a row", base, maxRereads)
}

// layoutKeys keeps, sorted, the keys under base that belong to the tier layout (and that want
// accepts, if want is not nil).
func layoutKeys(all []string, base string, want func(string) bool) []string {
	var keys []string
	for _, k := range all {
		if rel, ok := strings.CutPrefix(k, base); ok && tierKey(rel) && (want == nil || want(rel)) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

func pairsOf(keys []string, got map[string]*api.KVPair) api.KVPairs {
	pairs := make(api.KVPairs, 0, len(keys))
	for _, k := range keys {
		pairs = append(pairs, got[k])
	}
	return pairs
}

// A run's read is one request in the common case: a read-only transaction of get-tree
// operations on what Acquire and Release decide on (max_concurrent, current, max_saved,
// running/, queue/ and the holder's own converged/ record), atomic, so nothing is read again
// when the tier changes meanwhile. Its answer is capped at treeAnswerLimit by the client
// (internal/consulclient honours consulclient.WithAnswerLimit): past it, junk lies under the
// tier, and the read falls back to listing the keys and fetching their values in batches.
const treeAnswerLimit = 8 << 20

// treeOps are the get-tree operations of holder's one-request read. A get-tree of a key
// also returns the keys it is a prefix of ("current" gives "current2" too, and
// "converged/web-1" gives "converged/web-10"): treePairs keeps only the layout's keys.
func (s *Semaphore) treeOps(holder string) api.KVTxnOps {
	keys := []string{keyMax, keyCurrent, keySaved, runningDir, queueDir}
	if holder != "" {
		keys = append(keys, convergedDir+holder)
	}
	var ops api.KVTxnOps
	for _, k := range keys {
		ops = append(ops, &api.KVTxnOp{Verb: api.KVGetTree, Key: s.base + k})
	}
	return ops
}

// ownQueueOps are treeOps with the queue narrowed to holder's own entry (and the names it is
// a prefix of, which treePairs drops only if they are not queue entries: see partialQueue).
func (s *Semaphore) ownQueueOps(holder string) api.KVTxnOps {
	var ops api.KVTxnOps
	for _, op := range s.treeOps(holder) {
		if op.Key == s.base+queueDir {
			op = &api.KVTxnOp{Verb: api.KVGetTree, Key: s.base + queueDir + holder}
		}
		ops = append(ops, op)
	}
	return ops
}

// treePairs keeps, from the results of a transaction, the tier's layout keys that want accepts,
// each once (the last result for a key is the latest: reads go after writes), sorted, with
// values too large for any record replaced as fetch replaces them.
func treePairs(results []*api.KVPair, base string, want func(string) bool) (api.KVPairs, error) {
	byKey := map[string]*api.KVPair{}
	for _, p := range results {
		if p == nil {
			continue
		}
		if rel, ok := strings.CutPrefix(p.Key, base); ok && tierKey(rel) && (want == nil || want(rel)) {
			byKey[p.Key] = p
		}
	}
	if len(byKey) > MaxTierKeys {
		return nil, tooManyKeys(base, len(byKey))
	}
	keys := make([]string, 0, len(byKey))
	for k, p := range byKey {
		keys = append(keys, k)
		if len(p.Value) > maxValueLen {
			p.Value = []byte(fmt.Sprintf("<a value of %d bytes, more than the %d a stored value may have: not read>", len(p.Value), maxValueLen))
		}
	}
	sort.Strings(keys)
	return pairsOf(keys, byKey), nil
}
