package reliability_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
	"github.com/tierlock/tierlock/lock"
)

// About 200 junk values of 512 KB (Consul's largest) under the prefix, a tier with more
// keys than a read fetches, and a key with a 600 KB name in prod/web's converged/ (where a host
// of prod/web may write): run, status, check and reap still work, each junk tier is a clear
// problem naming the cap, not an exhausted memory, and the long name is a warning of prod/web
// alone, cut.
func TestJunkUnderThePrefix(t *testing.T) {
	t.Parallel()
	// Beside the other tests: a listing of the junk that outlasts a request's 10s bound on a
	// busy machine is asked again within the command's --consul-timeout (1m). check has its
	// own bound, given below.
	server := startServer(t, consulagent.Config{})
	kv := clientOf(t, server, "").KV()
	blob := []byte(strings.Repeat("j", 512<<10))
	var keys []string
	for i := range 120 {
		keys = append(keys, fmt.Sprintf("chef/junk/blob/%03d", i))
	}
	for i := range 40 {
		keys = append(keys, fmt.Sprintf("%sjunk-%03d", base, i))
	}
	for i := range 20 {
		keys = append(keys, fmt.Sprintf("chef/junk/tier/running/host-%03d", i), fmt.Sprintf("chef/junk/tier/queue/host-%03d", i))
	}
	for _, k := range keys {
		if _, err := kv.Put(&api.KVPair{Key: k, Value: blob}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// A tier with more layout keys than the cap, written 128 to a transaction (Consul's most).
	var ops api.KVTxnOps
	for i := range lock.MaxTierKeys + 1 {
		ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: fmt.Sprintf("chef/junk/many/queue/q-%05d", i), Value: []byte("x")})
		if len(ops) == 128 || i == lock.MaxTierKeys {
			if ok, _, _, err := kv.Txn(ops, nil); err != nil || !ok {
				t.Fatalf("txn: %v %v", ok, err)
			}
			ops = nil
		}
	}

	if _, err := kv.Put(&api.KVPair{Key: base + "max_concurrent", Value: []byte("2")}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(&api.KVPair{Key: base + "converged/" + strings.Repeat("x", 600<<10), Value: []byte("{}")}, nil); err != nil {
		t.Fatal(err)
	}
	web1 := newHost(t, "web-1", server.Addr)
	web2 := newHost(t, "web-2", server.Addr)
	// A host's run works beside the junk: it takes its slot, and a failed run keeps it.
	wantExit(t, web1.run(t, "run", "--tier", tier, "--instance-id", "i-0123456789abcdef0", "--", "false"), 1)
	wantExit(t, web2.run(t, "run", "--tier", tier, "--wait", "5s", "--", "true"), 0)

	o := web1.run(t, "status")
	if o.code != 0 || !strings.Contains(o.stdout.String(), "web-1") || !strings.Contains(o.stdout.String(), "junk/many") {
		t.Errorf("status: %s", o)
	}
	// Reading 100 MB of junk in batches takes its time under the race detector on a busy
	// machine: this is about what check says of junk, not about its default 10s bound.
	o = web1.run(t, "check", "--timeout", "2m")
	out := o.stdout.String()
	if o.code != 2 || !strings.Contains(out, "junk/many CRITICAL: invalid stored value: lock: too many keys: chef/junk/many/ has 32769 keys, more than the cap of 32768") ||
		!strings.Contains(out, "junk/tier CRITICAL: invalid stored value: lock: too many keys: the values under chef/junk/tier/ come to more than the 16 MB") ||
		!strings.Contains(out, "prod/web WARNING: ") || !strings.Contains(out, "web-1 failed (exit 1)") ||
		!strings.Contains(out, "1 key under chef/prod/web/ with names longer than any tierlock key can have (263 bytes after the tier), not read: chef/prod/web/converged/xxxxxxxxxx") ||
		strings.Contains(out, strings.Repeat("x", 100)) {
		t.Errorf("check: %.4000s", o)
	}
	t.Logf("check: %s", out)
	// The tier over the cap: a run there is refused, naming the cap.
	o = web1.run(t, "run", "--tier", "junk/many", "--wait", "1s", "--", "true")
	if o.code != 78 || !strings.Contains(o.stderr.String(), "more than the cap of 32768") {
		t.Errorf("run in junk/many: %s", o)
	}
	// Its first look reads the slots alone and finds one free: the take reads the line back,
	// finds it past the cap, and gives the slot back before it answers.
	if held, _, err := kv.Keys("chef/junk/many/running/", "", nil); err != nil || len(held) != 0 {
		t.Errorf("slots left held in junk/many by the refused run: %v %v", held, err)
	}
	// Reap frees web-1's slot in prod/web, though other tiers are junk.
	o = web1.run(t, "reap", "--instance-id", "i-0123456789abcdef0")
	if o.code != 0 || !strings.Contains(o.stdout.String()+o.stderr.String(), "web-1") {
		t.Errorf("reap: %s", o)
	}
	if pair, _, err := kv.Get(base+"running/web-1", nil); err != nil || pair != nil {
		t.Errorf("web-1's slot after reap: %v %v", pair, err)
	}
}
