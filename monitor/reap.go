package monitor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// Options configure a Reaper.
type Options struct {
	// Prefix is the root of all tiers' keys. Default schema.DefaultPrefix ("chef").
	Prefix string
	// RequestTimeout bounds each Consul request. Default lock.DefaultRequestTimeout (10s).
	RequestTimeout time.Duration
	// ReadBatch is how many values a read fetches per transaction (lock.Options.ReadBatch):
	// smaller bounds memory tighter when junk lies under the prefix, at more requests.
	ReadBatch int
	// Now is the clock the catalog reaper judges --grace by. Default time.Now.
	Now func() time.Time
}

// Freed is a slot that was freed, or a queue entry that was removed (or, in a dry run, that
// would be).
type Freed struct {
	Tier string
	schema.Record
	// Queued marks a queue entry; its Record is what the entry says (schema.Waiter.Record).
	Queued bool
	// Converged marks a converged/ record; its Record is what the record says
	// (schema.Convergence.Record: StartedAt is the convergence time).
	Converged bool
}

// Reaper frees the slots of dead hosts across every tier under a prefix.
type Reaper struct {
	kv   lock.KV
	opts Options
}

// NewReaper returns a reaper for the tiers under opts.Prefix. It checks names and does no I/O.
func NewReaper(kv lock.KV, opts Options) (*Reaper, error) {
	opts.Prefix = strings.Trim(opts.Prefix, "/")
	if opts.Prefix == "" {
		opts.Prefix = schema.DefaultPrefix
	}
	if err := schema.ValidatePrefix(opts.Prefix); err != nil {
		return nil, err
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = lock.DefaultRequestTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Reaper{kv: kv, opts: opts}, nil
}

// Find reports what Reap would free (in the same order), from one consistent read, and the
// tiers it could not read, where nothing can be found. It writes nothing: it is Reap's dry
// run.
func (r *Reaper) Find(ctx context.Context, match Match) (Report, error) {
	found, unread, err := r.find(ctx, match)
	return Report{Freed: found, Unread: unread}, err
}

// findFreed is what Find reports as freed.
func (r *Reaper) findFreed(ctx context.Context, match Match) ([]Freed, error) {
	found, _, err := r.find(ctx, match)
	return found, err
}

// find is Find, and also says which tiers could not be read (junk under them: see
// lock.ReadAll), where nothing can be found.
func (r *Reaper) find(ctx context.Context, match Match) ([]Freed, []error, error) {
	snaps, err := lock.ReadAll(ctx, r.kv, lock.Options{Prefix: r.opts.Prefix, RequestTimeout: r.opts.RequestTimeout, ReadBatch: r.opts.ReadBatch})
	if err != nil {
		return nil, nil, err
	}
	var found []Freed
	var unread []error
	for _, snap := range snaps {
		found = append(found, matching(snap, match)...)
		for _, p := range snap.Problems {
			if errors.Is(p, lock.ErrTooManyKeys) {
				unread = append(unread, fmt.Errorf("monitor: tier %s not read: %w", snap.Tier, p))
			}
		}
	}
	return found, unread, nil
}

// reapOnce frees every slot and removes every queue entry match selects, in every tier under
// the prefix, one transaction per tier, and returns what it freed: per tier (sorted), the slots
// and then the queue entries, each sorted by holder. It is idempotent: slots already freed are
// not found again, and nothing found is not an error. A tier that fails does not stop the
// others; the errors are joined.
//
// The tiers are found with one read of the whole prefix; each tier with a match is then read
// again and judged again by Evict, inside its check-and-set, so what is freed is what match
// selects at the moment of the write.
func (r *Reaper) reapOnce(ctx context.Context, match Match) ([]Freed, error) {
	snaps, err := lock.ReadAll(ctx, r.kv, lock.Options{Prefix: r.opts.Prefix, RequestTimeout: r.opts.RequestTimeout, ReadBatch: r.opts.ReadBatch})
	if err != nil {
		return nil, err
	}
	var freed []Freed
	var errs []error
	for _, snap := range snaps {
		if len(matching(snap, match)) == 0 {
			continue // most tiers: nothing is written, nothing read again
		}
		sem, err := lock.New(r.kv, lock.Options{Prefix: r.opts.Prefix, Tier: snap.Tier, RequestTimeout: r.opts.RequestTimeout, ReadBatch: r.opts.ReadBatch})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ev, err := sem.Evict(ctx, match)
		for _, rec := range ev.Slots {
			freed = append(freed, Freed{Tier: snap.Tier, Record: rec})
		}
		for _, w := range ev.Waiters {
			freed = append(freed, Freed{Tier: snap.Tier, Record: w.Record(), Queued: true})
		}
		for _, c := range ev.Converged {
			freed = append(freed, Freed{Tier: snap.Tier, Record: c.Record(), Converged: true})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("monitor: reap %s: %w", snap.Tier, err))
			if !refused(err) {
				// Consul failing (not refusing this tier): the next tier would most likely
				// wait for the same failure. Stopping keeps one attempt within about one
				// request's timeout, so the caller's retry bound holds; reaping again is safe.
				break
			}
		}
	}
	return freed, errors.Join(errs...)
}

// refused reports whether err is a refusal of one tier (its stored values, or Consul's answer
// to its write), after which the other tiers are still worth trying.
func refused(err error) bool {
	return errors.Is(err, lock.ErrRejected) || errors.Is(err, lock.ErrInvalidConfig) || errors.Is(err, schema.ErrInvalidName) ||
		errors.Is(err, lock.ErrNotHeld)
}

// matching returns the slots, then the queue entries, then the converged/ records of snap that
// match selects, each sorted by holder, as Evict would see them.
func matching(snap *lock.Snapshot, match Match) []Freed {
	var slots, queued, conv []Freed
	for _, h := range snap.Unreadable() {
		if rec := (schema.Record{Holder: h}); match(h, rec) {
			slots = append(slots, Freed{Tier: snap.Tier, Record: rec})
		}
	}
	for h, rec := range snap.Holders {
		if match(h, rec) {
			slots = append(slots, Freed{Tier: snap.Tier, Record: rec})
		}
	}
	for _, w := range snap.Queue {
		if match(w.Holder, w.Record()) {
			queued = append(queued, Freed{Tier: snap.Tier, Record: w.Record(), Queued: true})
		}
	}
	for _, c := range snap.Convergences() {
		if match(c.Holder, c.Record()) {
			conv = append(conv, Freed{Tier: snap.Tier, Record: c.Record(), Converged: true})
		}
	}
	byHolder := func(a, b Freed) int { return strings.Compare(a.Holder, b.Holder) }
	slices.SortFunc(slots, byHolder)
	slices.SortFunc(queued, byHolder)
	slices.SortFunc(conv, byHolder)
	return append(append(slots, queued...), conv...)
}

// only narrows match to the slots and queue entries in found, by holder and run id: a slot
// that a new run took since found was read (a new host under a reused name) no longer matches.
func only(match Match, found []Freed) Match {
	type run struct{ holder, id string }
	seen := map[run]bool{}
	for _, f := range found {
		seen[run{f.Holder, f.RunID}] = true
	}
	return func(holder string, rec schema.Record) bool { return seen[run{holder, rec.RunID}] && match(holder, rec) }
}

// Report is what a reaping freed, and what it could not read.
type Report struct {
	// Freed is what was freed, in the order of the tiers, then slots, queue entries and
	// convergence records, each by holder. After an attempt whose answer was lost it is what
	// the reaping selected and is gone now: freed by it or, at the same moment, by someone
	// else.
	Freed []Freed
	// Unread names the tiers the reaping could not read, and why (junk under them): a slot of
	// the dead host there is not freed. They are not an error of the reaping, which frees what
	// it can read, so that one tier's junk does not fail the others; the caller reports them.
	Unread []error
}

// Reap frees every slot, queue entry and convergence record match selects, in every tier under
// the prefix (one transaction per tier), and reports what it freed.
//
// Monitor has no retry policy: do is the caller's. It makes each step, named by what for the
// caller's log ("reap", then, only if an attempt failed, "read what was freed"), retrying
// the errors that may pass; internal/retry's Budget.Do is one, and nil makes each step once.
// Retrying is safe: the first attempt reads what match selects, and every attempt frees only
// that, so an attempt made again after its answer was lost frees nothing a new run took
// meanwhile; what was freed is then known only by reading again, which Reap does.
//
// The error is the reaping's, or, if the reaping succeeded, that of the read of what was
// freed. The Report holds what is known either way.
func (r *Reaper) Reap(ctx context.Context, match Match, do func(ctx context.Context, what string, op func(context.Context) error) error) (Report, error) {
	if do == nil {
		do = func(ctx context.Context, _ string, op func(context.Context) error) error { return op(ctx) }
	}
	g := &reaping{r: r, match: match}
	err := do(ctx, "reap", g.attempt)
	rep := Report{Freed: g.freed}
	if g.failed {
		if ferr := do(ctx, "read what was freed", func(ctx context.Context) (err error) {
			rep.Freed, err = g.gone(ctx)
			return err
		}); err == nil {
			err = ferr
		}
	}
	rep.Unread = g.unread
	return rep, err
}

// reaping is one reaping that may take several attempts. The first attempt reads what match
// selects, and every attempt frees only that (func only).
type reaping struct {
	r      *Reaper
	match  Match
	seen   []Freed // what match selected at the first read; nil before
	unread []error // the tiers the first read could not read
	freed  []Freed // what attempts reported freeing
	failed bool    // an attempt failed: what it freed is not known
}

// attempt makes one attempt at freeing what is left.
func (g *reaping) attempt(ctx context.Context) error {
	if g.seen == nil {
		seen, unread, err := g.r.find(ctx, g.match)
		if err != nil {
			return err
		}
		g.seen, g.match, g.unread = append([]Freed{}, seen...), only(g.match, seen), unread
	}
	got, err := g.r.reapOnce(ctx, g.match)
	g.freed = append(g.freed, got...)
	if err != nil {
		g.failed = true
	}
	return err
}

// gone is what the reaping selected and is gone now, read again after an attempt failed: its
// answer may have been lost after Consul freed slots.
func (g *reaping) gone(ctx context.Context) ([]Freed, error) {
	left, err := g.r.findFreed(ctx, g.match)
	if err != nil {
		return g.freed, err
	}
	key := func(f Freed) string {
		return fmt.Sprint(f.Tier, "\x00", f.Holder, "\x00", f.RunID, "\x00", f.Queued, "\x00", f.Converged)
	}
	still := map[string]bool{}
	for _, f := range left {
		still[key(f)] = true
	}
	var gone []Freed
	for _, f := range g.seen {
		if !still[key(f)] {
			gone = append(gone, f)
		}
	}
	return gone, nil
}
