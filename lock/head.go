package lock

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/lock/schema"
)

// The head of the line (line_head). A release hands its slot to the first in line, and the
// first in line is found by rank, which is in each entry's value: so a release read the whole
// line, and in a burst of M hosts the releases alone moved O(M²) bytes (at M=2,000 and 10
// slots, most of a run's 82 KiB; bench/README.md, "The first look without the line, and the
// head of the line"). A release that reads the line
// now writes its first waiters, as their entries were, into line_head, and the releases after
// it hand their slots over from there, on a read of their own keys and that one, each removing
// the waiters it served (check-and-set on line_head, so that two releases never serve from
// one head). A release reads the line again only when the head cannot serve it: there is
// none, it is used up, or a waiter it lists left or changed (every grant is check-and-set on
// the waiter's entry as listed, so a stale head fails the write, never admits the wrong run).
//
// Its promise is its bound: every waiter it does not list ranks after the last one it listed
// when it was written. Waiters leaving, or handed slots by other writes, never break that; a
// waiter joining behind the bound does not either. One joining before it (a host that never
// converged, in the converged order) deletes line_head after its join (checkJoin), and a
// write of line_head reads the line back in the same transaction and deletes it again if
// someone joined before the bound meanwhile (passesHead, in Semaphore.commit): of a join and
// such a write, whichever commits second sees the other. Hosts of earlier versions know nothing of
// line_head: their grants leave it stale (the next release from it fails and reads the line),
// and in the converged order a waiter of theirs that joins before the bound is served after
// it, until the head is used up.

// headLen is how many waiters a release lists in line_head in a tier of at most headLen
// slots: a release from it reads them all (about 350 bytes each) and rewrites what is left,
// removing the waiter it served (check-and-set on line_head).
//
// Wider tiers list more (headLenFor) and their releases do not rewrite the head. Releases
// that end together (runs admitted together) would fight over it, one winning each round and
// the others reading it again; measured at 50 slots (M=2,000 hosts of 0.2 s runs, where 50
// releases end together several times a second) that fight took Consul down (bench/README.md,
// "50 slots, and why the head serves tiers of at most 16"). A release in a wide tier instead
// leaves the waiter it served listed, and learns which listed waiters still wait from one
// read-only transaction that checks their entries' indexes (notWaiting): no Raft write, and an
// answer that names only the ones gone. Releases that collide on one waiter reach further down
// the head the next time, as they do down the line (see grants).
const headLen = 16

// headBudget bounds a head's value in bytes, well under what hosts read (MaxValueLen),
// whatever the length of the commands its waiters run.
const headBudget = 48 << 10

// headLenFor is how many waiters line_head lists in a tier of max slots: headLen, or twice the
// slots in a wider tier, whose releases ending together serve as many waiters at once, up to
// the most one transaction checks (schema.MaxHeadWaiters).
func headLenFor(max int) int {
	if max <= headLen {
		return headLen
	}
	return min(2*max, schema.MaxHeadWaiters)
}

// popsHead reports whether a tier of snap's limit removes from line_head the waiters it
// serves (see headLen).
func popsHead(snap *Snapshot) bool {
	return snap.Max <= headLen
}

// refillAt is how short a release from the head may leave it before that release tops it up
// from a read of the line (refill), once its own hand-over has committed: half of what it
// lists when full. A head used up makes the release that finds it so read the line before it can hand
// over, and so do the releases that end meanwhile; measured at M=2,000 and 10 slots, those
// releases were behind 79% of the handoffs slower than 100 ms (bench/README.md, "Topping the
// head up"). A head topped up halfway keeps the releases that end during the refill's read
// serving from what it still lists. In a wide tier, whose releases do not shorten it, the
// release that serves the waiter listed halfway refills.
func refillAt(listed int) int {
	return listed / 2
}

// servesHead reports whether a tier of snap's limit hands slots over from line_head: any tier
// with a limit.
func servesHead(snap *Snapshot) bool {
	return snap.Max > 0
}

// trimmed is list cut to n waiters and to headBudget bytes.
func trimmed(list []schema.HeadWaiter, n int) []schema.HeadWaiter {
	list = list[:min(len(list), n)]
	size := 0
	for i, w := range list {
		b, err := json.Marshal(w)
		if err != nil {
			return list[:i]
		}
		if size += len(b) + 1; size > headBudget {
			return list[:i]
		}
	}
	return list
}

// headRefused reports whether Consul refused a transaction of ops for want of the right to
// write line_head: a token whose ACL policy predates the key (`tierlock acl-policy` grants it).
func (s *Semaphore) headRefused(ops api.KVTxnOps, resp *api.KVTxnResponse) bool {
	for _, e := range resp.Errors {
		if e != nil && e.OpIndex >= 0 && e.OpIndex < len(ops) && ops[e.OpIndex].Key == s.base+keyHead && strings.Contains(e.What, "Permission denied") {
			return true
		}
	}
	return false
}

// withoutHead removes t's writes of key (line_head), reporting whether there were any.
func (t *txn) withoutHead(key string) bool {
	n := len(t.writes)
	t.writes = slices.DeleteFunc(t.writes, func(op *api.KVTxnOp) bool { return op.Key == key })
	t.headCheck = false
	return len(t.writes) < n
}

// addHead reads line_head. One that cannot be read is not used; the next release that reads
// the line replaces it (check-and-set on the index kept here).
func (s *Snapshot) addHead(rel string, p *api.KVPair) {
	s.modify[rel] = p.ModifyIndex
	if h, err := schema.ParseLineHead(p.Value); err == nil {
		s.head = &h
	}
}

// fromHead is the snapshot with its line taken from line_head, for a release from it: nil
// when there is none, it was ranked in another order, or the tier is in no state to hand over
// on it (disabled, a drifted count, unlimited).
func (s *Snapshot) fromHead() *Snapshot {
	h := s.ranked()
	if h == nil || len(h.Waiters) == 0 || !servesHead(s) || s.Drift() {
		return nil
	}
	c := *s
	c.Queue = make([]schema.Waiter, 0, len(h.Waiters))
	for _, w := range h.Waiters {
		c.Queue = append(c.Queue, w.Waiter)
	}
	return &c
}

// headOp is the write of line_head that t leaves, and the head it writes: snap's line without
// the waiters t serves (t.served) and those holding slots, its first headLenFor listed with the bound at the
// last of them; deleted when nobody is left (nil when there was none either; the head is nil
// when it is deleted). from is the head snap's line came from, if any: its bound stands, as
// its promise does.
func (s *Semaphore) headOp(snap *Snapshot, t *txn, skip string, from *schema.LineHead) (*api.KVTxnOp, *schema.LineHead, error) {
	n := headLenFor(snap.Max)
	var list []schema.HeadWaiter
	for _, w := range snap.line(skip) {
		if !t.served[w.Holder] && len(list) < n {
			list = append(list, schema.HeadWaiterOf(w))
		}
	}
	list = trimmed(list, n)
	_, exists := snap.modify[keyHead]
	if len(list) == 0 {
		if !exists {
			return nil, nil, nil
		}
		return s.del(snap, keyHead), nil, nil
	}
	h := schema.LineHead{Order: string(snap.Order), Waiters: list}
	if from != nil {
		h.Bound = from.Bound
	} else {
		h.Bound = rankOf(list[len(list)-1])
	}
	value, err := json.Marshal(h)
	if err != nil {
		return nil, nil, fmt.Errorf("lock: encode line head: %w", err)
	}
	// Index 0 when absent: created only if still absent.
	return &api.KVTxnOp{Verb: api.KVCAS, Key: s.base + keyHead, Value: value, Index: snap.modify[keyHead]}, &h, nil
}

// listHead adds to t, decided on snap, the write of line_head for the releases after it, when
// snap read the line whole (a write that reads the line lists its head). A head that a
// newcomer could pass is checked after the write (headCheck). None can in the arrival order,
// nor in the converged order when the bound never converged: a newcomer ranks before the bound
// only by a convergence that is missing or older, and with equal (no) convergence it arrived
// later. So the first burst into a tier, and any tier of hosts new to it, writes the head
// without reading the line back.
func (s *Semaphore) listHead(snap *Snapshot, t *txn, skip string) error {
	if snap.partialQueue || !servesHead(snap) || s.noHead.Load() {
		return nil
	}
	op, h, err := s.headOp(snap, t, skip, nil)
	if err != nil || op == nil {
		return err
	}
	t.writes = append(t.writes, op)
	if h != nil && snap.Order != OrderArrival && h.Bound.ConvergedAt != nil {
		t.headCheck = true
	}
	return nil
}

// ranked is the snapshot's line_head if it was ranked in the order this host ranks by, else
// nil: a host of another order neither serves from it nor holds it to its promise.
func (s *Snapshot) ranked() *schema.LineHead {
	if s.head == nil || QueueOrder(s.head.Order) != s.Order {
		return nil
	}
	return s.head
}

// lists reports whether h lists holder.
func lists(h *schema.LineHead, holder string) bool {
	return slices.ContainsFunc(h.Waiters, func(l schema.HeadWaiter) bool { return l.Holder == holder })
}

// rankOf is what ranks w, as a head's bound records it.
func rankOf(w schema.HeadWaiter) schema.HeadRank {
	return schema.HeadRank{ConvergedAt: w.ConvergedAt, CreateIndex: w.CreateIndex, Holder: w.Holder}
}

// beforeBound reports whether w ranks before h's bound in order o.
func beforeBound(o QueueOrder, w schema.Waiter, h *schema.LineHead) bool {
	b := h.Bound
	return o.before(w, schema.Waiter{Holder: b.Holder, ConvergedAt: b.ConvergedAt, CreateIndex: b.CreateIndex})
}

// passesHead reports whether snap, read whole, shows a waiter that line_head does not list but
// that ranks before its bound: the head then breaks its promise. The line is ranked, so the
// first waiter it does not list (and that holds no slot) tells.
func (s *Snapshot) passesHead() bool {
	h := s.ranked()
	if h == nil {
		return false
	}
	for _, w := range s.line("") {
		if !lists(h, w.Holder) {
			return beforeBound(s.Order, w, h)
		}
	}
	return false
}

// dropHead deletes line_head as snap read it, when it breaks its promise (see checkJoin and
// passesHead). Best effort: a head that stays lists waiters that rank before one who joined
// since, and that one is served once they are.
func (s *Semaphore) dropHead(ctx context.Context, snap *Snapshot) {
	_, _ = s.apply(ctx, &txn{writes: api.KVTxnOps{s.del(snap, keyHead)}})
}

// checkJoin deletes line_head after holder joined the line (snap is the join's read-back) if
// holder ranks before its bound and is not listed: a newcomer that ranks ahead of waiters
// already listed (in the converged order, a host that never converged).
func (s *Semaphore) checkJoin(ctx context.Context, snap *Snapshot, holder string) {
	h := snap.ranked()
	if h == nil {
		return
	}
	if me, ok := snap.queued(holder); ok && beforeBound(snap.Order, me, h) && !lists(h, holder) {
		s.dropHead(ctx, snap)
	}
}

// topUp is h with the waiters of line (a line read whole, ranked in h's order) that rank after
// its bound and that it does not list appended, up to n (and headBudget), and the bound moved
// to the last of them; nil when there is none to add. The listed waiters no longer in line
// (served, or gone) are dropped, and those still there are listed as line has them (a nudge
// rewrites an entry). The promise holds: every waiter not listed ranked after the new bound
// when line was read, and those joining since are checked as for any write of the head (see
// listHead).
func topUp(o QueueOrder, h *schema.LineHead, line []schema.Waiter, n int) *schema.LineHead {
	waiting := make(map[string]schema.Waiter, len(line))
	for _, w := range line {
		waiting[w.Holder] = w
	}
	up := *h
	up.Waiters = nil
	for _, l := range h.Waiters {
		if w, ok := waiting[l.Holder]; ok {
			up.Waiters = append(up.Waiters, schema.HeadWaiterOf(w))
		}
	}
	kept := len(up.Waiters)
	for _, w := range line {
		if len(up.Waiters) >= n {
			break
		}
		if w.Holder != h.Bound.Holder && !lists(h, w.Holder) && !beforeBound(o, w, h) {
			up.Waiters = append(up.Waiters, schema.HeadWaiterOf(w))
		}
	}
	if up.Waiters = trimmed(up.Waiters, n); len(up.Waiters) <= kept {
		return nil
	}
	up.Bound = rankOf(up.Waiters[len(up.Waiters)-1])
	return &up
}

// maxRefills bounds how often a refill reads line_head again after losing it to releases
// serving from it: each loss means the head was served from, which is its purpose.
const maxRefills = 5

// refill tops line_head up (topUp) from a read of the line, for holder, whose release from
// the head left it short (refillAt). Best effort, and after the release: the releases that
// end meanwhile serve from what the head still lists, and a refill that fails leaves the head
// to be listed again by the release that finds it used up. A refill that loses the head to
// such releases reads the head again, not the line: what they served ranked before the bound.
func (s *Semaphore) refill(ctx context.Context, holder string) {
	whole, err := s.read(ctx, holder)
	if err != nil || whole.partialQueue || !servesHead(whole) {
		return
	}
	line, snap := whole.line(""), whole
	for races := range maxRefills {
		h := snap.ranked()
		if h == nil || s.noHead.Load() {
			return // gone (used up, or dropped for a newcomer): the next release lists it
		}
		up := topUp(whole.Order, h, line, headLenFor(whole.Max))
		if up == nil {
			return
		}
		value, err := json.Marshal(up)
		if err != nil {
			return
		}
		t := &txn{writes: api.KVTxnOps{{Verb: api.KVCAS, Key: s.base + keyHead, Value: value, Index: snap.modify[keyHead]}}}
		t.headCheck = whole.Order != OrderArrival && up.Bound.ConvergedAt != nil
		if ok, err := s.commit(ctx, t, holder); err != nil || ok {
			return
		}
		if s.backoff(ctx, races+1) != nil {
			return
		}
		if snap, err = s.readOwn(ctx, holder); err != nil {
			return
		}
	}
}

// releaseFromHead releases slot and hands it to the first waiter line_head lists that can go,
// on a read of the slots and line_head, not of the line. done: released (or found released by
// an earlier attempt). Otherwise the caller reads the line: there is no head, it cannot fill
// the slot, or a waiter it lists left or changed since. refill: this release is the one to top
// the head up (see refillAt).
//
// In a tier of at most headLen slots the release removes the waiter it served from the head;
// in a wider one it leaves it listed, and first checks which listed waiters still wait
// (notWaiting), so that it serves one who does (see headLen).
func (s *Semaphore) releaseFromHead(ctx context.Context, slot *Slot) (done, refill bool, err error) {
	var hs *Snapshot // the slots and the head as read, without the waiters lost to others since
	lost, redecided := false, 0
	for races := range maxRaces {
		if hs == nil {
			snap, err := s.readOwn(ctx, slot.Holder)
			if err != nil {
				return false, false, err
			}
			if released(snap, slot) {
				return true, false, nil
			}
			if hs = snap.fromHead(); hs == nil {
				return false, false, nil
			}
			if !popsHead(hs) {
				gone, err := s.notWaiting(ctx, hs, slot.Holder)
				if err != nil {
					return false, false, err
				}
				hs = hs.without(gone)
			}
			redecided = 0
		}
		pops := popsHead(hs)
		reach := 0
		switch {
		case pops:
		case lost:
			reach = hs.holderRank(slot.Holder)
		default:
			reach = hs.cohortRank(slot.Holder)
		}
		t, err := s.releaseTxn(hs, slot, reach)
		if err != nil || t.free {
			return false, false, err // t.free: nobody listed can take the slot; the line decides
		}
		var left *schema.LineHead
		if pops {
			var op *api.KVTxnOp
			if op, left, err = s.headOp(hs, t, slot.Holder, hs.head); err != nil {
				return false, false, err
			}
			t.writes = append(t.writes, op)
		}
		ok, err := s.apply(ctx, t)
		var taken map[string]bool
		if !ok && err == nil && !pops {
			taken = s.takenWaiters(hs, t.lost)
		}
		switch {
		case err != nil:
			return false, false, err
		case ok && pops:
			at := refillAt(headLenFor(hs.Max))
			return true, left != nil && len(left.Waiters) <= at && len(hs.head.Waiters) > at, nil
		case ok:
			return true, servedAt(hs.head, t.served) == refillAt(len(hs.head.Waiters)), nil
		case pops && slices.Contains(t.lost, s.base+keyHead):
			// Another release served from the head first: read it again.
			hs = nil
		case !pops && taken != nil:
			// Other releases handed their slots to the waiters this one chose: decide again
			// without them, as far down the head as this holder is down the holders (as
			// grants do down the line), and after a few such losses read again.
			lost = true
			if redecided < maxRedecide {
				hs, redecided = hs.without(taken), redecided+1
				continue
			}
			hs = nil
		default:
			return false, false, nil // a listed waiter left or changed: the line decides
		}
		if err := s.backoff(ctx, races+1); err != nil {
			return false, false, err
		}
	}
	return false, false, nil
}

// servedAt is where h lists the waiter served (-1 when none, or not one).
func servedAt(h *schema.LineHead, served map[string]bool) int {
	if len(served) != 1 {
		return -1
	}
	return slices.IndexFunc(h.Waiters, func(l schema.HeadWaiter) bool { return served[l.Holder] })
}

// notWaiting names the waiters of hs's line (taken from line_head) whose entries changed or
// went since the head listed them: served since (a grant rewrites or deletes the entry), or
// gone. One read-only transaction of index checks, which Consul answers without a Raft write,
// naming each check that failed.
func (s *Semaphore) notWaiting(ctx context.Context, hs *Snapshot, skip string) (map[string]bool, error) {
	line := hs.line(skip)
	if len(line) == 0 {
		return nil, nil
	}
	ops := make(api.KVTxnOps, 0, len(line))
	for _, w := range line {
		ops = append(ops, &api.KVTxnOp{Verb: api.KVCheckIndex, Key: s.base + queueDir + w.Holder, Index: w.ModifyIndex})
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	ok, resp, _, err := s.kv.Txn(ops, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("lock: read %s: %w", s.base, err)
	}
	gone := map[string]bool{}
	if ok {
		return gone, nil
	}
	for _, e := range resp.Errors {
		if e != nil && e.OpIndex >= 0 && e.OpIndex < len(line) {
			gone[line[e.OpIndex].Holder] = true
		}
	}
	return gone, nil
}

// headAdmit is how a hand-over of free slots from line_head went (admitFromHead).
type headAdmit int

const (
	headNone   headAdmit = iota // the head cannot serve: none, used up, or nobody it lists can go
	headServed                  // the write committed
	headLost                    // the write lost a race, or failed: others hand slots over too
)

// admitFromHead hands the free slots snap shows (a read of the slots and line_head, for holder,
// a waiter) over to the waiters line_head lists, as admit does from the whole line, and as a
// release hands its slot over from the head: on that read, not on one of the line.
//
// Slots still free after the write, with waiters still listed, are the next listed waiter's
// to hand over: the write nudges it (see nudge), and it hands them over from the head in turn.
// With none listed, the write reads the tier back and admits from the line (commit), as any
// write that leaves a slot free does. Best effort: a Consul error counts as a lost race, since
// the free slots are every waiter's to hand over, and the one who lost looks again.
func (s *Semaphore) admitFromHead(ctx context.Context, holder string, snap *Snapshot) headAdmit {
	hs := snap.fromHead()
	if hs == nil || s.noHead.Load() {
		return headNone
	}
	if me, ok := snap.queued(holder); ok {
		// The head lists holder's entry as it was; a nudge has rewritten it since (that is
		// how holder came to look), so the grant to holder checks the entry as read now.
		for i := range hs.Queue {
			if hs.Queue[i].Holder == holder {
				hs.Queue[i] = me
			}
		}
	}
	pops := popsHead(hs)
	if !pops {
		gone, err := s.notWaiting(ctx, hs, "")
		if err != nil {
			return headLost
		}
		hs = hs.without(gone)
	}
	if !canAdmit(hs) {
		return headNone
	}
	t, err := s.changeTxn(hs, change{})
	if err != nil || len(t.served) == 0 {
		return headNone
	}
	if pops {
		op, _, err := s.headOp(hs, t, "", hs.head) // never nil: the head exists
		if err != nil {
			return headNone
		}
		t.writes = append(t.writes, op)
	}
	if ok, err := s.handOverFree(ctx, holder, t); ok && err == nil {
		return headServed
	}
	return headLost
}
