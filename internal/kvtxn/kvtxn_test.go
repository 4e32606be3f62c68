package kvtxn

import (
	"testing"

	"github.com/hashicorp/consul/api"
)

// Consul's messages for a lost race are told from refusals by their whole form, for the verb
// of the operation named, never by a word: keys may contain the words.
func TestLostRace(t *testing.T) {
	key := "chef/exists/exists/queue/exists"
	op := func(verb api.KVOp) *api.KVTxnOp { return &api.KVTxnOp{Verb: verb, Key: key} }
	denied := `Permission denied: token with AccessorID 'a1b2' lacks permission 'key:write' on "chef/exists/exists/queue/exists"`
	cases := []struct {
		name string
		op   *api.KVTxnOp
		what string
		want bool
	}{
		{"cas stale", op(api.KVCAS), `failed to set key "chef/exists/exists/queue/exists", index is stale`, true},
		{"delete-cas stale", op(api.KVDeleteCAS), `failed to delete key "chef/exists/exists/queue/exists", index is stale`, true},
		{"check-index gone", op(api.KVCheckIndex), `failed to check index, key "chef/exists/exists/queue/exists" doesn't exist`, true},
		{"check-index moved", op(api.KVCheckIndex), `failed index check for key "chef/exists/exists/queue/exists", current modify index 12 != 11`, true},
		{"check-not-exists", op(api.KVCheckNotExists), `key "chef/exists/exists/queue/exists" exists`, true},
		{"lock held", op(api.KVLock), `failed to lock key "chef/exists/exists/queue/exists", lock is already held`, true},
		{"lock delay", op(api.KVLock), `failed to lock key "chef/exists/exists/queue/exists" due to lock delay`, true},
		{"denied cas", op(api.KVCAS), denied, false},
		{"denied check-not-exists", op(api.KVCheckNotExists), denied, false},
		{"denied lock", op(api.KVLock), denied, false},
		{"another key's race", op(api.KVCheckNotExists), `key "chef/other/tier/queue/exists" exists`, false},
		{"message of another verb", op(api.KVCAS), `key "chef/exists/exists/queue/exists" exists`, false},
		{"check-index garbage", op(api.KVCheckIndex), `failed index check for key "chef/exists/exists/queue/exists", current modify index stale`, false},
		{"no such operation", nil, `key "chef/exists/exists/queue/exists" exists`, false},
		{"set has no race", op(api.KVSet), `failed to set key "chef/exists/exists/queue/exists", index is stale`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := LostRace(c.op, c.what); got != c.want {
				t.Errorf("LostRace(%q) = %v, want %v", c.what, got, c.want)
			}
		})
	}
}
