package lock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/lock/schema"
)

// Defaults for Options.
const (
	DefaultMaxConcurrent  = 1
	DefaultRequestTimeout = 10 * time.Second
)

// maxRaces bounds how often one operation re-reads after losing a check-and-set race. Each
// lost race means another writer made progress, so reaching it means something is wrong.
const maxRaces = 1000

// Options configure a Semaphore.
type Options struct {
	// Prefix is the root of all tiers' keys. Default schema.DefaultPrefix ("chef").
	Prefix string
	// Tier is ENVIRONMENT/SERVICE. Required.
	Tier string
	// DefaultMax is used while max_concurrent is absent. Its zero value disables such tiers;
	// the tierlock CLI passes DefaultMaxConcurrent (1) unless told otherwise.
	DefaultMax int
	// RequestTimeout bounds each Consul request; blocking queries get their wait time on top.
	// Default DefaultRequestTimeout (10s).
	RequestTimeout time.Duration
	// Now is the clock written into records. Default time.Now.
	Now func() time.Time
	// Note, if set, is written by SetMax and Disable (audit/max), ForceRelease (audit/release)
	// and Forget (audit/forget) in the same transaction as their change; Enable removes
	// audit/max.
	Note *schema.Note
	// Sessions binds queue entries to sessions; Acquire needs it to wait for a slot.
	Sessions Sessions
	// Retryable reports whether a Consul error may pass (a timeout, a 429, a 5xx) rather than
	// refuse: after one, Acquire keeps the run's place in line for the caller's retry of the
	// same run (consulclient.Retryable). Nil: no error keeps it.
	Retryable func(ctx context.Context, err error) bool
	// ReadBatch is how many values a read fetches per transaction (see read.go): what bounds
	// its memory when junk lies under the tier. Default defaultReadBatch (32).
	ReadBatch int
	// QueueTTL is the TTL of a waiter's session, from minQueueTTL to maxQueueTTL. Default
	// DefaultQueueTTL.
	QueueTTL time.Duration
	// QueueOrder ranks waiters. Default OrderConverged: least recently converged first.
	QueueOrder QueueOrder
}

// Semaphore is one tier's slots. It is safe for concurrent use.
type Semaphore struct {
	kv   KV
	opts Options
	base string // PREFIX/ENV/SERVICE/

	mu     sync.Mutex
	parked map[string]*queue // by run id: places in line kept across a retried Acquire

	netLeast time.Duration // the safety net's least period (minNet; shorter in tests)
	// settleFor is how long a waiter settles (see settleSpan): a random moment up to it, or
	// a set one in tests.
	settleFor func() time.Duration
	// noHead: Consul refused this token a write of line_head (an ACL policy that predates
	// it), so this semaphore neither lists nor serves from it (see head.go).
	noHead atomic.Bool
}

// New returns the semaphore of opts.Tier. It checks names and does no I/O.
func New(kv KV, opts Options) (*Semaphore, error) {
	if opts.Prefix == "" {
		opts.Prefix = schema.DefaultPrefix
	}
	opts.Prefix = strings.Trim(opts.Prefix, "/")
	if err := schema.ValidatePrefix(opts.Prefix); err != nil {
		return nil, err
	}
	if err := schema.ValidateTier(opts.Tier); err != nil {
		return nil, err
	}
	if opts.DefaultMax < -1 {
		return nil, fmt.Errorf("lock: default max %d is below -1", opts.DefaultMax)
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.QueueOrder == "" {
		opts.QueueOrder = OrderConverged
	}
	if _, err := ParseQueueOrder(string(opts.QueueOrder)); err != nil {
		return nil, err
	}
	if opts.QueueTTL == 0 {
		opts.QueueTTL = DefaultQueueTTL
	}
	if err := ValidateQueueTTL(opts.QueueTTL); err != nil {
		return nil, err
	}
	return &Semaphore{kv: kv, opts: opts, base: opts.Prefix + "/" + opts.Tier + "/", netLeast: minNet,
		settleFor: func() time.Duration { return rand.N(settleSpan) }}, nil
}

// ValidateQueueTTL checks a waiter's session TTL against the range Consul accepts,
// minQueueTTL to maxQueueTTL.
func ValidateQueueTTL(ttl time.Duration) error {
	if ttl < minQueueTTL || ttl > maxQueueTTL {
		return fmt.Errorf("lock: queue TTL %s is outside Consul's range for a session's TTL, %s to %s", ttl, minQueueTTL, maxQueueTTL)
	}
	return nil
}

// Read returns a consistent snapshot of the tier. Invalid stored values are in its Problems,
// not an error, so that operators can still look at a broken tier.
func (s *Semaphore) Read(ctx context.Context) (*Snapshot, error) {
	return s.read(ctx, "")
}

// Request asks for a slot.
type Request struct {
	// Record describes the run. Holder and RunID are required; Hostname, InstanceID, PID,
	// Command and Version are stored as given. State, times, ExitCode and Attempts are set by
	// Acquire.
	schema.Record
	// WaitUntil is how long to wait for a slot when the tier is full. Zero: do not wait.
	// Waiting needs Options.Sessions.
	WaitUntil time.Time
	// Waiting, if set, is called with the snapshot that found the tier full, before each wait.
	Waiting func(*Snapshot)
}

// Slot is a held slot.
type Slot struct {
	schema.Record      // as stored in running/<holder>
	Reentered     bool // an earlier run of this holder had left the slot held

	seen *Snapshot // the tier as the take left it, if it was read back; used once by Release
	// line: hosts were waiting when the slot was taken (it was handed over, or the take saw
	// them), so Release hands it over from line_head first (see head.go).
	line bool
}

// Acquire takes a slot for req.Holder in one transaction, or re-enters the slot an earlier
// run of that holder left held (no second slot is taken). A disabled tier wins over re-entry:
// ErrDisabled. A full tier is waited on in FIFO order (see queue.go) until req.WaitUntil, then
// ErrNoSlot, leaving no queue entry behind. Invalid stored values give ErrInvalidConfig and
// nothing is written.
//
// Acquire is idempotent for one RunID: called again after an attempt whose outcome is unknown
// (say, the connection broke after Consul committed), it returns the slot that attempt took.
// An attempt that ends on a Consul error that may pass keeps the run's place in line for the
// next; a caller that gives up instead calls Abandon, which gives the place up.
func (s *Semaphore) Acquire(ctx context.Context, req Request) (_ *Slot, err error) {
	if err := schema.ValidateName("holder", req.Holder); err != nil {
		return nil, err
	}
	if req.RunID == "" {
		return nil, fmt.Errorf("lock: acquire for %q without a run id", req.Holder)
	}
	if req.Revision != "" {
		if err := schema.ValidateRevision(req.Revision); err != nil {
			return nil, err
		}
	}
	a := &acquisition{s: s, req: req, q: s.unpark(req.RunID)}
	a.resumed = a.q != nil
	// A Consul error that may pass keeps the run's place in line (its session renewed, its
	// entry kept) for the caller's retry of the same run; anything else leaves it.
	defer func() {
		if a.q != nil && err != nil && ctx.Err() == nil && s.opts.Retryable != nil && s.opts.Retryable(ctx, err) {
			s.park(req.RunID, a.q)
			return
		}
		a.q.leave(ctx)
	}()
	for a.races < maxRaces {
		if slot, done, err := a.step(ctx); done || err != nil {
			return slot, err
		}
	}
	return nil, fmt.Errorf("lock: acquire %s: lost %d check-and-set races in a row", s.base, maxRaces)
}

// handedOver returns the slot a write handed to req's run (see grants), or nil if there is none.
func (s *Semaphore) handedOver(ctx context.Context, req Request) (*Slot, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	p, _, err := s.kv.Get(s.base+runningDir+req.Holder, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("lock: read %s%s%s: %w", s.base, runningDir, req.Holder, err)
	}
	if p == nil {
		return nil, nil
	}
	rec, err := schema.ParseRecord(req.Holder, p.Value)
	if err != nil || rec.RunID != req.RunID {
		return nil, nil // not this run's: the whole tier is read and decided on
	}
	return slotOf(rec, req), nil
}

// slotOf is the slot of req's run that a hand-over wrote as rec.
func slotOf(rec schema.Record, req Request) *Slot {
	if rec.Revision == "" {
		rec.Revision = req.Revision // handed over by a host that does not know the field
	}
	return &Slot{Record: rec, Reentered: rec.Attempts > 1}
}

// park keeps q, the place in line of run runID, for that run's next Acquire.
func (s *Semaphore) park(runID string, q *queue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.parked == nil {
		s.parked = map[string]*queue{}
	}
	s.parked[runID] = q
}

// unpark returns and forgets the place in line kept for run runID, or nil.
func (s *Semaphore) unpark(runID string) *queue {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.parked[runID]
	delete(s.parked, runID)
	return q
}

// acquireTxn writes rec as holder's slot (taken or re-entered) and removes holder's queue
// entry, if any, in the same transaction.
func (s *Semaphore) acquireTxn(snap *Snapshot, holder string, rec *schema.Record, admitted *schema.Rollout) (*txn, error) {
	t, err := s.changeTxn(snap, change{holder: holder, rec: rec, rollout: admitted})
	if err != nil {
		return nil, err
	}
	if _, ok := snap.queued(holder); ok {
		t.writes = append(t.writes, &api.KVTxnOp{Verb: api.KVDelete, Key: s.base + queueDir + holder})
	}
	return t, nil
}

// MarkFailed records that the slot's command exited with code and keeps the slot held.
func (s *Semaphore) MarkFailed(ctx context.Context, slot *Slot, code int) error {
	return s.mark(ctx, slot, schema.StateFailed, &code)
}

// MarkInterrupted records that the slot's command was stopped by a signal or timeout and
// keeps the slot held. code is nil when the command died of the signal.
func (s *Semaphore) MarkInterrupted(ctx context.Context, slot *Slot, code *int) error {
	return s.mark(ctx, slot, schema.StateInterrupted, code)
}

func sameCode(a, b *int) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}

// MarkUnhealthy records that the slot's command succeeded (with code) but its health check
// did not pass (see runner.Job's Health), and keeps the slot held: a failure like any other,
// shown as "unhealthy".
func (s *Semaphore) MarkUnhealthy(ctx context.Context, slot *Slot, code int) error {
	return s.markAs(ctx, slot, schema.StateFailed, &code, true)
}

func (s *Semaphore) mark(ctx context.Context, slot *Slot, state schema.State, code *int) error {
	return s.markAs(ctx, slot, state, code, false)
}

// markAs writes the slot's new state. A failure of a mover counts against its revision, in
// the same transaction (see Snapshot.fail), and may halt it.
func (s *Semaphore) markAs(ctx context.Context, slot *Slot, state schema.State, code *int, unhealthy bool) error {
	_, err := s.updateSlot(ctx, slot.Holder, func(snap *Snapshot) (change, error) {
		rec, err := s.own(snap, slot)
		if err != nil {
			return change{}, err
		}
		if rec.State == state && rec.Unhealthy == unhealthy && sameCode(rec.ExitCode, code) {
			// Marked already: a retry whose first answer was lost. Writing again would count
			// a mover's failure twice.
			return change{}, errUnchanged
		}
		if rec.Revision == "" {
			rec.Revision = slot.Revision
		}
		rec.State, rec.ExitCode, rec.UpdatedAt, rec.Unhealthy = state, code, s.opts.Now().UTC(), unhealthy
		ch := change{holder: slot.Holder, rec: &rec}
		if state == schema.StateFailed {
			ch.rollout = snap.fail(rec, code, unhealthy)
		}
		return ch, nil
	})
	return err
}

// Release frees the slot after a successful run and records the holder's convergence
// (converged/<holder>) in the same transaction. It is idempotent for one RunID: called again
// after an attempt whose answer was lost, it finds that run's convergence record where the slot
// was, and returns nil. It frees only the slot this run holds: ErrNotHeld when the slot is gone
// otherwise (an operator or the reaper freed it), or held by another run.
func (s *Semaphore) Release(ctx context.Context, slot *Slot) error {
	if slot.line && !s.noHead.Load() {
		// Most likely the line is still there: hand the slot over from its head, without
		// reading the line.
		slot.line = false
		if done, refill, err := s.releaseFromHead(ctx, slot); err != nil || done {
			if refill {
				s.refill(ctx, slot.Holder)
			}
			return err
		}
	}
	if seen := slot.seen; seen != nil {
		// Alone in the tier when it took the slot: most likely still alone, so release on
		// what the take read back, without reading first. A lost race (someone came
		// meanwhile) reads and tries again below; a contended tier never tries this, as a
		// failed write costs Consul more than the read it saves.
		slot.seen = nil
		if _, readable := seen.Holders[slot.Holder]; readable && seen.alone(slot.Holder) {
			if t, err := s.releaseTxn(seen, slot, 0); err == nil {
				if ok, err := s.commit(ctx, t, slot.Holder); err != nil || ok {
					return err
				}
			}
		}
	}
	tries := 0
	_, err := s.update(ctx, slot.Holder, func(snap *Snapshot) (*txn, error) {
		if released(snap, slot) {
			return nil, errUnchanged
		}
		tries++
		reach := 0
		if tries > 1 {
			reach = snap.holderRank(slot.Holder)
		}
		t, err := s.releaseTxn(snap, slot, reach)
		if err != nil || tries > 1 {
			return t, err // deciding again: another release may have listed the head already
		}
		return t, s.listHead(snap, t, slot.Holder)
	})
	return err
}

// released reports whether snap shows slot released by its own run: no slot of that run, and
// the convergence record that run's release wrote in the same transaction.
func released(snap *Snapshot, slot *Slot) bool {
	if held, ok := snap.Holders[slot.Holder]; ok && held.RunID == slot.RunID {
		return false
	}
	c, ok := snap.Converged[slot.Holder]
	return ok && c.RunID == slot.RunID
}

// Abandon undoes what run runID of holder may have taken without using it: the answer to its
// Acquire was lost, or the caller was stopped before the command started. A slot that run took
// fresh (Attempts 1) is freed, with no convergence record, since nothing ran; a slot it
// re-entered is marked interrupted, so that the failure an earlier run left there stays in
// sight. Nothing is changed when the run holds no slot, so Abandon may be repeated. A place in
// line kept for the run (see Acquire) is given up.
func (s *Semaphore) Abandon(ctx context.Context, holder, runID string) error {
	if err := schema.ValidateName("holder", holder); err != nil {
		return err
	}
	s.unpark(runID).leave(ctx) // a place in line kept for a retry that will not come
	// A look at the slots first: a run that gave up waiting holds none, nearly always, and
	// needs no read of the line, which only a slot to hand over needs. Runs that give up come
	// in numbers when Consul is overloaded, and each read the line, as long as the burst that
	// overloaded it (bench/README.md, "10,000 hosts"). Leaving ended the run's entry, so no
	// grant (check-and-set on that entry) hands it a slot after this look.
	own, err := s.readSlots(ctx, holder)
	if err != nil {
		return err
	}
	if rec, ok := own.Holders[holder]; !ok || rec.RunID != runID {
		return nil
	}
	_, err = s.updateSlot(ctx, holder, func(snap *Snapshot) (change, error) {
		rec, ok := snap.Holders[holder]
		switch {
		case !ok || rec.RunID != runID:
			return change{}, errUnchanged
		case rec.Attempts == 1:
			return change{holder: holder, delete: true}, nil
		}
		rec.State, rec.ExitCode, rec.UpdatedAt = schema.StateInterrupted, nil, s.opts.Now().UTC()
		return change{holder: holder, rec: &rec}, nil
	})
	return err
}

// drop frees the slot run runID of holder took without reading the line, when the tier could
// not be read whole after it (junk under queue/, say): on a look at its own entry and the
// slots, handing nothing over, since the line cannot be read. Nothing ran in the slot, so no
// convergence is written. Nothing is changed when the run holds no slot.
func (s *Semaphore) drop(ctx context.Context, holder, runID string) error {
	for races := range maxRaces {
		snap, err := s.readOwn(ctx, holder)
		if err != nil {
			return err
		}
		if rec, ok := snap.Holders[holder]; !ok || rec.RunID != runID {
			return nil
		}
		t, err := s.changeTxn(snap, change{holder: holder, delete: true})
		if err != nil {
			return err
		}
		if ok, err := s.apply(ctx, t); err != nil || ok {
			return err
		}
		if err := s.backoff(ctx, races+1); err != nil {
			return err
		}
	}
	return fmt.Errorf("lock: free %s%s%s: lost %d check-and-set races in a row", s.base, runningDir, holder, maxRaces)
}

// releaseTxn deletes slot's running/ key, sets current, and writes the holder's convergence.
func (s *Semaphore) releaseTxn(snap *Snapshot, slot *Slot, reach int) (*txn, error) {
	rec, err := s.own(snap, slot)
	if err != nil {
		return nil, err
	}
	if rec.Revision == "" {
		rec.Revision = slot.Revision
	}
	t, err := s.changeTxn(snap, change{holder: slot.Holder, delete: true, reach: reach, rollout: snap.succeed(rec)})
	if err != nil {
		return nil, err
	}
	op, err := s.convergedOp(slot, s.opts.Now().UTC())
	if err != nil {
		return nil, err
	}
	t.writes = append(t.writes, op)
	return t, nil
}

// own returns the holder's record if this run holds it.
func (s *Semaphore) own(snap *Snapshot, slot *Slot) (schema.Record, error) {
	if snap.badHolders[slot.Holder] {
		return schema.Record{}, fmt.Errorf("%w: %s%s%s cannot be read", ErrInvalidConfig, s.base, runningDir, slot.Holder)
	}
	rec, ok := snap.Holders[slot.Holder]
	if !ok || rec.RunID != slot.RunID {
		return schema.Record{}, fmt.Errorf("%w: %s by %s (run %s)", ErrNotHeld, s.opts.Tier, slot.Holder, slot.RunID)
	}
	return rec, nil
}

// ForceRelease frees holder's slot whatever its state, even when its value cannot be read,
// provided the run holding it is still runID: the run a Read showed the caller ("" for a slot
// recorded without one, by older tooling, or whose value cannot be read). Pinning the run makes
// a retry safe: sent again after its answer was lost, ForceRelease does not free a fresh slot
// that a new run of the holder took in between. It returns the record it removed (zero if
// unreadable), or ErrNotHeld when holder holds no slot of that run.
func (s *Semaphore) ForceRelease(ctx context.Context, holder, runID string) (schema.Record, error) {
	if err := schema.ValidateName("holder", holder); err != nil {
		return schema.Record{}, err
	}
	var freed schema.Record
	_, err := s.update(ctx, holder, func(snap *Snapshot) (*txn, error) {
		if _, ok := snap.modify[runningDir+holder]; !ok {
			return nil, fmt.Errorf("%w: %s has no slot held by %s", ErrNotHeld, s.opts.Tier, holder)
		}
		freed = snap.Holders[holder]
		if freed.RunID != runID {
			return nil, fmt.Errorf("%w: %s: %s's slot is held by run %q now, not %q", ErrNotHeld, s.opts.Tier, holder, freed.RunID, runID)
		}
		t, err := s.changeTxn(snap, change{holder: holder, delete: true})
		if err != nil {
			return nil, err
		}
		if t.writes, err = s.withNote(snap, t.writes, schema.NoteRelease, "release", holder); err != nil {
			return nil, err
		}
		return t, nil
	})
	return freed, err
}

// Repair sets current to the number of running/ keys. It returns the snapshot it repaired;
// a tier without drift is left untouched.
func (s *Semaphore) Repair(ctx context.Context) (*Snapshot, error) {
	return s.updateSlot(ctx, "", func(snap *Snapshot) (change, error) {
		if !snap.Drift() && !snap.badCurrent {
			return change{}, errUnchanged
		}
		return change{}, nil
	})
}

// errUnchanged tells update that there is nothing to write.
var errUnchanged = errors.New("lock: unchanged")

// maxRedecide bounds the writes update decides on one read after losing waiters to others.
const maxRedecide = 3

// update is read → decide → one check-and-set transaction, re-read after every lost race. It
// returns the snapshot the committed write (or the decision to write nothing) was based on.
//
// holder narrows the read to what that holder's slot needs (see read); "" reads everything.
//
// A write that lost only waiters it handed a slot to, because another write handed them one
// first (see takenWaiters), is decided again on the same read without them, up to maxRedecide
// times in a row: releases that end together all reach for the head of the line, and a read
// carries the whole line.
func (s *Semaphore) update(ctx context.Context, holder string, decide func(*Snapshot) (*txn, error)) (*Snapshot, error) {
	var snap *Snapshot
	redecided := 0
	for races := 0; races < maxRaces; races++ {
		if snap == nil {
			var err error
			if snap, err = s.read(ctx, holder); err != nil {
				return nil, err
			}
			redecided = 0
		}
		t, err := decide(snap)
		if err == errUnchanged {
			return snap, nil
		}
		if err != nil {
			return snap, err
		}
		ok, err := s.commit(ctx, t, holder)
		if err != nil || ok {
			return snap, err
		}
		if taken := s.takenWaiters(snap, t.lost); taken != nil && redecided < maxRedecide {
			snap = snap.without(taken)
			redecided++
			continue
		}
		snap = nil
		if err := s.backoff(ctx, races+1); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("lock: update %s: lost %d check-and-set races in a row", s.base, maxRaces)
}

// enqueue puts req in the queue as a new arrival carrying its last convergence (as snap read
// it), leaving its old place q (if any), and returns the tier as the join left it. The line
// snap shows, if it was read, sets the safety net's period.
func (s *Semaphore) enqueue(ctx context.Context, q *queue, req Request, now time.Time, snap *Snapshot) (*queue, *Snapshot, error) {
	q.leave(ctx)
	mover := snap.mover(req.Holder, req.Revision)
	line := len(snap.Queue) // a snapshot read back by a join shows only the reader's entry
	if snap.partialQueue {
		line = 0
	}
	net := safetyNet(line, s.netLeast)
	if q != nil {
		net = max(net, q.net) // joining again (a lost session): the line is no shorter
	}
	q, after, err := s.join(ctx, schema.Waiter{Holder: req.Holder, RunID: req.RunID, InstanceID: req.InstanceID, Node: req.Node, Since: now,
		Hostname: req.Hostname, PID: req.PID, Command: req.Command, Version: req.Version,
		Protocol: protocolOf(mover), Revision: req.Revision, Mover: mover, ConvergedAt: snap.convergedAt(req.Holder),
		GrantInEntry: true}, net)
	if err == nil {
		s.checkJoin(ctx, after, req.Holder)
	}
	return q, after, err
}

// backoff pauses a random moment after the races-th lost race in a row, growing to 20ms, so
// that writers who collided (a wave of releases, say) do not collide again at once.
func (s *Semaphore) backoff(ctx context.Context, races int) error {
	return sleep(ctx, rand.N(time.Duration(min(races, 10))*2*time.Millisecond))
}

// sleep pauses for d, or until ctx ends (its error). internal/retry has the same few lines;
// lock does not import that package (a Consul client's retry policy) for them.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// updateSlot is update for a change of one slot.
func (s *Semaphore) updateSlot(ctx context.Context, holder string, decide func(*Snapshot) (change, error)) (*Snapshot, error) {
	return s.update(ctx, holder, func(snap *Snapshot) (*txn, error) {
		ch, err := decide(snap)
		if err != nil {
			return nil, err
		}
		return s.changeTxn(snap, ch)
	})
}
