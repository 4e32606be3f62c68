// Package kvtxn reads Consul's answer to a failed KV transaction: whether it only lost a race
// (another writer got there first, and reading again is right) or was refused.
package kvtxn

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/hashicorp/consul/api"
)

// staleIndex is the end of Consul's message for a failed check-index
// ("failed index check for key %q, current modify index %d != %d").
var staleIndex = regexp.MustCompile(`^[0-9]+ != [0-9]+$`)

// LostRace tells a failed check or check-and-set of op (someone wrote first) from a real
// refusal such as "Permission denied". It compares the whole of Consul's message for that
// verb on that key (agent/consul/state/txn.go and kvs.go), never a word of it: a key may
// contain any of those words ("exists", "stale", ...).
func LostRace(op *api.KVTxnOp, what string) bool {
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

// Refusals are the reasons Consul gave for failing a transaction of ops, other than lost
// races; nil when it only lost races. Consul names the operation that failed by its index;
// its message is judged against what that operation was (LostRace).
func Refusals(ops api.KVTxnOps, resp *api.KVTxnResponse) []string {
	var reasons []string
	for _, e := range resp.Errors {
		var op *api.KVTxnOp
		if e.OpIndex >= 0 && e.OpIndex < len(ops) {
			op = ops[e.OpIndex]
		}
		if !LostRace(op, e.What) {
			reasons = append(reasons, e.What)
		}
	}
	if len(resp.Errors) == 0 {
		reasons = append(reasons, "consul refused the transaction without saying why")
	}
	return reasons
}

// Refused is Refusals as one line, or "" when the transaction only lost races.
func Refused(ops api.KVTxnOps, resp *api.KVTxnResponse) string {
	return strings.Join(Refusals(ops, resp), "; ")
}
