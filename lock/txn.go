package lock

import (
	"fmt"
	"regexp"

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

// staleIndex is the end of Consul's message for a failed check-index
// ("failed index check for key %q, current modify index %d != %d").
var staleIndex = regexp.MustCompile(`^[0-9]+ != [0-9]+$`)

// lostRace tells a failed check or check-and-set of op (someone wrote first) from a real
// refusal such as "Permission denied". It compares the whole of Consul's message for that
// verb on that key (agent/consul/state/txn.go and kvs.go), never a word of it: a key may
// contain any of those words ("exists", "stale", ...).
func lostRace(op *api.KVTxnOp, what string) bool {
	if op == nil {
		return false
	}
	key := op.Key
	switch op.Verb {
	case api.KVCAS:
		return what == fmt.Sprintf("failed to set key %q, index is stale", key)
	case api.KVDeleteCAS:
		return what == fmt.Sprintf("failed to delete key %q, index is stale", key)
	case api.KVCheckIndex:
		if what == fmt.Sprintf("failed to check index, key %q doesn't exist", key) {
			return true
		}
		prefix := fmt.Sprintf("failed index check for key %q, current modify index ", key)
		return len(what) > len(prefix) && what[:len(prefix)] == prefix && staleIndex.MatchString(what[len(prefix):])
	case api.KVCheckNotExists:
		return what == fmt.Sprintf("key %q exists", key)
	case api.KVLock:
		return what == fmt.Sprintf("failed to lock key %q, lock is already held", key) ||
			what == fmt.Sprintf("failed to lock key %q due to lock delay", key)
	}
	return false
}
