package lock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/answercap"
	"github.com/tierlock/tierlock/lock/schema"
)

// acquisition is one call of Acquire: the run's place in line (q, nil when it has none), a
// snapshot already in hand (next, from joining the queue; nil to read), and the check-and-set
// races it lost in a row. Each step decides on one snapshot and acts once: a take (or a
// re-entry), a join, a wait, or an answer.
type acquisition struct {
	s     *Semaphore
	req   Request
	q     *queue
	next  *Snapshot
	races int
	// netLook: the next snapshot decided on comes of a look of the safety net (see wait).
	netLook bool
	// looked: a look was read. The first look of every Acquire is at the run's own entry and
	// the slots, not at the whole line: a run that finds the tier full joins the line without
	// reading it. Hosts that arrive into a long line each read it whole before; at M=2,000
	// arriving over 30 s that was more than half of a run's bytes (bench/README.md, "The first
	// look without the line"). The same goes for a retry that kept its place in line (see
	// Acquire): such retries come in numbers when Consul is overloaded.
	looked bool
	// blind: the take in flight was decided on a look that did not read the line (see look);
	// what it reads back says whether it passed anyone.
	blind bool
	// then is what the step does with the snapshot look returns, when a slot is free but the
	// snapshot shows only the run's own entry: read the line (thenDecide, through a nil
	// snapshot), settle first (thenSettle), or hand the free slots over from line_head
	// (thenHead). settled: this Acquire has settled once. viaHead: the next look that finds a
	// slot free tries line_head before the line (a look after settling, or after a nudge);
	// headTries: the hand-overs from the head that lost in a row.
	then             next
	settled, viaHead bool
	headTries        int
	// resumed: this Acquire resumed the place in line an earlier call of the run kept (a
	// retry after a Consul error). Such retries come in numbers when a burst overloads
	// Consul, and each that found a slot free read the line; they settle like a waiter that
	// lost a race (bench/README.md, "What a burst that degrades does, second by second").
	resumed bool
}

// maxHeadTries bounds the hand-overs from line_head one look after another that lose to other
// writes before the acquisition reads the line.
const maxHeadTries = 3

// next is what a step does besides deciding (see acquisition.then).
type next int

const (
	thenDecide next = iota
	thenSettle
	thenHead
)

// settleSpan bounds the moment a waiter that lost a race for a free slot, and whose look after
// joining still finds a slot free, waits before it looks again: a random moment up to it. In a
// burst (a tier enabled again, Consul back after an outage) every host but the first few loses
// the race for the free slots, joins, and finds slots still free (8, 23 or 38 of 50 held, in
// one run at M=2,000); each then read the line, as long as the burst, so the burst moved O(M²)
// bytes: 2,022 of that run's 2,484 reads of the line (bench/README.md, "A burst hands its free
// slots over from the head"). Settled, the first to look again reads the line and hands the
// free slots over, listing line_head as it does; those after it find the slots held, or hand
// the rest over from the head (admitFromHead), without reading the line.
//
// A tier of at most headLen slots (popsHead) settles without a request: the waiter sleeps, and
// its next look (which it makes anyway) tells whether a write handed it a slot meanwhile. A
// watch of its entry there cost every waiter of a burst's first moment a request more (about
// one per run at 10 slots, measured); without settling, three bursts of six at M=2,000 and
// 10 slots read the line at once about 1,000 to 1,600 times and degraded (hundreds of error
// answers, Consul at 1.8-3.9 GiB), and none of ten did after (bench/README.md, "A narrow tier
// settles too"). A wider tier watches its entry while it settles: a grant there, of the
// many a burst's first moment hands over, ends the wait at once.
const settleSpan = time.Second

// step reads (or takes the snapshot in hand), decides, and acts. done: the answer is slot or
// err; otherwise the acquisition looks again.
func (a *acquisition) step(ctx context.Context) (slot *Slot, done bool, err error) {
	snap, decision, ro, err := a.look(ctx)
	if err != nil || snap == nil {
		return nil, err != nil, err
	}
	netLook := a.netLook // of the snapshot decided on now, and of no later one
	a.netLook = false
	now := a.s.opts.Now().UTC()
	then := a.then
	a.then = thenDecide
	switch then {
	case thenSettle:
		return a.settle(ctx, snap)
	case thenHead:
		return a.fromHead(ctx, snap, ro, now)
	}
	switch decision {
	case Disabled:
		return nil, true, fmt.Errorf("%w: %s has max_concurrent 0", ErrDisabled, a.s.opts.Tier)
	case Halted:
		return nil, true, haltErr(a.s.opts.Tier, ro, a.req.Revision)
	case Wait, HeldBack:
		return a.wait(ctx, snap, decision, ro, now, netLook)
	}
	return a.take(ctx, snap, decision, ro, now)
}

// look is the snapshot to decide on and the decision, or a nil snapshot when a slot is free
// but the snapshot in hand shows only the reader's own queue entry: who goes first needs the
// whole queue, which the next look reads.
func (a *acquisition) look(ctx context.Context) (*Snapshot, Decision, schema.Rollout, error) {
	snap := a.next
	a.next = nil
	if snap == nil {
		read := a.s.read
		if !a.looked {
			read, a.looked = a.s.readSlots, true
		}
		a.viaHead = false // a fresh look: the line, or the run's first
		var err error
		if snap, err = read(ctx, a.req.Holder); err != nil {
			return nil, 0, schema.Rollout{}, a.unblind(ctx, err)
		}
	}
	if err := snap.Err(); err != nil {
		return nil, 0, schema.Rollout{}, a.unblind(ctx, err)
	}
	decision, ro, snap, err := a.s.judge(ctx, snap, a.req)
	if err != nil {
		return nil, 0, schema.Rollout{}, err
	}
	if snap.partialQueue && decision != HeldBack && (snap.Max < 0 || snap.Held() < snap.Max) {
		_, queued := snap.queued(a.req.Holder)
		if decision != Take || queued || a.q != nil || snap.mover(a.req.Holder, a.req.Revision) {
			_, placed := a.place(snap)
			inLine := decision == Take && placed
			switch {
			case inLine && a.viaHead && snap.fromHead() != nil:
				a.then = thenHead
			case inLine && (a.races > 0 || a.resumed) && !a.settled:
				a.then = thenSettle
			default:
				return nil, 0, schema.Rollout{}, nil // read the line
			}
			return snap, decision, ro, nil
		}
		// A newcomer that finds a slot free takes it without reading the line first, and
		// reads the line back in the take's transaction: a slot is free with someone in line
		// only for a moment (every write that frees one hands it over), so the read the take
		// would wait for finds nobody nearly always. If the take did pass somebody, it hands
		// the slot over at once (see take). A mover reads the line first: its admission moves
		// the rollout record, which giving the slot back would not undo.
		a.blind = true
	}
	return snap, decision, ro, nil
}

// place is the run's entry in snap's line, if it is the place this Acquire holds (its session's).
func (a *acquisition) place(snap *Snapshot) (schema.Waiter, bool) {
	w, ok := snap.queued(a.req.Holder)
	return w, ok && a.q != nil && w.Session == a.q.session
}

// settle waits a random moment up to settleSpan before the run looks again at the slots and
// the head (see settleSpan): asleep in a tier of at most headLen slots, else watching its own
// entry (as snap shows it), so that a write that hands it a slot meanwhile ends the wait.
func (a *acquisition) settle(ctx context.Context, snap *Snapshot) (*Slot, bool, error) {
	a.settled = true
	span := a.s.settleFor()
	if popsHead(snap) {
		if err := sleep(ctx, max(min(span, a.req.WaitUntil.Sub(a.s.opts.Now())), 0)); err != nil {
			return nil, true, err
		}
		own, err := a.s.readOwn(ctx, a.req.Holder)
		if err != nil {
			return nil, true, err
		}
		if held, ok := own.Holders[a.req.Holder]; ok && held.RunID == a.req.RunID {
			// A write handed the run its slot meanwhile, as a watch would have told.
			slot := slotOf(held, a.req)
			slot.line = servesHead(own)
			return slot, true, nil
		}
		a.next, a.viaHead = own, true // as after a nudge (see woke)
		return nil, false, nil
	}
	w, _ := snap.queued(a.req.Holder)
	woke, rec, err := a.s.watch(ctx, w, span, a.req.WaitUntil)
	if err != nil {
		return nil, true, err
	}
	if woke == nothingNew {
		woke = woken // not the safety net: look again, at the slots and the head
	}
	return a.woke(ctx, snap, woke, rec)
}

// fromHead hands the free slots snap shows over to the waiters line_head lists (admitFromHead),
// then waits as wait does: the watch ends at once if the write handed this waiter a slot. A
// head that cannot serve leaves the next look to read the line.
func (a *acquisition) fromHead(ctx context.Context, snap *Snapshot, ro schema.Rollout, now time.Time) (*Slot, bool, error) {
	a.viaHead = false
	switch a.s.admitFromHead(ctx, a.req.Holder, snap) {
	case headServed:
		a.headTries = 0
		return a.wait(ctx, snap, Wait, ro, now, false)
	case headLost:
		// Another write handed slots over first (or Consul failed this one): look again at
		// the slots and the head, which may be full by now or serve again.
		if a.headTries++; a.headTries < maxHeadTries {
			if err := a.s.backoff(ctx, a.headTries); err != nil {
				return nil, true, err
			}
			var err error
			if a.next, err = a.s.readOwn(ctx, a.req.Holder); err != nil {
				return nil, true, err
			}
			a.viaHead = true
			return nil, false, nil
		}
	}
	a.headTries = 0
	return nil, false, nil // the next look reads the line
}

// unblind ends a blind take whose outcome the next look was to tell, when that look failed
// on err: the tier cannot be read whole (junk under queue/, say), so a slot that take may
// hold is freed on a look at the slots alone (nothing handed over: the line cannot be read),
// and err is the answer. A run never holds a slot its caller does not learn of.
func (a *acquisition) unblind(ctx context.Context, err error) error {
	if !a.blind {
		return err
	}
	a.blind = false
	return a.giveBack(ctx, err)
}

// giveBack frees the slot this run took blind, when the tier could not be read whole after it
// (see unblind), and answers err.
func (a *acquisition) giveBack(ctx context.Context, err error) error {
	if derr := a.s.drop(ctx, a.req.Holder, a.req.RunID); derr != nil {
		return fmt.Errorf("%w (and the slot taken before it could be read may still be held: %w)", err, derr)
	}
	return err
}

// take writes the run's slot: a fresh one (Take) or the one an earlier run of the holder left
// held (Reenter). A lost race for a free slot joins the queue at once, when the run may wait.
func (a *acquisition) take(ctx context.Context, snap *Snapshot, decision Decision, ro schema.Rollout, now time.Time) (*Slot, bool, error) {
	s, req := a.s, a.req
	rec := req.Record
	rec.State, rec.StartedAt, rec.UpdatedAt, rec.ExitCode, rec.Batch, rec.Unhealthy = schema.StateRunning, now, now, nil, nil, false
	rec.Protocol = protocolOf(false)
	reentered := decision == Reenter
	var admitted *schema.Rollout
	if reentered {
		held := snap.Holders[req.Holder]
		if held.RunID == req.RunID {
			// An earlier call of this run committed; its answer was lost.
			if a.blind {
				a.blind = false
				if snap.passed(req.Holder) {
					return nil, false, s.Abandon(ctx, req.Holder, req.RunID)
				}
			}
			return &Slot{Record: held, Reentered: held.Attempts > 1}, true, nil
		}
		// Attempts start at 2 on re-entry even after a bare timestamp (Attempts 0), so that
		// Attempts == 1 always means a fresh slot.
		rec.Attempts = max(held.Attempts, 1) + 1
	} else {
		rec.Attempts = 1
		if snap.mover(req.Holder, req.Revision) {
			step := ro.Step
			rec.Batch, rec.Protocol, admitted = &step, protocolOf(true), &ro
		}
	}
	t, err := s.acquireTxn(snap, req.Holder, &rec, admitted)
	if err != nil {
		return nil, true, err
	}
	// The take reads the tier back: a blind take (see look) to learn whether it passed
	// anyone, and one alone in the tier as far as it knows for an uncontended Release to go
	// without a read (Release uses what it reads only then; in a tier with a line the read
	// carries the whole line).
	blind := a.blind && !reentered
	if blind || snap.alone(req.Holder) {
		t.reads = s.treeOps(req.Holder)
	}
	ok, results, err := s.applyTxn(ctx, t)
	if errors.Is(err, answercap.ErrTooLarge) {
		return nil, false, nil // taken or not, the next read (the bounded way) tells; a blind take is judged then
	}
	a.blind = false
	switch {
	case err != nil:
		return nil, true, err
	case ok:
		slot := &Slot{Record: rec, Reentered: reentered}
		seen, err := s.snapshot(results, req.Holder)
		if err == nil && seen != nil {
			err = seen.Err()
		}
		switch {
		case blind && err != nil:
			// The tier cannot be read whole: the run is refused, as a look at the line first
			// would have refused it, and the slot given back.
			return nil, true, a.giveBack(ctx, err)
		case blind && seen.passed(req.Holder):
			// Somebody was in line for the slot: it is theirs. Abandon hands it to the head of
			// the line (the run's own record never had a command behind it), and the run looks
			// again, now at the whole line.
			return nil, false, s.Abandon(ctx, req.Holder, req.RunID)
		}
		slot.seen = seen
		slot.line = servesHead(snap) && ((seen != nil && len(seen.Queue) > 0) || (!snap.partialQueue && len(snap.Queue) > 0))
		return slot, true, nil
	}
	a.races++
	// Lost a race for a free slot: others want it too, so queue up at once (joining reads
	// the tier back) rather than read and race again.
	if _, queued := snap.queued(req.Holder); decision == Take && !queued && s.opts.Sessions != nil && now.Before(req.WaitUntil) {
		if a.q, a.next, err = s.enqueue(ctx, a.q, req, now, snap); err != nil {
			return nil, true, err
		}
		return nil, false, nil
	}
	return nil, false, s.backoff(ctx, a.races)
}

// wait is a full tier (Wait) or a mover the rollout holds back (HeldBack): join the queue,
// or watch the run's own entry until a write hands it a slot, wakes it, or the wait ends.
// netLook: snap comes of a look of the safety net.
func (a *acquisition) wait(ctx context.Context, snap *Snapshot, decision Decision, ro schema.Rollout, now time.Time, netLook bool) (*Slot, bool, error) {
	s, req := a.s, a.req
	if req.WaitUntil.IsZero() || !now.Before(req.WaitUntil) {
		return a.giveUp(ctx, snap, decision, ro)
	}
	w, ok := a.place(snap)
	if !ok {
		// Not queued yet, or our entry went with a lost session: (re)join at the back,
		// and decide again on the tier as the join left it.
		var err error
		if a.q, a.next, err = s.enqueue(ctx, a.q, req, now, snap); err != nil {
			return nil, true, err
		}
		return nil, false, nil
	}
	if netLook && !snap.partialQueue && canAdmit(snap) {
		// The safety net found a slot free that no write handed over (a limit raised by hand,
		// say), and waiters ahead that could take it: hand it to them, as a release would,
		// rather than leave it until the first in line's own net. Best effort: a write that
		// fails leaves it to the next look, here or elsewhere in the line.
		_ = s.admit(ctx, req.Holder)
		return nil, false, nil // look again: the slot may be this waiter's
	}
	if a.settled && !snap.partialQueue && canAdmit(snap) {
		// A burst's waiter, settled, read the line and found slots free that it is not
		// first for: it hands them over on this read, once, listing line_head, so that the
		// waiters who look after it hand the rest over from the head (see settleSpan). A write
		// that loses leaves them to those others. The watch below ends at once if this write
		// handed this waiter a slot.
		_ = s.admitOn(ctx, req.Holder, snap)
	}
	if req.Waiting != nil {
		req.Waiting(snap)
	}
	until := req.WaitUntil
	if decision == HeldBack {
		if end := snap.bakeEnd(ro, req.Revision); !end.IsZero() && end.Before(until) {
			until = end // nobody writes when a bake ends: look again then, not at the safety net
		}
	}
	woke, rec, err := s.watch(ctx, w, a.q.net, until)
	if err != nil {
		return nil, true, err
	}
	return a.woke(ctx, snap, woke, rec)
}

// woke acts on a watch of the run's own entry (snap's) that ended as woke: the slot a write
// handed over (rec), or the look to come.
func (a *acquisition) woke(ctx context.Context, snap *Snapshot, woke wake, rec *schema.Record) (*Slot, bool, error) {
	s, req := a.s, a.req
	var err error
	switch woke {
	case handed:
		slot := slotOf(*rec, req)
		slot.line = servesHead(snap)
		return slot, true, nil
	case entryGone:
		// Most likely a host that predates grant_in_entry handed this waiter a slot: look at
		// that key alone, not at the whole tier, whose queue grows with the fleet.
		if slot, err := s.handedOver(ctx, req); err != nil || slot != nil {
			if slot != nil {
				slot.line = servesHead(snap)
			}
			return slot, true, err
		}
	case nothingNew:
		// The safety net for a limit changed by hand (or a bake that ended): a look at the
		// slots and the rollout, not at the whole queue (read only if a slot is free).
		if a.next, err = s.readSlots(ctx, req.Holder); err != nil {
			return nil, true, err
		}
		a.netLook = true
		a.q.net = min(2*a.q.net, maxNet) // a waiter long in line looks less often (see minNet)
	case woken:
		// The entry changed without a slot in it: most often a nudge (a slot free, and this
		// waiter the first a write left waiting), or the wait is over. A look at the slots and
		// line_head, which, if a slot is free, hands it over from the head (viaHead): of a
		// burst's waiters nudged one after the other, none then reads the line.
		if a.next, err = s.readOwn(ctx, req.Holder); err != nil {
			return nil, true, err
		}
		a.viaHead = true
	}
	return nil, false, nil
}

// giveUp ends a wait that is over: it leaves the queue and looks once more (a write may hand
// this waiter a slot until the moment its entry goes, and a slot handed over is never left
// held), removes an entry that outlived leaving, and answers ErrNoSlot or ErrHeldBack.
func (a *acquisition) giveUp(ctx context.Context, snap *Snapshot, decision Decision, ro schema.Rollout) (*Slot, bool, error) {
	s, req := a.s, a.req
	if a.q != nil {
		a.q.leave(ctx)
		a.q = nil
		return nil, false, nil
	}
	if w, queued := snap.queued(req.Holder); queued && a.races < maxRaces {
		// The entry outlived leaving (the session's destruction was lost on its way, and it
		// would live for the TTL), or an earlier attempt of this run left it: a release could
		// hand it a slot nobody will use. Delete it, then look once more, as above.
		a.races++
		if _, err := s.apply(ctx, &txn{writes: api.KVTxnOps{
			{Verb: api.KVDeleteCAS, Key: s.base + queueDir + req.Holder, Index: w.ModifyIndex},
		}}); err != nil {
			return nil, true, err
		}
		return nil, false, nil
	}
	if decision == HeldBack {
		return nil, true, heldBackErr(s.opts.Tier, snap, ro, req.Revision)
	}
	return nil, true, fmt.Errorf("%w: %s has %d of %d slots held, %d waiting", ErrNoSlot, s.opts.Tier,
		snap.Held(), snap.Max, len(snap.Queue))
}
