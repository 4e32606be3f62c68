package lock

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/lock/schema"
)

// The planning of writes: from a snapshot to the transaction that writes a change, hands the
// slots it leaves free to the head of the line (grants), wakes the next waiter (nudge), or
// frees a dead host's slots (evictTxn). Nothing here does I/O: consul.go commits what these
// build, and the tests of these (txn_test.go, rank_test.go) need no Consul.

// change is one write to a tier: put (rec != nil) or delete running/<holder>, or neither.
type change struct {
	holder string
	rec    *schema.Record
	delete bool
	// noGrants leaves free slots free (see grants): for a wake, which rewrites current alone.
	noGrants bool
	// reach is how far down the line this write hands its slot over: 0, to the first who can
	// go; k, to the k-th (modulo the line's length). A write that lost a race for a waiter to
	// another that freed a slot at the same moment reaches as far as its holder is down the
	// holders (see grants).
	reach int
	// rollout, if set, is the rollout record as this change leaves it (a mover admitted, a
	// success or a failure recorded); grants go on from it, and it is written with
	// check-and-set.
	rollout *schema.Rollout
}

// changeTxn is the transaction that writes ch, hands over the slots it leaves free (grants),
// and sets current to the resulting number of running/ keys, guarded by check-and-set on what
// snap read.
//
// A write that leaves the number of holders as it was (a release that hands its slot over, a
// failure or an interruption recorded, a re-entry) does not touch current, nor check the other
// holders' keys: it cannot change the count, so it need not be serialised with the writes that
// do, and concurrent releases no longer fail one another. Its own check-and-sets (the holder's
// key, the waiter's entry and key) and the check of max_concurrent keep it correct. A tier
// whose current disagrees with its keys is always written whole, which puts current right.
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
	switch {
	case ch.rec != nil:
		value, err := json.Marshal(ch.rec)
		if err != nil {
			return nil, fmt.Errorf("lock: encode record: %w", err)
		}
		t.writes = append(t.writes, s.set(snap, own, string(value)))
	case ch.delete:
		if exists {
			t.writes = append(t.writes, s.mustExist(snap, own))
		}
		t.writes = append(t.writes, s.del(snap, own))
	}
	if idx, ok := snap.granted[ch.holder]; ok {
		// The news of this holder's slot, still there: its session's end was lost.
		t.writes = append(t.writes, &api.KVTxnOp{Verb: api.KVDeleteCAS, Key: s.base + queueDir + ch.holder, Index: idx})
	}
	ro := ch.rollout
	if !ch.noGrants {
		ops, to, after, err := s.handOver(snap, ch, count, exists)
		if err != nil {
			return nil, err
		}
		t.writes, t.served, count, ro = append(t.writes, ops...), to, count+len(to), after
		if nudge := s.nudge(snap, ch.holder, count, to); nudge != nil {
			t.writes, t.nudges = append(t.writes, nudge), true
		}
	}
	if ro != nil {
		op, err := s.rolloutOp(snap, ro)
		if err != nil {
			return nil, err
		}
		t.writes = append(t.writes, op...)
		if halts(snap, ro) {
			t.halts = ro.Revision
		}
	}
	t.free = snap.Max < 0 || count < snap.Max
	_, hasCurrent := snap.modify[keyCurrent]
	if own != "" && count == snap.RunningKeys && hasCurrent && !snap.Drift() && !snap.badCurrent {
		return t, nil
	}
	for _, k := range snap.runningKeys() {
		if k != own {
			t.optional = append(t.optional, s.guard(snap, k))
		}
	}
	t.writes = append(t.writes, s.set(snap, keyCurrent, strconv.Itoa(count)))
	return t, nil
}

// handOver is what a write of ch hands over besides (see grants): the operations, the waiters
// handed slots, and the rollout record they leave (ch.rollout, or nil when neither changes
// it). changeTxn nudges the next waiter after them (see nudge).
func (s *Semaphore) handOver(snap *Snapshot, ch change, count int, exists bool) (api.KVTxnOps, map[string]bool, *schema.Rollout, error) {
	var taken []schema.Record // a mover this write admits itself, which its grants must count
	if ch.rec != nil && ch.rec.Batch != nil && !exists {
		taken = append(taken, *ch.rec)
	}
	// A release or a failure ends its holder's run: its place in the step is free for the
	// grants of the same write (the next step may open in it, at no extra write).
	leaving := ""
	if ch.delete || (ch.rec != nil && exists && ch.rec.State != schema.StateRunning) {
		leaving = ch.holder
	}
	return s.grants(snap, ch.holder, count, ch.reach, ch.rollout, taken, leaving)
}

// nudge rewrites, unchanged, the entry of the first waiter a write leaves waiting while slots
// stay free (more than one write hands over, or the limit was raised to unlimited): every
// waiter watches its own entry, so the rewrite wakes it, and it takes a slot and hands over
// the next ones. The write is a check-and-set: an entry that went meanwhile (its session
// ended) must not come back without one. It keeps the entry's session.
func (s *Semaphore) nudge(snap *Snapshot, skip string, count int, granted map[string]bool) *api.KVTxnOp {
	if snap.Disabled() || (snap.Max > 0 && count >= snap.Max) {
		return nil
	}
	for _, w := range snap.line(skip) {
		if granted[w.Holder] || !snap.wakeable(w) {
			continue // handed a slot by this write, or a mover the rollout holds back
		}
		value, err := json.Marshal(w)
		if err != nil {
			return nil
		}
		return &api.KVTxnOp{Verb: api.KVCAS, Key: s.base + queueDir + w.Holder, Value: value, Index: w.ModifyIndex}
	}
	return nil
}

// grants hands the slots that count (the holders a write leaves) keeps free to the waiters
// at the head of the queue, in rank order, in the same transaction: their records written as
// theirs, from what their entries carry, and their entries rewritten to carry the records or
// deleted (grantNews; check-and-set: a waiter that left, or whose session ended, fails the
// write, which is then decided again). So a release wakes no one to race for the slot: the
// head finds it already holds it, and current is not fought over by takes and releases. skip
// is the holder the write is for.
//
// A mover is handed a slot only as the rollout admits it, asked waiter by waiter with the
// record as the write leaves it so far (ro, or the snapshot's when nil): a success this write
// records may open the next step. taken are the movers the write admits besides (a take), not
// yet among the snapshot's holders. It returns the record the grants leave, nil if unchanged.
func (s *Semaphore) grants(snap *Snapshot, skip string, count int, reach int, ro *schema.Rollout, taken []schema.Record, leaving string) (api.KVTxnOps, map[string]bool, *schema.Rollout, error) {
	if snap.Disabled() || snap.Drift() {
		return nil, nil, ro, nil // disabled, or a count not to build on
	}
	line := snap.line(skip)
	if reach > 0 && len(line) > 1 {
		// Several holders freed slots at once (runs admitted together end together) and all
		// reached for the head of the line; give this slot to the waiter as far down the line
		// as this holder is down the holders (holderRank, after a lost race; cohortRank, in a
		// wide tier's release from the head), so that the others' tries do not collide.
		// They are admitted within moments of each other, so the order is kept as near as
		// makes no difference.
		k := reach % len(line)
		line = append(append([]schema.Waiter{line[k]}, line[:k]...), line[k+1:]...)
	}
	now := s.opts.Now().UTC()
	var ops api.KVTxnOps
	to := map[string]bool{}
	batches := taken // the movers admitted by this write, as extra for the gate
	for _, w := range line {
		if (snap.Max > 0 && count >= snap.Max) || len(to) >= maxGrants {
			break
		}
		rec := schema.Record{
			Holder: w.Holder, Hostname: w.Hostname, InstanceID: w.InstanceID, Node: w.Node, PID: w.PID,
			State: schema.StateRunning, StartedAt: now, UpdatedAt: now, Attempts: 1,
			Command: w.Command, RunID: w.RunID, Version: w.Version, Protocol: w.Protocol, Revision: w.Revision,
		}
		if w.Mover && w.Revision != "" {
			next, ok := snap.admitWaiter(w, ro, batches, leaving)
			if !ok {
				continue // held back: those behind it may go
			}
			step := next.Step
			rec.Batch = &step
			ro = next
			batches = append(batches, rec)
		}
		value, err := json.Marshal(rec)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("lock: encode record: %w", err)
		}
		entry := s.base + queueDir + w.Holder
		news, err := grantNews(entry, w, rec)
		if err != nil {
			return nil, nil, nil, err
		}
		ops = append(ops,
			&api.KVTxnOp{Verb: api.KVCheckIndex, Key: entry, Index: w.ModifyIndex},
			news,
			&api.KVTxnOp{Verb: api.KVCAS, Key: s.base + runningDir + w.Holder, Value: value, Index: 0})
		to[w.Holder] = true
		count++
	}
	return ops, to, ro, nil
}

// grantNews is how a grant tells w it holds rec: its entry (the key entry) rewritten to carry
// rec, when the waiter reads that (GrantInEntry: its watch answers with the slot, and it needs
// no look to learn it), else deleted (it then reads its running/ key). Both are check-and-set
// on the entry as read, and the rewrite keeps the entry's session, which removes it when the
// waiter leaves the line.
func grantNews(entry string, w schema.Waiter, rec schema.Record) (*api.KVTxnOp, error) {
	if !w.GrantInEntry {
		return &api.KVTxnOp{Verb: api.KVDeleteCAS, Key: entry, Index: w.ModifyIndex}, nil
	}
	w.Granted = &rec
	value, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("lock: encode queue entry: %w", err)
	}
	return &api.KVTxnOp{Verb: api.KVCAS, Key: entry, Value: value, Index: w.ModifyIndex}, nil
}

// evictTxn is the transaction that removes what match selects in snap, as many keys of it
// as fit beside its mandatory operations (more reports that there is more), and sets current
// to the running/ keys it leaves. It is nil when nothing matches.
func (s *Semaphore) evictTxn(snap *Snapshot, match func(string, schema.Record) bool) (ev Evicted, t *txn, more bool) {
	t = &txn{checks: s.guardMax(snap)}
	b := &deletes{room: maxTxnOps - t.mandatory() - 1 - len(s.treeOps(""))} // and the write of current, and the read-back
	removed := map[string]bool{}
	for _, k := range snap.runningKeys() { // sorted, so batches and results are in order
		holder := strings.TrimPrefix(k, runningDir)
		rec, ok := snap.Holders[holder]
		if !ok {
			rec = schema.Record{Holder: holder}
		}
		if match(holder, rec) && b.add(s.del(snap, k)) {
			removed[k] = true
			ev.Slots = append(ev.Slots, rec)
		}
	}
	for _, w := range snap.Queue {
		if match(w.Holder, w.Record()) && b.add(&api.KVTxnOp{Verb: api.KVDeleteCAS, Key: s.base + queueDir + w.Holder, Index: w.ModifyIndex}) {
			ev.Waiters = append(ev.Waiters, w)
		}
	}
	for _, c := range snap.Convergences() {
		if match(c.Holder, c.Record()) && b.add(s.del(snap, convergedDir+c.Holder)) {
			ev.Converged = append(ev.Converged, c)
		}
	}
	if len(b.ops) == 0 {
		return ev, nil, false
	}
	// Guards on the other holders' keys catch foreign writers; tierlock's own are serialised
	// by the check-and-set on current.
	for _, k := range snap.runningKeys() {
		if !removed[k] {
			t.optional = append(t.optional, s.guard(snap, k))
		}
	}
	t.writes = append(b.ops, s.set(snap, keyCurrent, strconv.Itoa(snap.RunningKeys-len(removed))))
	// Slots freed while hosts wait: the write reads the tier back and hands them over (commit).
	t.free = len(removed) > 0
	return ev, t, b.full
}
