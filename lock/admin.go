package lock

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/lock/schema"
)

// The operator's writes below change max_concurrent and max_saved, in one transaction with
// check-and-set on what they read. Each also rewrites current (with the number of running/
// keys, as every write does) to wake the head of the queue: raising the limit admits waiters
// at once, and disabling sends them all away.

// SetMax sets max_concurrent to n (≥ -1). It returns the snapshot it changed; setting the
// value already stored writes nothing.
func (s *Semaphore) SetMax(ctx context.Context, n int) (*Snapshot, error) {
	if n < -1 || n > schema.MaxLimit {
		return nil, fmt.Errorf("lock: max_concurrent %d: want -1 (unlimited), 0 (disabled) or N > 0", n)
	}
	return s.update(ctx, "", func(snap *Snapshot) (*txn, error) {
		if snap.MaxSet && snap.Max == n {
			return nil, errUnchanged
		}
		ops := []*api.KVTxnOp{s.set(snap, keyMax, strconv.Itoa(n))}
		action := "set-max"
		if n == 0 {
			action = "disable"
		}
		ops, err := s.withNote(snap, ops, schema.NoteMax, action, strconv.Itoa(n))
		if err != nil {
			return nil, err
		}
		return s.withWake(snap, n, ops...)
	})
}

// Disable sets max_concurrent to 0 and keeps the value it replaces in max_saved, for Enable.
// Disabling a disabled tier writes nothing.
func (s *Semaphore) Disable(ctx context.Context) (*Snapshot, error) {
	return s.update(ctx, "", func(snap *Snapshot) (*txn, error) {
		if snap.MaxSet && snap.Max == 0 { // a stored 0, not Disabled(): disable writes one
			return nil, errUnchanged
		}
		ops := []*api.KVTxnOp{s.set(snap, keyMax, "0")}
		switch {
		case snap.MaxSet:
			ops = append(ops, s.set(snap, keySaved, strconv.Itoa(snap.Max)))
		case snap.SavedSet:
			// max_concurrent was absent (the runs' default applied): enable removes it again.
			ops = append(ops, s.del(snap, keySaved))
		}
		ops, err := s.withNote(snap, ops, schema.NoteMax, "disable", "0")
		if err != nil {
			return nil, err
		}
		return s.withWake(snap, 0, ops...)
	})
}

// Enable sets max_concurrent to *n, or, when n is nil, back to what Disable saved: max_saved,
// or no value at all (the runs' --default-max) if the tier had none. max_saved is removed.
func (s *Semaphore) Enable(ctx context.Context, n *int) (*Snapshot, error) {
	if n != nil && (*n < 1 && *n != -1 || *n > schema.MaxLimit) {
		return nil, fmt.Errorf("lock: enable with max_concurrent %d: want -1 (unlimited) or N > 0", *n)
	}
	return s.update(ctx, "", func(snap *Snapshot) (*txn, error) {
		var ops []*api.KVTxnOp
		limit := snap.Max // the limit after enable, which the queue is told
		if n == nil && snap.badSaved {
			return nil, fmt.Errorf("%w: %s%s cannot be read; give enable the value to set", ErrInvalidConfig, s.base, keySaved)
		}
		switch {
		case n != nil:
			limit = *n
			if !snap.MaxSet || snap.Max != *n {
				ops = append(ops, s.set(snap, keyMax, strconv.Itoa(*n)))
			}
		case snap.SavedSet && snap.Saved != 0:
			limit = snap.Saved
			ops = append(ops, s.set(snap, keyMax, strconv.Itoa(snap.Saved)))
		case snap.MaxSet && snap.Max == 0: // a stored 0 (not Disabled()), which enable removes
			limit = s.opts.DefaultMax
			ops = append(ops, s.del(snap, keyMax))
		}
		if snap.SavedSet || snap.badSaved {
			ops = append(ops, s.del(snap, keySaved))
		}
		if len(ops) == 0 {
			return nil, errUnchanged
		}
		if _, noted := snap.Notes[schema.NoteMax]; noted {
			// The brake is off: its note goes with it (audit/history keeps it, and who
			// released it).
			ops = append(ops, &api.KVTxnOp{Verb: api.KVDelete, Key: s.base + auditDir + schema.NoteMax})
		}
		ops, err := s.withNote(snap, ops, "", "enable", strconv.Itoa(limit))
		if err != nil {
			return nil, err
		}
		return s.withWake(snap, limit, ops...)
	})
}

// withWake is ops, which set max_concurrent to max, with the queue told: under a limit with
// room, slots are handed to the waiters at the head (see grants) and the next one is nudged;
// disabled, every entry is deleted (those that do not fit, right after: see wakeRest), so that
// its waiter wakes, finds the tier disabled and leaves. current is rewritten with the
// count, guarded like every write. The checks go first: they check keys as they were read,
// before ops change them.
func (s *Semaphore) withWake(snap *Snapshot, max int, ops ...*api.KVTxnOp) (*txn, error) {
	next := *snap
	next.Max = max
	t, err := s.changeTxn(&next, change{noGrants: max == 0})
	if err != nil {
		return nil, err
	}
	// ops go before the write of current, wherever changeTxn put it (a change of no holder
	// always writes current), so that current is the last key the transaction sets.
	i := slices.IndexFunc(t.writes, func(op *api.KVTxnOp) bool { return op.Key == s.base+keyCurrent })
	if i < 0 {
		return nil, fmt.Errorf("lock: a change of max_concurrent that does not write current")
	}
	t.writes = slices.Concat(t.writes[:i], ops, t.writes[i:])
	if max == 0 {
		for _, w := range snap.Queue {
			op := &api.KVTxnOp{Verb: api.KVDelete, Key: s.base + queueDir + w.Holder}
			if t.mandatory() < maxTxnOps {
				t.writes = append(t.writes, op)
			} else {
				t.wakes = append(t.wakes, op)
			}
		}
	}
	return t, nil
}
