package lock

import (
	"context"
	"fmt"
	"time"
)

// maxBlock bounds one blocking query; Consul caps them at 10 minutes anyway.
const maxBlock = 5 * time.Minute

// wait blocks until the tier changes after snap, or until is reached (ErrNoSlot).
//
// This is the seam where waiting lives: for now every waiter watches the whole tier, so a
// release wakes all of them and they race for the slot.
func (s *Semaphore) wait(ctx context.Context, snap *Snapshot, until time.Time) error {
	left := until.Sub(s.opts.Now())
	if until.IsZero() || left <= 0 {
		return fmt.Errorf("%w: %s has %d of %d slots held", ErrNoSlot, s.opts.Tier, snap.Held(), snap.Max)
	}
	_, err := s.read(ctx, snap.LastIndex, min(left, maxBlock))
	return err
}
