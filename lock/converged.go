package lock

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/lock/schema"
)

// Every host should converge regularly. A host's last successful run is recorded in
// converged/<holder>, written by the transaction that releases that run's slot (no extra
// request), and waiters are ranked by it: hosts that never converged first, then the longest
// unconverged, then arrival. Without it, hosts that keep a fixed timer offset and arrive last
// every cycle are turned away every cycle.

// QueueOrder is how waiters are ranked.
type QueueOrder string

// The queue orders.
const (
	// OrderConverged ranks waiters by their last convergence (never converged first), then by
	// arrival. Hosts with equal history keep arrival order.
	OrderConverged QueueOrder = "converged"
	// OrderArrival ranks waiters by arrival alone (strict FIFO).
	OrderArrival QueueOrder = "arrival"
)

// ParseQueueOrder checks a queue order named by a user.
func ParseQueueOrder(s string) (QueueOrder, error) {
	switch o := QueueOrder(s); o {
	case OrderConverged, OrderArrival:
		return o, nil
	}
	return "", fmt.Errorf("lock: queue order %q is neither %q nor %q", s, OrderConverged, OrderArrival)
}

// before reports whether waiter a ranks ahead of waiter b in order o. It is a strict order:
// the CreateIndex of two entries always differs.
func (o QueueOrder) before(a, b schema.Waiter) bool {
	if o != OrderArrival {
		switch {
		case a.ConvergedAt == nil && b.ConvergedAt != nil:
			return true
		case a.ConvergedAt != nil && b.ConvergedAt == nil:
			return false
		case a.ConvergedAt != nil && !a.ConvergedAt.Equal(*b.ConvergedAt):
			return a.ConvergedAt.Before(*b.ConvergedAt)
		}
	}
	if a.CreateIndex != b.CreateIndex {
		return a.CreateIndex < b.CreateIndex
	}
	return a.Holder < b.Holder
}

// rank sorts the queue in order o.
func (s *Snapshot) rank(o QueueOrder) {
	s.Order = o
	sort.SliceStable(s.Queue, func(i, j int) bool { return o.before(s.Queue[i], s.Queue[j]) })
}

// convergedAt is holder's last convergence as its queue entry should carry it (nil: never).
func (s *Snapshot) convergedAt(holder string) *time.Time {
	c, ok := s.Converged[holder]
	if !ok {
		return nil
	}
	t := c.ConvergedAt
	return &t
}

// Forget removes holder's converged/ record, for a host that left the tier: it is no longer
// expected to converge here. Nothing else is touched. It returns the record it removed and
// false when there was none (not an error: forgetting is idempotent).
func (s *Semaphore) Forget(ctx context.Context, holder string) (schema.Convergence, bool, error) {
	if err := schema.ValidateName("holder", holder); err != nil {
		return schema.Convergence{}, false, err
	}
	var gone schema.Convergence
	var found bool
	_, err := s.update(ctx, holder, func(snap *Snapshot) (*txn, error) {
		t, c, ok := s.forgetTxn(snap, holder)
		gone, found = c, ok
		if !ok {
			return nil, errUnchanged
		}
		var err error
		if t.writes, err = s.withNote(snap, t.writes, schema.NoteForget, "forget", holder); err != nil {
			return nil, err
		}
		return t, nil
	})
	if err != nil {
		return schema.Convergence{}, false, err
	}
	return gone, found, nil
}

// forgetTxn deletes holder's converged/ record as snap read it (check-and-set, so a record
// rewritten meanwhile by a new run is judged again). It changes no slot, so it needs no guard
// on current.
func (s *Semaphore) forgetTxn(snap *Snapshot, holder string) (*txn, schema.Convergence, bool) {
	key := convergedDir + holder
	if _, ok := snap.modify[key]; !ok {
		return nil, schema.Convergence{}, false
	}
	c, ok := snap.Converged[holder]
	if !ok {
		c = schema.Convergence{Holder: holder} // unreadable: forgotten all the same
	}
	return &txn{writes: api.KVTxnOps{s.del(snap, key)}}, c, true
}

// convergedOp is the write of holder's convergence after the run of slot, put in the
// transaction that releases the slot.
func (s *Semaphore) convergedOp(slot *Slot, now time.Time) (*api.KVTxnOp, error) {
	c := schema.Convergence{Holder: slot.Holder, ConvergedAt: now, RunID: slot.RunID, InstanceID: slot.InstanceID, Node: slot.Node, Revision: slot.Revision}
	if !slot.StartedAt.IsZero() && now.After(slot.StartedAt) {
		// Milliseconds, as a person reads them (1.535, not 1.5350000000000001).
		c.DurationSeconds = math.Round(now.Sub(slot.StartedAt).Seconds()*1000) / 1000
	}
	value, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("lock: encode convergence: %w", err)
	}
	return &api.KVTxnOp{Verb: api.KVSet, Key: s.base + convergedDir + slot.Holder, Value: value}, nil
}

// Convergences lists the converged/ records by holder, unreadable ones as a Convergence with
// only Holder set (so they can still be matched by name).
func (s *Snapshot) Convergences() []schema.Convergence {
	var out []schema.Convergence
	for k := range s.modify {
		if h, ok := strings.CutPrefix(k, convergedDir); ok {
			c, readable := s.Converged[h]
			if !readable {
				c = schema.Convergence{Holder: h}
			}
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Holder < out[j].Holder })
	return out
}
