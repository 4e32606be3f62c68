package lock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/lock/schema"
)

// Progressive rollout. A run may name the revision R of the configuration it applies
// (Record.Revision). A run whose host has not converged on R (its converged/ record names
// another revision, or none) is a mover; only movers are limited by the rollout, and a host
// already on R never waits for them (see eligible). Two keys of the tier hold it:
//
//	rollout_policy  the schedule (Policy), set by an operator; absent: DefaultPolicy
//	rollout         the revision rolling out and its progress (Rollout), one small record
//
// The first mover to R is the canary (step 0). Step i admits Policy.size(i) movers; step i+1
// opens once every mover of step i has succeeded and the last success is older than the
// bake. Every write that admits a mover rewrites rollout with check-and-set (Admitted moves),
// so two writers cannot both admit into the last place of a step; the movers in flight are
// counted from their running/ records (Batch), so a mover that fails, is interrupted or dies
// gives its place up without anyone writing rollout. A success (the release) and a failure
// (the mark) rewrite rollout in the transaction that records them: no write of its own.

const (
	keyRollout = "rollout"
	keyPolicy  = "rollout_policy"
	// maxFailedShown is how many failed hosts the record names; Failures counts them all.
	maxFailedShown = 8
	// maxHaltWakes bounds the waiting movers a halt wakes in its own transaction (the others
	// are woken right after it commits: see Semaphore.commit).
	maxHaltWakes = 32
	// moverProtocol is the protocol of a mover's queue entry and record: a protocol-2 host
	// would hand it a slot without asking the rollout, so it must leave it alone (see Newer).
	moverProtocol = schema.Protocol
)

// Errors of the rollout, both exit 75 for a run: nothing ran, and trying again later is right.
var (
	// ErrHalted means the revision is halted in the tier: its failures reached the limit,
	// or an operator halted it. Only an operator resumes it.
	ErrHalted = errors.New("lock: revision halted")
	// ErrHeldBack means the rollout did not admit this mover within the wait: its step was
	// full, its bake not over, or its revision not yet complete in the tier it comes after.
	ErrHeldBack = errors.New("lock: revision not yet admitted by the rollout")
)

// gate is what the rollout says of one more mover.
type gate int

const (
	gateOpen   gate = iota // admitted: it may take a slot (max_concurrent still applies)
	gateBatch              // its step is full, not yet all succeeded, or baking
	gateAfter              // its revision has not completed in Policy.After (as far as is known)
	gateWhole              // it supersedes the rollout: judging the old one needs the whole tier
	gateHalted             // its revision is halted
)

// gate is the rollout's answer to one more mover (who) to rev at the snapshot's time, given extra
// movers of rev already admitted to the current step by the write being built and leaving,
// the holder whose run the write ends (its release or its failure: no longer in flight), and
// the record as the admission leaves it.
func (s *Snapshot) gate(r schema.Rollout, rev, who string, extra int, leaving string) (gate, schema.Rollout) {
	if r.Revision != rev {
		if p, ok := r.PastOf(rev); ok && p.State == schema.RolloutHalted {
			return gateHalted, r // a stale host asking for a halted revision again does not restart it
		}
		if r.Revision != "" && !s.whole {
			return gateWhole, r
		}
		from := r.Revision
		_, older := r.PastOf(rev)
		r = r.Supersede(rev, s.now, r.Revision != "" && s.Complete(r.Revision))
		if older && who != "" {
			r.NoteRollback(schema.Rollback{Holder: who, From: from, To: rev, At: s.now})
		}
		extra = 0
	} else {
		r = r.Clone()
	}
	if r.Halted() {
		return gateHalted, r
	}
	if s.Policy.After != "" && !r.AfterOK {
		if !s.afterDone {
			return gateAfter, r
		}
		r.AfterOK = true
	}
	size := s.Policy.Size(r.Step)
	if r.Full || size < 0 {
		r.Admitted++
		return gateOpen, r
	}
	running := s.inflight(rev, r.Step, leaving) + extra
	if r.Succeeded+running < size {
		r.Admitted++
		return gateOpen, r
	}
	if _, baking := s.bake(r); running == 0 && r.Succeeded >= size && !baking {
		r.Step, r.Admitted, r.Succeeded = r.Step+1, 1, 0
		return gateOpen, r
	}
	return gateBatch, r
}

// admitWaiter is the rollout's answer to a waiting mover w in a write that has already
// admitted batches and leaves the record ro (nil: as the snapshot read it): the record after
// w's admission, or false when w is held back.
func (s *Snapshot) admitWaiter(w schema.Waiter, ro *schema.Rollout, batches []schema.Record, leaving string) (*schema.Rollout, bool) {
	if s.rolloutErr != nil {
		return nil, false
	}
	cur := s.Rollout
	if ro != nil {
		cur = *ro
	}
	extra := 0
	for _, b := range batches {
		if b.Revision == cur.Revision && *b.Batch == cur.Step {
			extra++
		}
	}
	g, next := s.gate(cur, w.Revision, w.Holder, extra, leaving)
	return &next, g == gateOpen
}

// inflight counts the movers of rev admitted to step whose runs are still going (but leaving's,
// which the write being built ends): one that
// failed or was interrupted gave its place up (its failure is counted), as did one whose slot
// was freed without a success (its host died).
func (s *Snapshot) inflight(rev string, step int, leaving string) int {
	n := 0
	for h, r := range s.Holders {
		if h != leaving && r.Revision == rev && r.Batch != nil && *r.Batch == step && r.State == schema.StateRunning {
			n++
		}
	}
	return n
}

// mover reports whether a run of holder that applies rev is a mover: its host has not
// converged on rev (as far as this snapshot, which holds that host's record, knows).
func (s *Snapshot) mover(holder, rev string) bool {
	if rev == "" {
		return false
	}
	c, ok := s.Converged[holder]
	return !ok || c.Revision != rev
}

// Complete reports whether rev has completed in the tier: a whole read shows every host's
// convergence record on it (one at least), no mover to it still running, failed or waiting,
// the rollout not halted; or the record remembers that it had completed when a newer revision
// superseded it. It is what a tier's Policy.After waits for.
func (s *Snapshot) Complete(rev string) bool {
	r := s.Rollout
	if p, ok := r.PastOf(rev); ok {
		return p.Completed
	}
	if rev == "" || r.Revision != rev || r.Halted() || len(s.Converged) == 0 {
		return false
	}
	for _, c := range s.Converged {
		if c.Revision != rev {
			return false
		}
	}
	// Nor is a mover to rev still on its way: running, failed, or waiting. Hosts asking for
	// another revision are not judged here: they have moved past rev, or lag behind it.
	for h, rec := range s.Holders {
		if rec.Revision == rev && (s.mover(h, rev) || rec.State != schema.StateRunning) {
			return false
		}
	}
	for _, w := range s.Queue {
		if w.Revision == rev && s.mover(w.Holder, rev) {
			return false
		}
	}
	return len(s.badHolders) == 0
}

// eligible reports whether waiter w could be handed a slot now as far as the rollout goes: it
// is not a mover, or the rollout would admit it. A host already on its revision is never
// queued behind movers the rollout holds back.
func (s *Snapshot) eligible(w schema.Waiter) bool {
	if !w.Mover || w.Revision == "" {
		return true
	}
	if s.rolloutErr != nil {
		return false
	}
	g, _ := s.gate(s.Rollout, w.Revision, w.Holder, 0, "")
	return g == gateOpen
}

// succeed is the record after the success of rec's run (its host's convergence before it
// was on another revision): nil when the rollout does not change.
func (s *Snapshot) succeed(rec schema.Record) *schema.Rollout {
	r := s.Rollout
	if s.rolloutErr != nil || rec.Revision == "" || rec.Revision != r.Revision || !s.mover(rec.Holder, rec.Revision) {
		return nil
	}
	r = r.Clone()
	now := s.now
	r.Successes++
	r.LastSuccess = &now
	if rec.Batch != nil && *rec.Batch == r.Step {
		r.Succeeded++
	}
	return &r
}

// fail is the record after rec's run of a mover failed (or its health check did), halted if
// its failures reach the policy's limit: nil when the rollout does not change.
func (s *Snapshot) fail(rec schema.Record, code *int, unhealthy bool) *schema.Rollout {
	r := s.Rollout
	if s.rolloutErr != nil || rec.Revision == "" || rec.Revision != r.Revision || !s.mover(rec.Holder, rec.Revision) {
		return nil
	}
	r = r.Clone()
	r.Failures++
	r.Failed = append(r.Failed, schema.Failure{Holder: rec.Holder, ExitCode: code, Unhealthy: unhealthy, At: s.now})
	if len(r.Failed) > maxFailedShown {
		r.Failed = r.Failed[len(r.Failed)-maxFailedShown:]
	}
	if !r.Halted() && r.Failures >= max(s.Policy.Failures, 1) {
		now := s.now
		r.State, r.HaltedAt, r.HaltedBy = schema.RolloutHalted, &now, "failures"
	}
	return &r
}

// haltErr says why movers to r's revision exit: the revision, the host that failed it and
// its exit code.
func haltErr(tier string, r schema.Rollout, rev string) error {
	if r.Revision != rev {
		return fmt.Errorf("%w: %s in %s (halted before a newer revision superseded it; `tierlock rollout forget` lets it start again)", ErrHalted, rev, tier)
	}
	why := "by an operator"
	if n := len(r.Failed); n > 0 && r.HaltedBy != "operator" {
		f := r.Failed[n-1]
		code := "unknown"
		if f.ExitCode != nil {
			code = strconv.Itoa(*f.ExitCode)
		}
		how := "failed it with exit " + code
		if f.Unhealthy {
			how = "failed its health check"
		}
		why = fmt.Sprintf("after %d failure(s): %s %s", r.Failures, f.Holder, how)
	}
	return fmt.Errorf("%w: %s in %s %s; `tierlock rollout resume` restarts it at the canary", ErrHalted, rev, tier, why)
}

// judge is Acquire's decision for req on snap, with the rollout record its admission leaves.
// What the snapshot alone cannot tell, it reads: the whole tier when req's revision
// supersedes another (whether that one had completed), and the tier Policy.After names
// (whether it completed req's revision there), once, until a mover's take records it.
func (s *Semaphore) judge(ctx context.Context, snap *Snapshot, req Request) (Decision, schema.Rollout, *Snapshot, error) {
	if snap.mover(req.Holder, req.Revision) && snap.rolloutErr != nil {
		if _, holds := snap.Holders[req.Holder]; !holds {
			return 0, schema.Rollout{}, snap, fmt.Errorf("%w: %w", ErrInvalidConfig, snap.rolloutErr)
		}
	}
	for range 4 {
		d, g, r := snap.decide(req.Holder, req.Revision)
		switch {
		case g == gateWhole && s.joinFirst(snap, req):
			// Join the line first, so that of a wave of hosts asking for the new revision at
			// once only those that find themselves first in line read the whole tier (the
			// entry says which revision they want; see mayTakeNow). Once per revision and
			// tier, a host alone pays a session and a queue entry for it.
			return HeldBack, r, snap, nil
		case g == gateWhole && snap.partialQueue:
			// Whether this mover is first in line needs the whole queue.
			full, err := s.read(ctx, req.Holder)
			if err != nil {
				return 0, schema.Rollout{}, snap, err
			}
			snap = full
			continue
		case g == gateWhole && !snap.mayTakeNow(req.Holder):
			// Only a mover that would take a slot at once reads the whole tier to supersede
			// the rollout; the others wait in line (their entry says which revision they
			// want), so that a fleet asking for a new revision at once does not read the
			// whole tier once per host. The write that supersedes moves the record, and
			// from then on their revision is the rollout's.
			return HeldBack, r, snap, nil
		case g == gateWhole:
			whole, err := s.read(ctx, "")
			if err != nil {
				return 0, schema.Rollout{}, snap, err
			}
			if err := whole.Err(); err != nil {
				return 0, schema.Rollout{}, snap, err
			}
			snap = whole
			continue
		case g == gateAfter && !snap.afterDone:
			done, err := s.completedIn(ctx, snap.Policy.After, req.Revision)
			if err != nil {
				return 0, schema.Rollout{}, snap, err
			}
			if !done {
				return d, r, snap, nil
			}
			snap.afterDone = true
			continue
		}
		return d, r, snap, nil
	}
	return HeldBack, snap.Rollout, snap, nil
}

// joinFirst reports whether req, a mover whose revision would supersede the rollout, should
// join the queue before it reads the whole tier: it is not queued yet and may wait. (One that
// may not wait reads the whole tier at once, if it would take a slot.)
func (s *Semaphore) joinFirst(snap *Snapshot, req Request) bool {
	if _, queued := snap.queued(req.Holder); queued || s.opts.Sessions == nil {
		return false
	}
	return !req.WaitUntil.IsZero() && s.opts.Now().Before(req.WaitUntil)
}

// mayTakeNow reports whether holder would take a free slot at once, the rollout aside: a slot
// is free and no waiter ranks ahead of it, whatever revision that waiter asks for.
func (s *Snapshot) mayTakeNow(holder string) bool {
	if s.Max >= 0 && s.Held() >= s.Max {
		return false
	}
	me, queued := s.queued(holder)
	if !queued {
		me = schema.Waiter{Holder: holder, ConvergedAt: s.convergedAt(holder), CreateIndex: ^uint64(0)}
	}
	for _, w := range s.line(holder) {
		if w.Holder != holder && s.Order.before(w, me) && s.wakeable(w) {
			return false
		}
	}
	return true
}

// bakeEnd is when the bake of r's step ends, a moment after by this host's clock, if r is
// rev's rollout and its step is baking; zero otherwise. A mover the bake holds back watches
// its entry until then at most: the end of a bake is written by nobody, so no write wakes it
// (before, it found out at its watch's safety net, up to a minute later). The moment keeps the
// next look from coming before the end it waits for.
func (s *Snapshot) bakeEnd(r schema.Rollout, rev string) time.Time {
	end, baking := s.bake(r)
	if r.Revision != rev || s.Policy.Bake <= 0 || !baking {
		return time.Time{}
	}
	return end.Add(bakeMoment)
}

// bake is when the bake after r's last success ends, and whether that is still to come by
// this host's clock.
func (s *Snapshot) bake(r schema.Rollout) (end time.Time, baking bool) {
	if r.LastSuccess == nil {
		return time.Time{}, false
	}
	end = r.LastSuccess.Add(s.Policy.Bake)
	return end, s.now.Before(end)
}

// bakeMoment is how long after a bake's end a mover it held back looks again.
const bakeMoment = 50 * time.Millisecond

// wakeable reports whether waiter w should be woken when a slot stays free: the rollout
// admits it, or it asks for a revision that supersedes the rollout (it reads the whole tier
// and takes the slot itself, the gate's other answers being for the revision rolling out).
func (s *Snapshot) wakeable(w schema.Waiter) bool {
	if s.eligible(w) {
		return true
	}
	if !w.Mover || w.Revision == "" || s.rolloutErr != nil {
		return false
	}
	g, _ := s.gate(s.Rollout, w.Revision, w.Holder, 0, "")
	return g == gateWhole
}

// completedIn reports whether rev has completed in tier (Snapshot.Complete on a whole read).
func (s *Semaphore) completedIn(ctx context.Context, tier, rev string) (bool, error) {
	other, err := New(s.kv, Options{Prefix: s.opts.Prefix, Tier: tier, DefaultMax: s.opts.DefaultMax,
		RequestTimeout: s.opts.RequestTimeout, Now: s.opts.Now, ReadBatch: s.opts.ReadBatch})
	if err != nil {
		return false, err
	}
	snap, err := other.read(ctx, "")
	if err != nil {
		return false, fmt.Errorf("lock: rollout after %s: %w", tier, err)
	}
	return snap.Complete(rev), nil
}

// heldBackErr says why a mover's wait ended without the rollout admitting it.
func heldBackErr(tier string, snap *Snapshot, r schema.Rollout, rev string) error {
	_, g, _ := snap.decide("", rev)
	why := fmt.Sprintf("step %d (%s) of %s is full or not yet done", r.Step, sizeText(snap.Policy.Size(r.Step)), r.Revision)
	end, baking := snap.bake(r)
	switch {
	case g == gateAfter:
		why = fmt.Sprintf("%s has not completed in %s", rev, snap.Policy.After)
	case snap.Policy.Bake > 0 && baking:
		why = fmt.Sprintf("step %d of %s bakes until %s", r.Step, rev, end.Format(time.RFC3339))
	}
	return fmt.Errorf("%w: %s in %s: %s", ErrHeldBack, rev, tier, why)
}

func sizeText(n int) string {
	if n < 0 {
		return "max"
	}
	return fmt.Sprintf("%d hosts", n)
}

// SetPolicy stores the tier's rollout policy, with check-and-set. Setting the policy already
// stored writes nothing.
func (s *Semaphore) SetPolicy(ctx context.Context, p schema.Policy) (*Snapshot, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if p.After == s.opts.Tier {
		return nil, fmt.Errorf("lock: rollout after %s: a tier cannot come after itself", p.After)
	}
	value, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return s.update(ctx, "", func(snap *Snapshot) (*txn, error) {
		if old, _ := json.Marshal(snap.Policy); string(old) == string(value) && snap.rolloutErr == nil {
			if _, stored := snap.modify[keyPolicy]; stored {
				return nil, errUnchanged
			}
		}
		ops, err := s.withNote(snap, api.KVTxnOps{s.set(snap, keyPolicy, string(value))}, schema.NoteRollout, "rollout policy", string(value))
		if err != nil {
			return nil, err
		}
		return &txn{writes: ops}, nil
	})
}

// The operator's steering of a rollout (Steer).
const (
	SteerHalt        = "halt"         // stop rev: no mover starts it until resumed
	SteerResume      = "resume"       // a halted rev starts again at the canary
	SteerPromote     = "promote"      // open rev's next step now (no bake, no wait for the step)
	SteerPromoteFull = "promote-full" // rev skips the rest of its schedule (a hotfix)
	SteerForget      = "forget"       // drop rev from the record: its next mover starts afresh
)

// ErrSteer means a steering that does not apply to the rollout as it is (resume of a revision
// that is not halted, promote of a halted one); nothing was written.
var ErrSteer = errors.New("lock: rollout")

// Steer applies an operator's action to rev's rollout, with a note, in one transaction that
// also hands free slots to the movers it admits. A revision that is not the one rolling out
// (halt, promote) supersedes it, as a mover's would. It returns the tier as it was read.
func (s *Semaphore) Steer(ctx context.Context, action, rev string) (*Snapshot, error) {
	if err := schema.ValidateRevision(rev); err != nil {
		return nil, err
	}
	return s.update(ctx, "", func(snap *Snapshot) (*txn, error) {
		if snap.rolloutErr != nil && action != SteerForget {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, snap.rolloutErr)
		}
		r, err := steer(snap, action, rev)
		if err != nil || r == nil {
			if err == nil {
				err = errUnchanged
			}
			return nil, err
		}
		t, err := s.changeTxn(snap, change{rollout: r, noGrants: r.Halted()})
		if err != nil {
			return nil, err
		}
		if t.writes, err = s.withNote(snap, t.writes, schema.NoteRollout, "rollout "+action, rev); err != nil {
			return nil, err
		}
		return t, nil
	})
}

// forget is the record without rev (nil when it has none): the revision rolling out drops its
// progress, a remembered one is no longer remembered. A record that cannot be read is
// forgotten whole.
func forget(cur schema.Rollout, rev string, unreadable bool) *schema.Rollout {
	switch _, remembered := cur.PastOf(rev); {
	case cur.Revision == rev:
		return &schema.Rollout{State: schema.RolloutRolling, Past: cur.Past}
	case remembered:
		cur.Past = slices.DeleteFunc(cur.Past, func(p schema.PastRevision) bool { return p.Revision == rev })
		return &cur
	case unreadable:
		return &schema.Rollout{State: schema.RolloutRolling}
	}
	return nil
}

// resume is the record with the halted rev rolling out afresh at its canary.
func resume(snap *Snapshot, cur schema.Rollout, rev string) (*schema.Rollout, error) {
	if p, ok := cur.PastOf(rev); ok && p.State == schema.RolloutHalted {
		r := cur.Supersede(rev, snap.now, cur.Revision != "" && snap.Complete(cur.Revision))
		return &r, nil
	}
	if cur.Revision != rev || !cur.Halted() {
		return nil, fmt.Errorf("%w: %s is not halted in %s; nothing to resume", ErrSteer, rev, snap.Tier)
	}
	// The rollout starts afresh at the canary: its counts, the failure limit and the
	// canary's warning (check's --rollout-warning) anew.
	cur.State, cur.HaltedAt, cur.HaltedBy, cur.Step, cur.Admitted, cur.Succeeded = schema.RolloutRolling, nil, "", 0, 0, 0
	cur.Failures, cur.Failed, cur.LastSuccess, cur.Since, cur.Successes = 0, nil, nil, snap.now, 0
	return &cur, nil
}

// steer is the record after action on rev, nil when nothing changes.
func steer(snap *Snapshot, action, rev string) (*schema.Rollout, error) {
	cur := snap.Rollout.Clone()
	if snap.rolloutErr != nil {
		cur = schema.Rollout{}
	}
	now := snap.now
	switch action {
	case SteerForget:
		return forget(cur, rev, snap.rolloutErr != nil), nil
	case SteerResume:
		return resume(snap, cur, rev)
	}
	if cur.Revision != rev {
		if p, ok := cur.PastOf(rev); ok && p.State == schema.RolloutHalted && action != SteerHalt {
			return nil, fmt.Errorf("%w: %s is halted in %s: resume it first", ErrSteer, rev, snap.Tier)
		}
		cur = cur.Supersede(rev, now, cur.Revision != "" && snap.Complete(cur.Revision))
	}
	switch action {
	case SteerHalt:
		if cur.Halted() {
			return nil, nil
		}
		cur.State, cur.HaltedAt, cur.HaltedBy = schema.RolloutHalted, &now, "operator"
	case SteerPromote, SteerPromoteFull:
		if cur.Halted() {
			return nil, fmt.Errorf("%w: %s is halted in %s: resume it first", ErrSteer, rev, snap.Tier)
		}
		if action == SteerPromoteFull {
			if cur.Full {
				return nil, nil
			}
			cur.Full = true
		} else {
			cur.Step, cur.Admitted, cur.Succeeded, cur.LastSuccess = cur.Step+1, 0, 0, nil
		}
		cur.AfterOK = true // an operator's promotion stands for the tier it comes after
	default:
		return nil, fmt.Errorf("%w: unknown action %q", ErrSteer, action)
	}
	return &cur, nil
}
