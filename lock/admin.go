package lock

import (
	"context"
	"fmt"
	"strconv"

	"github.com/hashicorp/consul/api"
)

// The operator's writes below touch only max_concurrent and max_saved, never current or
// running/, so they cannot break the invariant; each is still one transaction with
// check-and-set on what it read. The head of the queue watches the whole tier, so raising the
// limit admits waiters at once and disabling sends them all away.

// SetMax sets max_concurrent to n (≥ -1). It returns the snapshot it changed; setting the
// value already stored writes nothing.
func (s *Semaphore) SetMax(ctx context.Context, n int) (*Snapshot, error) {
	if n < -1 || n > maxLimit {
		return nil, fmt.Errorf("lock: max_concurrent %d: want -1 (unlimited), 0 (disabled) or N > 0", n)
	}
	return s.update(ctx, func(snap *Snapshot) (api.KVTxnOps, error) {
		if snap.MaxSet && snap.Max == n {
			return nil, errUnchanged
		}
		return api.KVTxnOps{s.set(snap, keyMax, strconv.Itoa(n))}, nil
	})
}

// Disable sets max_concurrent to 0 and keeps the value it replaces in max_saved, for Enable.
// Disabling a disabled tier writes nothing.
func (s *Semaphore) Disable(ctx context.Context) (*Snapshot, error) {
	return s.update(ctx, func(snap *Snapshot) (api.KVTxnOps, error) {
		if snap.MaxSet && snap.Max == 0 {
			return nil, errUnchanged
		}
		ops := api.KVTxnOps{s.set(snap, keyMax, "0")}
		switch {
		case snap.MaxSet:
			ops = append(ops, s.set(snap, keySaved, strconv.Itoa(snap.Max)))
		case snap.SavedSet:
			// max_concurrent was absent (the runs' default applied): enable removes it again.
			ops = append(ops, s.del(snap, keySaved))
		}
		return ops, nil
	})
}

// Enable sets max_concurrent to *n, or, when n is nil, back to what Disable saved: max_saved,
// or no value at all (the runs' --default-max) if the tier had none. max_saved is removed.
func (s *Semaphore) Enable(ctx context.Context, n *int) (*Snapshot, error) {
	if n != nil && (*n < 1 && *n != -1 || *n > maxLimit) {
		return nil, fmt.Errorf("lock: enable with max_concurrent %d: want -1 (unlimited) or N > 0", *n)
	}
	return s.update(ctx, func(snap *Snapshot) (api.KVTxnOps, error) {
		var ops api.KVTxnOps
		switch {
		case n != nil:
			if !snap.MaxSet || snap.Max != *n {
				ops = append(ops, s.set(snap, keyMax, strconv.Itoa(*n)))
			}
		case snap.SavedSet && snap.Saved != 0:
			ops = append(ops, s.set(snap, keyMax, strconv.Itoa(snap.Saved)))
		case snap.MaxSet && snap.Max == 0:
			ops = append(ops, s.del(snap, keyMax))
		}
		if snap.SavedSet {
			ops = append(ops, s.del(snap, keySaved))
		}
		if len(ops) == 0 {
			return nil, errUnchanged
		}
		return ops, nil
	})
}
