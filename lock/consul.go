package lock

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// KV is the part of Consul's *api.KV the semaphore uses.
type KV interface {
	Get(key string, q *api.QueryOptions) (*api.KVPair, *api.QueryMeta, error)
	Keys(prefix, separator string, q *api.QueryOptions) ([]string, *api.QueryMeta, error)
	List(prefix string, q *api.QueryOptions) (api.KVPairs, *api.QueryMeta, error)
	Txn(ops api.KVTxnOps, q *api.QueryOptions) (bool, *api.KVTxnResponse, *api.QueryMeta, error)
}

// read lists the tier consistently: a stale read could admit a holder into a full tier.
func (s *Semaphore) read(ctx context.Context, waitIndex uint64, waitTime time.Duration, want func(string) bool) (*Snapshot, error) {
	timeout := s.opts.RequestTimeout
	if waitIndex > 0 {
		// Consul adds up to wait/16 of jitter to a blocking query.
		timeout += waitTime + waitTime/16
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	q := &api.QueryOptions{RequireConsistent: waitIndex == 0, WaitIndex: waitIndex, WaitTime: waitTime}
	return readTier(ctx, s.kv, s.opts.Tier, s.opts.DefaultMax, s.opts.QueueOrder, s.opts.ReadBatch, s.base, q, want)
}

// forHolder narrows a read to what holder's Acquire decides on: every key of the layout but
// the other hosts' convergence records and the operators' notes.
func forHolder(holder string) func(string) bool {
	return func(rel string) bool {
		if h, ok := strings.CutPrefix(rel, convergedDir); ok {
			return h == holder
		}
		return !strings.HasPrefix(rel, auditDir)
	}
}

// filtered refuses a listing that Consul's ACLs cut short: a tier read without some of its
// keys would look freer than it is, and a judgement on it would be wrong.
func filtered(meta *api.QueryMeta, prefix string) error {
	if meta == nil || !meta.ResultsFilteredByACLs {
		return nil
	}
	return fmt.Errorf("%w: read %s: the token lacks permission 'key:read' on %q (consul filtered the listing by ACL)", ErrRejected, prefix, prefix)
}

// change is one write to a tier: put (rec != nil) or delete running/<holder>, or neither.
type change struct {
	holder string
	rec    *Record
	delete bool
}

// changeTxn is the transaction that writes ch and sets current to the resulting number of
// running/ keys, guarded by check-and-set on what snap read.
func (s *Semaphore) changeTxn(snap *Snapshot, ch change) (*txn, error) {
	own := ""
	if ch.holder != "" {
		own = runningDir + ch.holder
	}
	count := snap.RunningKeys
	_, exists := snap.modify[own]
	switch {
	case ch.rec != nil && !exists:
		count++
	case ch.delete && exists:
		count--
	}

	t := &txn{checks: s.guardMax(snap)}
	for _, k := range snap.runningKeys() {
		if k != own {
			t.optional = append(t.optional, s.guard(snap, k))
		}
	}
	switch {
	case ch.rec != nil:
		value, err := json.Marshal(ch.rec)
		if err != nil {
			return nil, fmt.Errorf("lock: encode record: %w", err)
		}
		t.writes = append(t.writes, s.set(snap, own, string(value)))
	case ch.delete:
		t.writes = append(t.writes, s.del(snap, own))
	}
	t.writes = append(t.writes, s.set(snap, keyCurrent, strconv.Itoa(count)))
	return t, nil
}

// apply runs t as one transaction. It reports false when a check-and-set failed because
// another writer got there first, and ErrRejected for any other refusal.
func (s *Semaphore) apply(ctx context.Context, t *txn) (bool, error) {
	ops, err := t.ops()
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	ok, resp, _, err := s.kv.Txn(ops, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("lock: write %s: %w", s.base, err)
	}
	if ok {
		return true, nil
	}
	return false, s.rejected(ops, resp)
}

// applyAndRead runs t and then reads the tier. It returns the tier as it is after the
// transaction, or nil when a check-and-set failed. (The read is not part of the transaction:
// a get-tree there would fetch every value under the tier, junk included, unbounded.)
func (s *Semaphore) applyAndRead(ctx context.Context, t *txn, holder string) (*Snapshot, error) {
	ok, err := s.apply(ctx, t)
	if err != nil || !ok {
		return nil, err
	}
	return s.read(ctx, 0, 0, forHolder(holder))
}

// rejected is nil when a failed transaction of ops only lost a race, and ErrRejected
// otherwise. Consul names the operation that failed by its index; its message is judged
// against what that operation was (lostRace).
func (s *Semaphore) rejected(ops api.KVTxnOps, resp *api.KVTxnResponse) error {
	var reasons []string
	for _, e := range resp.Errors {
		var op *api.KVTxnOp
		if e.OpIndex >= 0 && e.OpIndex < len(ops) {
			op = ops[e.OpIndex]
		}
		if !lostRace(op, e.What) {
			reasons = append(reasons, e.What)
		}
	}
	if len(reasons) > 0 || len(resp.Errors) == 0 {
		if len(reasons) == 0 {
			reasons = append(reasons, "consul refused the transaction without saying why")
		}
		return fmt.Errorf("%w: %s: %s", ErrRejected, s.base, strings.Join(reasons, "; "))
	}
	return nil
}

// set is a check-and-set write of key (relative to the tier) against what snap read.
func (s *Semaphore) set(snap *Snapshot, key, value string) *api.KVTxnOp {
	return &api.KVTxnOp{Verb: api.KVCAS, Key: s.base + key, Value: []byte(value), Index: snap.modify[key]}
}

// del is a check-and-set delete of key against what snap read.
func (s *Semaphore) del(snap *Snapshot, key string) *api.KVTxnOp {
	return &api.KVTxnOp{Verb: api.KVDeleteCAS, Key: s.base + key, Index: snap.modify[key]}
}

// guardMax guards max_concurrent as snap read it; when it was absent, nothing is checked.
// Consul's ACLs let a check-not-exists through only with key:write on the key, and neither a
// host nor a reaper scoped to its tiers may write max_concurrent. Nothing of tierlock's is
// missed: set-max, disable and enable rewrite current in their transaction (wakeOps), so the
// check-and-set on current fails after them. Only a foreign writer creating max_concurrent
// in the instant between read and write goes unseen.
func (s *Semaphore) guardMax(snap *Snapshot) api.KVTxnOps {
	if _, ok := snap.modify[keyMax]; !ok {
		return nil
	}
	return api.KVTxnOps{s.guard(snap, keyMax)}
}

// guard checks that key (relative to the tier) is as snap read it: same ModifyIndex, or
// still absent.
func (s *Semaphore) guard(snap *Snapshot, key string) *api.KVTxnOp {
	if idx, ok := snap.modify[key]; ok {
		return &api.KVTxnOp{Verb: api.KVCheckIndex, Key: s.base + key, Index: idx}
	}
	return &api.KVTxnOp{Verb: api.KVCheckNotExists, Key: s.base + key}
}
