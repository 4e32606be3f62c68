package lock

import (
	"fmt"

	"github.com/hashicorp/consul/api"
)

// maxTxnOps is Consul's limit on operations in one transaction (agent/txn_endpoint.go).
const maxTxnOps = 128

// txn is one transaction being built. Every kind of write goes through it, so that none
// exceeds Consul's limit at any number of holders: the mandatory operations always go in, the
// optional guards only while they fit.
//
// What is mandatory keeps the write correct on its own: the check on max_concurrent, and the
// check-and-set on current (or, for a wake, a check of its index), which every tierlock writer
// changes in the same transaction as running/, so that any concurrent tierlock write fails it.
// What is optional (check-index on the other holders' running/ keys) only catches writers
// other than tierlock; when the tier is too big for all of them, the first in key order stay.
type txn struct {
	checks   api.KVTxnOps // mandatory checks, first: they see the keys as read
	optional api.KVTxnOps // guards against foreign writers, dropped first
	writes   api.KVTxnOps // mandatory, in order, after every check
	reads    api.KVTxnOps // mandatory, last: they see what the writes left
	// free: the write leaves a slot free under the limit, so a host that joined the queue
	// since it was read may be waiting for it (see Semaphore.commit).
	free bool
	// halts: the write halts a revision, so a mover of it that joined the queue since it was
	// read may be waiting to be told (see Semaphore.commit).
	halts string
	// wakes are deletes of queue entries that the write should have made but could not fit
	// (disable's, for a line longer than a transaction): sent after it commits (see
	// Semaphore.wakeRest).
	wakes api.KVTxnOps
	// served are the waiters the write hands slots to (see grants), by holder.
	served map[string]bool
	// nudges: the write wakes the first waiter it leaves waiting while slots stay free (see
	// nudge), which takes a slot and hands the rest over.
	nudges bool
	// headCheck: the write lists the line's head (line_head) from a read that a newcomer
	// ranking before its bound may have joined since; it reads the line back and deletes the
	// head if so (see Semaphore.commit and head.go).
	headCheck bool
	// lost are the keys of the operations Consul failed, when a check-and-set lost a race
	// (see takenWaiters).
	lost []string
}

// mandatory is the number of operations that must go in.
func (t *txn) mandatory() int {
	return len(t.checks) + len(t.writes) + len(t.reads)
}

// ops is the transaction: the mandatory operations and as many optional guards as fit.
func (t *txn) ops() (api.KVTxnOps, error) {
	n := t.mandatory()
	if n > maxTxnOps {
		return nil, fmt.Errorf("lock: a write needs %d operations, more than consul's limit of %d per transaction", n, maxTxnOps)
	}
	optional := t.optional[:min(len(t.optional), maxTxnOps-n)]
	ops := make(api.KVTxnOps, 0, n+len(optional))
	ops = append(ops, t.checks...)
	ops = append(ops, optional...)
	ops = append(ops, t.writes...)
	return append(ops, t.reads...), nil
}
