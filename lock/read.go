package lock

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/answercap"
	"github.com/tierlock/tierlock/lock/schema"
)

// Reading is bounded, because anyone who may write under the prefix can store junk there
// (Consul takes values up to 512 KB, and key names up to its HTTP header limit, 1 MB), and the
// Lambda that reaps has 128 MB. A read therefore lists key names first (KV.Keys, each answer
// capped at listAnswerLimit), drops the names no tier key can have (longer than maxRelKeyLen
// after the tier: reported, cut, in the tier's Suspect), then fetches the values of the tier's
// own keys only, in read-only transactions whose requests stay under Consul's txn_max_req_len
// and whose answers are capped at fetchAnswerLimit, and keeps no value larger than a record
// can be.
const (
	// MaxTierKeys caps the keys of one tier's layout (max_concurrent, current, max_saved,
	// running/, queue/, converged/, ...) that a read fetches. A tier with more is refused with
	// ErrTooManyKeys. Every host of a tier has a converged/ record once it has run, and a
	// queue/ entry while it waits, so a tier of 10,000 hosts has 20,000 keys or so: the cap
	// is above that (it was 4096, and a tier of 4,000 hosts could not be read by status,
	// check or reap). Memory is bounded by bytes, not by this count: a read keeps at most
	// tierValueBudget of values and listAnswerLimit of names of one tier; the count bounds
	// the time a read of junk takes (a fetch per 128 keys).
	MaxTierKeys = 32768
	// defaultReadBatch is the number of values fetched per transaction unless
	// Options.ReadBatch says otherwise: Consul's limit of 128 operations, so that a tier of
	// ordinary size costs the listing and one request. A batch is also cut by bytes, of its
	// request and of its answer (fetchRequestLimit, fetchAnswerLimit).
	defaultReadBatch = maxTxnOps
	// maxRereads bounds how often a read starts again because the tier changed between the
	// listing of its keys and the fetching of their values.
	maxRereads = 20
	// maxRelKeyLen is the longest name a key of a tier's layout can have after the tier's
	// base: a converged/ record of a holder of the longest name. A longer name is junk, and
	// its value is never fetched: a 600 KB name alone makes a transaction larger than Consul
	// takes (txn_max_req_len, 512 KB by default), failing every key fetched beside it.
	maxRelKeyLen = len(convergedDir) + schema.MaxNameLen
	// listAnswerLimit caps the answer to one listing of key names. ReadAll lists
	// environment by environment and tier by tier, so that the junk names under one tier
	// cost that tier alone (ErrTooManyKeys, in its Problems). 4096 keys of the longest valid
	// names take about 3 MB.
	listAnswerLimit = 4 << 20
	// fetchRequestLimit bounds the request of one fetch: half of Consul's default
	// txn_max_req_len (512 KB), which applies to the whole request body, names included.
	fetchRequestLimit = 256 << 10
	// fetchAnswerLimit caps the answer to one fetch: a batch whose values come to more is
	// fetched again in halves, so at most a few junk values of 512 KB are held at a time.
	fetchAnswerLimit = 2 << 20
	// tierValueBudget caps the bytes of values a read fetches from one tier: 4096 records of
	// a few hundred bytes take 2 MB. Past it the tier holds junk values (Consul takes 512 KB
	// each) and is left unread (ErrTooManyKeys), so that its junk costs neither the memory
	// nor the time of a read: 500 MB of them would take seconds to fetch.
	tierValueBudget = 16 << 20
	// shownJunk is how many junk names a tier's report quotes (cut by clipKey).
	shownJunk = 3
	// clipKeyLen is the most of a key name an error quotes.
	clipKeyLen = 80
)

// tierKey reports whether rel (a key relative to a tier) belongs to the tier layout.
func tierKey(rel string) bool {
	return rel == keyMax || rel == keyCurrent || rel == keySaved || rel == keyRollout || rel == keyPolicy || rel == keyHead ||
		strings.HasPrefix(rel, runningDir) || strings.HasPrefix(rel, queueDir) || strings.HasPrefix(rel, convergedDir) ||
		strings.HasPrefix(rel, auditDir)
}

// clipKey cuts a key name for an error: at most clipKeyLen bytes, valid UTF-8, "..." at
// the end when cut. The result is a copy, so that a huge name it was cut from can be freed.
func clipKey(k string) string {
	if len(k) <= clipKeyLen {
		return strings.Clone(k)
	}
	return strings.ToValidUTF8(k[:clipKeyLen-3], "") + "..."
}

// junkNames counts the keys of one tier whose names are longer than any of its layout keys
// can be, keeping only the first few, cut.
type junkNames struct {
	n     int
	shown []string
}

func (j *junkNames) add(key string) {
	if j.n < shownJunk {
		j.shown = append(j.shown, clipKey(key))
	}
	j.n++
}

// err is the tier's report of its junk names, or nil.
func (j *junkNames) err(base string) error {
	if j == nil || j.n == 0 {
		return nil
	}
	more := ""
	if j.n > len(j.shown) {
		more = fmt.Sprintf(" and %d more", j.n-len(j.shown))
	}
	keys := "keys"
	if j.n == 1 {
		keys = "key"
	}
	return fmt.Errorf("%d %s under %s with names longer than any tierlock key can have (%d bytes after the tier), not read: %s%s; delete them",
		j.n, keys, clipKey(base), maxRelKeyLen, strings.Join(j.shown, ", "), more)
}

// listKeys lists the key names under prefix (up to separator, if not ""), as q says
// (consistent, or blocking until something under prefix changes), its answer capped at
// listAnswerLimit: past it the error wraps answercap.ErrTooLarge.
func listKeys(ctx context.Context, kv KV, prefix, separator string, q *api.QueryOptions) ([]string, uint64, error) {
	keys, meta, err := kv.Keys(prefix, separator, q.WithContext(answercap.WithLimit(ctx, listAnswerLimit)))
	if err != nil {
		return nil, 0, fmt.Errorf("lock: read %s: %w", clipKey(prefix), err)
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

// tooMuchValue is the error of a tier whose values come to more than tierValueBudget.
func tooMuchValue(base string) error {
	return fmt.Errorf("%w: the values under %s come to more than the %d MB a read fetches from a tier: not read; delete the junk under it",
		ErrTooManyKeys, base, tierValueBudget>>20)
}

// tooManyNames is the error of a tier whose key names alone come to more than a listing
// takes.
func tooManyNames(base string) error {
	return fmt.Errorf("%w: the names of the keys under %s come to more than the %d MB a listing reads: not read; delete the junk under it",
		ErrTooManyKeys, base, listAnswerLimit>>20)
}

// opCost is what a get of key adds to a transaction's request, at most: the key JSON-escaped
// (6 bytes for a control byte) and the operation's other fields.
func opCost(key string) int { return 6*len(key) + 256 }

// fetch gets the values of keys consistently, at most batchSize per transaction, each request
// under fetchRequestLimit and each answer under fetchAnswerLimit (a batch whose answer is
// larger is fetched again in halves). A key deleted after it was listed is returned in gone,
// not as an error. Values larger than schema.MaxValueLen are replaced by a short text saying so
// (which no parser accepts), so that a batch of junk is not kept: at most one batch of raw
// values is held at a time. A value too large to fetch even alone (Consul's
// kv_max_value_size raised past fetchAnswerLimit) is replaced so too, without its index.
//
// baseOf names the tier of a key (its base); once the values fetched of a tier come to more
// than tierValueBudget, the rest of its keys are not fetched, and it is in over. timeout, if
// not 0, bounds each request (else ctx bounds them all).
func fetch(ctx context.Context, kv KV, keys []string, batchSize int, baseOf func(key string) string, timeout time.Duration) (got map[string]*api.KVPair, gone, over map[string]bool, err error) {
	if batchSize <= 0 {
		batchSize = defaultReadBatch
	}
	batchSize = min(batchSize, maxTxnOps)
	got = make(map[string]*api.KVPair, len(keys))
	gone, over = map[string]bool{}, map[string]bool{}
	spent := map[string]int{}
	spend := func(key string, n int) {
		b := baseOf(key)
		if spent[b] += n; spent[b] > tierValueBudget {
			over[b] = true
		}
	}
	size := batchSize // shrinks while answers are too large, grows back after
	for len(keys) > 0 {
		batch := keys[:batchLen(keys, size)]
		ops := getOps(batch, func(k string) bool { return !gone[k] && !over[baseOf(k)] })
		if len(ops) == 0 {
			keys = keys[len(batch):]
			continue
		}
		rctx, cancel := withTimeout(ctx, timeout)
		ok, resp, _, err := kv.Txn(ops, (&api.QueryOptions{RequireConsistent: true}).WithContext(answercap.WithLimit(rctx, fetchAnswerLimit)))
		cancel()
		if errors.Is(err, answercap.ErrTooLarge) && ctx.Err() == nil {
			if len(ops) > 1 {
				size = max(1, len(ops)/2)
				continue
			}
			got[ops[0].Key] = &api.KVPair{Key: ops[0].Key, Value: notRead(fetchAnswerLimit)}
			spend(ops[0].Key, fetchAnswerLimit)
			keys = keys[len(batch):]
			continue
		}
		if err != nil {
			return nil, nil, nil, fmt.Errorf("lock: read %s: %w", clipKey(batch[0]), err)
		}
		if !ok {
			if err := goneKeys(ops, resp, gone); err != nil {
				return nil, nil, nil, fmt.Errorf("%w: read %s: %w", ErrRejected, clipKey(batch[0]), err)
			}
			continue // the batch again, without the keys that went away
		}
		for _, r := range resp.Results {
			if spend(r.Key, len(r.Key)+len(r.Value)); len(r.Value) > schema.MaxValueLen {
				r.Value = notRead(len(r.Value))
			}
			got[r.Key] = r
		}
		keys = keys[len(batch):]
		size = min(batchSize, 2*size)
	}
	return got, gone, over, nil
}

// getOps are the gets of the keys that want accepts.
func getOps(keys []string, want func(string) bool) api.KVTxnOps {
	ops := make(api.KVTxnOps, 0, len(keys))
	for _, k := range keys {
		if want(k) {
			ops = append(ops, &api.KVTxnOp{Verb: api.KVGet, Key: k})
		}
	}
	return ops
}

// withTimeout is ctx bounded by timeout, or ctx itself when timeout is 0.
func withTimeout(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout > 0 {
		return context.WithTimeout(ctx, timeout)
	}
	return ctx, func() {}
}

// notRead stands for a value of n bytes, more than any stored value of the layout may have:
// no parser accepts it, and the value itself is not kept.
func notRead(n int) []byte {
	return []byte(fmt.Sprintf("<a value of %d bytes or more, more than the %d a stored value may have: not read>", n, schema.MaxValueLen))
}

// batchLen is how many of keys the next fetch asks for: at most size, and a request under
// fetchRequestLimit (at least one key).
func batchLen(keys []string, size int) int {
	n, cost := 0, 0
	for n < min(size, len(keys)) && (n == 0 || cost+opCost(keys[n]) <= fetchRequestLimit) {
		cost += opCost(keys[n])
		n++
	}
	return n
}

// goneKeys reads a fetch that Consul failed: a get of a missing key fails the whole
// transaction, so the keys that went away since the listing are added to gone (the batch is
// fetched again without them). Any other failure is the error.
func goneKeys(ops api.KVTxnOps, resp *api.KVTxnResponse, gone map[string]bool) error {
	var reasons []string
	for _, e := range resp.Errors {
		if e.OpIndex >= 0 && e.OpIndex < len(ops) && e.What == fmt.Sprintf("key %q doesn't exist", ops[e.OpIndex].Key) {
			gone[ops[e.OpIndex].Key] = true
			continue
		}
		reasons = append(reasons, e.What)
	}
	switch {
	case len(reasons) > 0:
		return errors.New(strings.Join(reasons, "; "))
	case len(resp.Errors) == 0:
		return errors.New("consul refused the read without saying why")
	}
	return nil
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

// tierRead is one tier's bounded read: where (kv, base, which ends in "/"), what the snapshot
// defaults to (tier, defaultMax, order), how many values a fetch takes (batch), the listing's
// query options (q, which may block) and which layout keys to fetch (want; nil: all).
type tierRead struct {
	kv         KV
	tier, base string
	defaultMax int
	order      QueueOrder
	batch      int
	q          *api.QueryOptions
	want       func(rel string) bool
}

// readTier reads one tier (base ends in "/"): its layout keys listed, their values fetched,
// again from the start while the tier changes in between. waitIndex > 0 makes the listing a
// blocking query (q carries its wait time); the fetches are always consistent. Keys whose
// names no tier key can have are not fetched: the snapshot reports them in Suspect.
//
// want, if not nil, narrows the values fetched to the layout keys it accepts (relative to
// the tier): a host asking for a slot needs neither the other hosts' convergence records nor
// the operators' notes, and a tier of M hosts has M of those.
func readTier(ctx context.Context, r tierRead) (*Snapshot, error) {
	kv, tier, base, q, want := r.kv, r.tier, r.base, r.q, r.want
	for range maxRereads {
		all, index, err := listKeys(ctx, kv, base, "", q)
		if errors.Is(err, answercap.ErrTooLarge) {
			return nil, tooManyNames(base)
		}
		if err != nil {
			return nil, err
		}
		keys, junk := layoutKeys(all, base, want)
		all = nil
		if len(keys) > MaxTierKeys {
			return nil, tooManyKeys(base, len(keys))
		}
		got, gone, over, err := fetch(ctx, kv, keys, r.batch, func(string) string { return base }, 0)
		if err != nil {
			return nil, err
		}
		if over[base] {
			return nil, tooMuchValue(base)
		}
		if current(keys, got, gone, index) {
			snap := newSnapshot(tier, r.defaultMax, r.order, pairsOf(keys, got), base)
			if err := junk.err(base); err != nil {
				snap.Suspect = append(snap.Suspect, err)
			}
			return snap, nil
		}
		// Changed meanwhile: list again at once (not blocking: the change is the news).
		q = &api.QueryOptions{RequireConsistent: true}
	}
	return nil, fmt.Errorf("lock: read %s: it changed between listing and fetching %d times in a row", base, maxRereads)
}

// layoutKeys keeps, sorted, the keys under base that belong to the tier layout (and that want
// accepts, if want is not nil), and counts in junk the names under base too long for any of
// them (that want accepts, cut to maxRelKeyLen).
func layoutKeys(all []string, base string, want func(string) bool) ([]string, *junkNames) {
	var keys []string
	junk := &junkNames{}
	for _, k := range all {
		rel, ok := strings.CutPrefix(k, base)
		switch {
		case !ok:
		case len(rel) > maxRelKeyLen:
			if want == nil || want(rel[:maxRelKeyLen]) {
				junk.add(k)
			}
		case tierKey(rel) && (want == nil || want(rel)):
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys, junk
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
// (internal/consulclient honours answercap.WithLimit): past it, junk lies under the
// tier, and the read falls back to listing the keys and fetching their values in batches.
const treeAnswerLimit = 8 << 20

// treeOps are the get-tree operations of holder's one-request read. A get-tree of a key
// also returns the keys it is a prefix of ("current" gives "current2" too, and
// "converged/web-1" gives "converged/web-10"): treePairs keeps only the layout's keys.
func (s *Semaphore) treeOps(holder string) api.KVTxnOps {
	// The get-tree of rollout also returns rollout_policy.
	keys := []string{keyMax, keyCurrent, keySaved, keyRollout, keyHead, runningDir, queueDir}
	if holder != "" {
		keys = append(keys, convergedDir+holder)
	}
	if s.opts.Note != nil {
		keys = append(keys, auditDir+schema.NoteHistory) // see forHolder
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
// values too large for any record replaced as fetch replaces them. Names too long for any
// layout key are counted in junk, not kept.
func treePairs(results []*api.KVPair, base string, want func(string) bool) (api.KVPairs, *junkNames, error) {
	byKey := map[string]*api.KVPair{}
	junk := &junkNames{}
	seen := map[string]bool{}
	for _, p := range results {
		if p == nil {
			continue
		}
		rel, ok := strings.CutPrefix(p.Key, base)
		switch {
		case !ok:
		case len(rel) > maxRelKeyLen:
			// The same key may come in several results (the reads after a write).
			if c := clipKey(p.Key); !seen[c] && (want == nil || want(rel[:maxRelKeyLen])) {
				seen[c] = true
				junk.add(p.Key)
			}
		case tierKey(rel) && (want == nil || want(rel)):
			byKey[p.Key] = p
		}
	}
	if len(byKey) > MaxTierKeys {
		return nil, nil, tooManyKeys(base, len(byKey))
	}
	keys := make([]string, 0, len(byKey))
	for k, p := range byKey {
		keys = append(keys, k)
		if len(p.Value) > schema.MaxValueLen {
			p.Value = []byte(fmt.Sprintf("<a value of %d bytes, more than the %d a stored value may have: not read>", len(p.Value), schema.MaxValueLen))
		}
	}
	sort.Strings(keys)
	return pairsOf(keys, byKey), junk, nil
}
