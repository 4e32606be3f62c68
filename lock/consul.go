package lock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/answercap"
	"github.com/tierlock/tierlock/internal/kvtxn"
	"github.com/tierlock/tierlock/lock/schema"
)

// KV is the part of Consul's *api.KV the semaphore uses.
type KV interface {
	Get(key string, q *api.QueryOptions) (*api.KVPair, *api.QueryMeta, error)
	Keys(prefix, separator string, q *api.QueryOptions) ([]string, *api.QueryMeta, error)
	List(prefix string, q *api.QueryOptions) (api.KVPairs, *api.QueryMeta, error)
	Txn(ops api.KVTxnOps, q *api.QueryOptions) (bool, *api.KVTxnResponse, *api.QueryMeta, error)
}

// read reads the tier consistently (a stale read could admit a holder into a full tier):
// for holder, what its Acquire and Release decide on, in one request when it can (see
// treeOps); for "" everything, listed then fetched.
func (s *Semaphore) read(ctx context.Context, holder string) (*Snapshot, error) {
	if holder == "" {
		ctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
		defer cancel()
		snap, err := readTier(ctx, s.tierRead(&api.QueryOptions{RequireConsistent: true}, nil))
		if snap != nil {
			snap.now, snap.whole = s.opts.Now().UTC(), true
		}
		return snap, err
	}
	return s.readTree(ctx, holder, s.treeOps(holder))
}

// tierRead is the bounded read of the semaphore's tier.
func (s *Semaphore) tierRead(q *api.QueryOptions, want func(string) bool) tierRead {
	return tierRead{kv: s.kv, tier: s.opts.Tier, base: s.base, defaultMax: s.opts.DefaultMax, order: s.opts.QueueOrder,
		batch: s.opts.ReadBatch, q: q, want: want}
}

// readOwn is read with the queue narrowed to holder's own entry (see applyAndRead): what a
// waiter needs to know whether a slot is free, at a cost that does not grow with the queue.
func (s *Semaphore) readOwn(ctx context.Context, holder string) (*Snapshot, error) {
	return s.readPartial(ctx, holder, s.ownQueueOps(holder))
}

// readSlots is readOwn without line_head: what a run's first look and the safety net decide
// on. Neither hands a slot over, and the head (twice the slots long in a wide tier) was most
// of such a read's answer: every host of a burst makes one.
func (s *Semaphore) readSlots(ctx context.Context, holder string) (*Snapshot, error) {
	ops := slices.DeleteFunc(s.ownQueueOps(holder), func(op *api.KVTxnOp) bool { return op.Key == s.base+keyHead })
	return s.readPartial(ctx, holder, ops)
}

// readPartial is readTree of ops that narrow the queue to holder's own entry: the snapshot
// says so (partialQueue), unless the answer was too large and the tier was read whole.
func (s *Semaphore) readPartial(ctx context.Context, holder string, ops api.KVTxnOps) (*Snapshot, error) {
	snap, err := s.readTree(ctx, holder, ops)
	if snap != nil && !snap.bounded {
		snap.partialQueue = true
	}
	return snap, err
}

// readTree reads holder's view of the tier in one read-only transaction of ops, or, when its
// answer is too large, the bounded way (and then whole: bounded is set).
func (s *Semaphore) readTree(ctx context.Context, holder string, ops api.KVTxnOps) (*Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	q := &api.QueryOptions{RequireConsistent: true}
	ok, resp, meta, err := s.kv.Txn(ops, q.WithContext(answercap.WithLimit(ctx, treeAnswerLimit)))
	switch {
	case errors.Is(err, answercap.ErrTooLarge):
		snap, err := readTier(ctx, s.tierRead(q, s.forHolder(holder)))
		if snap != nil {
			snap.bounded, snap.now = true, s.opts.Now().UTC()
		}
		return snap, err
	case err != nil:
		return nil, fmt.Errorf("lock: read %s: %w", s.base, err)
	case !ok:
		return nil, s.rejected(nil, resp)
	}
	if err := filtered(meta, s.base); err != nil {
		return nil, err
	}
	return s.snapshot(resp.Results, holder)
}

// snapshot is the tier as results (of a transaction ending in holder's treeOps) show it.
func (s *Semaphore) snapshot(results []*api.KVPair, holder string) (*Snapshot, error) {
	pairs, junk, err := treePairs(results, s.base, s.forHolder(holder))
	if err != nil {
		return nil, err
	}
	snap := newSnapshot(s.opts.Tier, s.opts.DefaultMax, s.opts.QueueOrder, pairs, s.base)
	snap.now = s.opts.Now().UTC()
	if err := junk.err(s.base); err != nil {
		snap.Suspect = append(snap.Suspect, err)
	}
	return snap, nil
}

// forHolder narrows a read to what holder's Acquire decides on: every key of the layout but
// the other hosts' convergence records and the operators' notes. An operator's write on
// holder's behalf (release, forget), which carries a note, also reads audit/history, which
// its note heads with check-and-set (see withNote).
func (s *Semaphore) forHolder(holder string) func(string) bool {
	history := s.opts.Note != nil
	return func(rel string) bool {
		if h, ok := strings.CutPrefix(rel, convergedDir); ok {
			return h == holder
		}
		return !strings.HasPrefix(rel, auditDir) || history && rel == auditDir+schema.NoteHistory
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

// maxGrants bounds the slots one write hands over, so that a release among many holders
// still fits Consul's 128 operations. The rest are taken by the waiters themselves: each
// grant wakes the waiter behind it, which finds a slot free and takes it.
const maxGrants = 16

// rolloutOp writes the rollout record r with check-and-set against snap: every write that
// admits a mover or records a mover's outcome moves it, so such writes are serialised. A halt
// also deletes the queue entries of the movers waiting for its revision (the first
// maxHaltWakes), so that they wake and exit at once rather than at their next look.
func (s *Semaphore) rolloutOp(snap *Snapshot, r *schema.Rollout) (api.KVTxnOps, error) {
	value, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("lock: encode rollout: %w", err)
	}
	ops := api.KVTxnOps{s.set(snap, keyRollout, string(value))}
	if halts(snap, r) {
		ops = append(ops, s.haltWakes(snap, r.Revision, maxHaltWakes)...)
	}
	return ops, nil
}

// halts reports whether writing r over snap's record halts its revision.
func halts(snap *Snapshot, r *schema.Rollout) bool {
	return r != nil && r.Halted() && !(snap.Rollout.Halted() && snap.Rollout.Revision == r.Revision)
}

// haltWakes deletes the queue entries of at most n movers that snap shows waiting for rev,
// which wakes them (see rolloutOp).
func (s *Semaphore) haltWakes(snap *Snapshot, rev string, n int) api.KVTxnOps {
	var ops api.KVTxnOps
	for _, w := range snap.Queue {
		if len(ops) >= n {
			break
		}
		if w.Mover && w.Revision == rev {
			ops = append(ops, &api.KVTxnOp{Verb: api.KVDelete, Key: s.base + queueDir + w.Holder})
		}
	}
	return ops
}

// opsPerGrant is the number of operations grants writes per slot it hands over.
const opsPerGrant = 3

// mustExist checks that key (relative to the tier) is as snap read it, and still there.
// Consul's delete-cas succeeds on a key that is already gone, so a delete alone would let a
// write sent twice (a retry, an answer lost or late) apply again on a tier that moved on:
// hand a slot over twice, say.
func (s *Semaphore) mustExist(snap *Snapshot, key string) *api.KVTxnOp {
	return &api.KVTxnOp{Verb: api.KVCheckIndex, Key: s.base + key, Index: snap.modify[key]}
}

// apply runs t as one transaction. It reports false when a check-and-set failed because
// another writer got there first, and ErrRejected for any other refusal.
func (s *Semaphore) apply(ctx context.Context, t *txn) (bool, error) {
	ok, _, err := s.applyTxn(ctx, t)
	return ok, err
}

// applyTxn is apply, returning the transaction's results too.
func (s *Semaphore) applyTxn(ctx context.Context, t *txn) (bool, []*api.KVPair, error) {
	ops, err := t.ops()
	if err != nil {
		return false, nil, err
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	if len(t.reads) > 0 {
		ctx = answercap.WithLimit(ctx, treeAnswerLimit)
	}
	ok, resp, _, err := s.kv.Txn(ops, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return false, nil, fmt.Errorf("lock: write %s: %w", s.base, err)
	}
	if ok {
		return true, readResults(ops[:len(ops)-len(t.reads)], resp.Results), nil
	}
	if s.headRefused(ops, resp) && t.withoutHead(s.base+keyHead) {
		// A token whose ACL policy predates line_head: the write goes without it, and this
		// semaphore uses it no more.
		s.noHead.Store(true)
		return s.applyTxn(parent, t)
	}
	t.lost = t.lost[:0]
	for _, e := range resp.Errors {
		if e != nil && e.OpIndex >= 0 && e.OpIndex < len(ops) {
			t.lost = append(t.lost, ops[e.OpIndex].Key)
		}
	}
	return false, nil, s.rejected(ops, resp)
}

// takenWaiters names the waiters a write on snap lost to another write that handed them a
// slot first, when that is all it lost (lost: the keys of its operations Consul failed): for
// each, its entry's check failed and so did the write of its running/ key, which exists now.
// Deciding again on snap without them is then as good as reading again, at none of the cost:
// a read carries the whole line. nil if anything else failed, such as an entry that changed
// but holds no slot (its waiter left, or a nudge rewrote it: it still waits, and keeps its
// place).
func (s *Semaphore) takenWaiters(snap *Snapshot, lost []string) map[string]bool {
	line := map[string]bool{}
	for _, w := range snap.line("") {
		line[w.Holder] = true
	}
	entries, slots := map[string]bool{}, map[string]bool{}
	for _, k := range lost {
		rel, _ := strings.CutPrefix(k, s.base)
		if rel == keyHead {
			continue // another release listed the line's head first: this one need not
		}
		if h, ok := strings.CutPrefix(rel, queueDir); ok && line[h] {
			entries[h] = true
		} else if h, ok := strings.CutPrefix(rel, runningDir); ok && line[h] {
			slots[h] = true
		} else {
			return nil
		}
	}
	for h := range entries {
		if !slots[h] {
			return nil
		}
	}
	if len(slots) == 0 {
		return nil
	}
	return slots
}

// readResults are the results of a transaction's reads: what follows the results of writes,
// each of which Consul answers with the key it wrote or checked (its value blanked), or with
// nothing for a delete or a check that the key is absent. A key a write touched must be judged
// by the reads alone: a check of a slot that the same transaction then deletes is not a slot.
func readResults(writes api.KVTxnOps, results []*api.KVPair) []*api.KVPair {
	skip := 0
	for _, op := range writes {
		switch op.Verb {
		case api.KVDelete, api.KVDeleteCAS, api.KVDeleteTree, api.KVCheckNotExists:
		default:
			skip++
		}
	}
	return results[min(skip, len(results)):]
}

// applyAndRead runs t and reads holder's view of the tier back in the same transaction (its
// treeOps, last). It returns the tier as the transaction left it, or nil when a
// check-and-set failed. When the answer is too large to take in one (junk under the tier),
// whether t was applied is unknown, and the tier is read again the bounded way: the caller
// decides on what it finds.
//
// The queue is read back only as far as holder's own entry: a waiter that finds the tier full
// needs no more, and a queue grows with the fleet. The snapshot then says so (partialQueue):
// whoever decides on free slots reads the whole tier first.
func (s *Semaphore) applyAndRead(ctx context.Context, t *txn, holder string) (*Snapshot, error) {
	t.reads = s.ownQueueOps(holder)
	ok, results, err := s.applyTxn(ctx, t)
	switch {
	case errors.Is(err, answercap.ErrTooLarge):
		return s.read(ctx, holder)
	case err != nil || !ok:
		return nil, err
	}
	snap, err := s.snapshot(results, holder)
	if snap != nil {
		snap.partialQueue = true
	}
	return snap, err
}

// commit applies t. A write that leaves a slot free reads the tier back in the same
// transaction: a host may have joined the queue after t's snapshot was read, and since a
// waiter sleeps until a write hands it a slot or nudges it, such a write must not leave it
// asleep; when the read shows one that could go, admit hands the slot over. (A host that
// joins after the write finds the slot free in its own read-back, and takes it.) A write that
// halts a revision reads back too, for the same reason: a mover of it that joined meanwhile
// would otherwise wait, held back, for its watch's safety net (a minute or more) before it
// learnt of the halt; its entry is deleted, which wakes it.
func (s *Semaphore) commit(ctx context.Context, t *txn, holder string) (bool, error) {
	if !t.free && t.halts == "" && !t.headCheck {
		ok, err := s.apply(ctx, t)
		if ok && err == nil {
			s.wakeRest(ctx, t.wakes)
		}
		return ok, err
	}
	t.reads = s.treeOps(holder)
	ok, results, err := s.applyTxn(ctx, t)
	if errors.Is(err, answercap.ErrTooLarge) {
		// Whether t was applied is unknown: the caller reads again and decides again (every
		// write here is idempotent on what it reads), and the waiters are looked after then.
		return false, nil
	}
	if err != nil || !ok {
		return ok, err
	}
	after, err := s.snapshot(results, holder)
	if err != nil {
		return true, nil // the waiters are looked after at their next look
	}
	s.wakeRest(ctx, t.wakes)
	if t.headCheck && after.passesHead() {
		s.dropHead(ctx, after)
	}
	if t.halts != "" {
		s.wakeRest(ctx, s.haltWakes(after, t.halts, len(after.Queue)))
	}
	if t.free && canAdmit(after) {
		if err := s.admit(ctx, holder); err != nil {
			return true, err
		}
	}
	return true, nil
}

// wakeRest deletes the queue entries of ops after a write that could not fit them, maxTxnOps
// at a time, which wakes their waiters. Best effort: a waiter not woken here finds out at its
// safety net's look.
func (s *Semaphore) wakeRest(ctx context.Context, ops api.KVTxnOps) {
	for len(ops) > 0 {
		n := min(len(ops), maxTxnOps)
		if _, err := s.apply(ctx, &txn{writes: ops[:n]}); err != nil {
			return
		}
		ops = ops[n:]
	}
}

// canAdmit reports whether snap shows a slot free and a waiter a write could hand it to.
func canAdmit(snap *Snapshot) bool {
	if snap.Disabled() || snap.Drift() || (snap.Max > 0 && snap.Held() >= snap.Max) {
		return false
	}
	for _, w := range snap.line("") {
		if snap.wakeable(w) {
			return true // handed a slot, or nudged to take it itself (see nudge)
		}
	}
	return false
}

// admit hands the free slots over to the waiters (a write of nothing but current and grants).
func (s *Semaphore) admit(ctx context.Context, holder string) error {
	tries := 0
	_, err := s.update(ctx, holder, func(snap *Snapshot) (*txn, error) {
		if !canAdmit(snap) {
			return nil, errUnchanged
		}
		t, err := s.changeTxn(snap, change{})
		if tries++; err != nil || tries > 1 {
			return t, err
		}
		return t, s.listHead(snap, t, "")
	})
	return err
}

// admitOn is one try of admit, decided on snap, a read of the whole line in hand that shows a
// slot free that a waiter ahead could take (canAdmit). A write that loses its race is not tried
// again: others hand slots over meanwhile, and each try would read the line again.
func (s *Semaphore) admitOn(ctx context.Context, holder string, snap *Snapshot) error {
	t, err := s.changeTxn(snap, change{})
	if err != nil {
		return err
	}
	if err := s.listHead(snap, t, ""); err != nil {
		return err
	}
	_, err = s.handOverFree(ctx, holder, t)
	return err
}

// handOverFree commits t, a write that hands free slots over (admitOn, admitFromHead). Slots it
// leaves free with a waiter left to take them are that waiter's to hand over: t nudges it (see
// nudge), so t needs no read back. Only a write that leaves a slot free with nobody to nudge
// reads the tier back and admits from the line (commit), for a host that joined after t's
// snapshot was read.
func (s *Semaphore) handOverFree(ctx context.Context, holder string, t *txn) (bool, error) {
	t.free = t.free && !t.nudges
	return s.commit(ctx, t, holder)
}

// rejected is nil when a failed transaction of ops only lost a race, and ErrRejected
// otherwise (kvtxn.Refused).
func (s *Semaphore) rejected(ops api.KVTxnOps, resp *api.KVTxnResponse) error {
	if why := kvtxn.Refused(ops, resp); why != "" {
		return fmt.Errorf("%w: %s: %s", ErrRejected, s.base, why)
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
