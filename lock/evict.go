package lock

import (
	"context"
	"slices"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/lock/schema"
)

// Evicted is what Evict removed from a tier.
type Evicted struct {
	Slots   []schema.Record // running/ keys, sorted by holder
	Waiters []schema.Waiter // queue/ entries, sorted by holder
	// Converged are the converged/ records, sorted by holder: a host that is gone is no
	// longer expected to converge.
	Converged []schema.Convergence
}

// Evict frees the slot of every holder of the tier for which match returns true, whatever its
// state and whichever run holds it, and removes every queue entry and converged/ record match
// selects, in one transaction, and returns what it removed. match sees each running/ key's
// holder and record (a value that cannot be read comes as a Record with only Holder set, so it
// can still be matched by name), each queue entry as Waiter.Record and each convergence as
// Convergence.Record. Nothing matching is not an error: nothing is written, which makes a
// repeated eviction harmless.
//
// match is asked again after every lost check-and-set race, against what was re-read, so a
// slot that changed hands in between (a new run of a reused host name, say) is judged anew.
// More matches than fit in one transaction (126) take several, each keeping the invariant.
// Slots freed while hosts wait are handed to the first in line by a write that follows.
func (s *Semaphore) Evict(ctx context.Context, match func(holder string, rec schema.Record) bool) (Evicted, error) {
	var all Evicted
	for {
		var batch Evicted
		more := false
		_, err := s.update(ctx, "", func(snap *Snapshot) (*txn, error) {
			var t *txn
			batch, t, more = s.evictTxn(snap, match)
			if t == nil {
				return nil, errUnchanged
			}
			return t, nil
		})
		if err != nil {
			return all, err
		}
		all.Slots = append(all.Slots, batch.Slots...)
		all.Waiters = append(all.Waiters, batch.Waiters...)
		all.Converged = append(all.Converged, batch.Converged...)
		if !more {
			slices.SortFunc(all.Waiters, func(a, b schema.Waiter) int { return strings.Compare(a.Holder, b.Holder) })
			slices.SortFunc(all.Converged, func(a, b schema.Convergence) int { return strings.Compare(a.Holder, b.Holder) })
			return all, nil
		}
	}
}

// deletes collects the deletes of one eviction, as many as there is room for: full once one
// did not fit (the rest go in the next transaction).
type deletes struct {
	ops  api.KVTxnOps
	room int
	full bool
}

// add adds op if there is room, and reports whether it did.
func (d *deletes) add(op *api.KVTxnOp) bool {
	if d.full || len(d.ops) == d.room {
		d.full = true
		return false
	}
	d.ops = append(d.ops, op)
	return true
}
