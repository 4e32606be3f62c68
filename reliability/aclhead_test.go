package reliability_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// A host token whose ACL policy predates line_head (the policy `tierlock acl-policy --role
// host` printed before the key came) may not write it: its releases hand their slots over all
// the same, reading the line, and the line keeps its order.
func TestHostPolicyWithoutLineHead(t *testing.T) {
	t.Parallel()
	server, admin := aclServer(t)
	out, err := exec.Command(tierlockBin, "acl-policy", "--role", "host", "--tier", tier, "--node", server.Node).Output()
	if err != nil {
		t.Fatal(err)
	}
	var rules []string
	for _, block := range strings.SplitAfter(string(out), "}\n") {
		if !strings.Contains(block, `"`+base+`line_head"`) {
			rules = append(rules, block)
		}
	}
	if len(rules) != len(strings.SplitAfter(string(out), "}\n"))-1 {
		t.Fatalf("acl-policy --role host has no line_head rule to leave out:\n%s", out)
	}
	if _, _, err := admin.ACL().PolicyCreate(&api.ACLPolicy{Name: "old-host", Rules: strings.Join(rules, "")}, nil); err != nil {
		t.Fatal(err)
	}
	host := clientOf(t, server, newToken(t, admin, "old-host"))
	if _, err := admin.KV().Put(&api.KVPair{Key: base + "max_concurrent", Value: []byte("1")}, nil); err != nil {
		t.Fatal(err)
	}
	sem := func() *lock.Semaphore {
		s, err := lock.New(host.KV(), lock.Options{Prefix: schema.DefaultPrefix, Tier: tier, DefaultMax: 1, Sessions: host.Session()})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	request := func(h string, wait time.Duration) lock.Request {
		r := lock.Request{Record: schema.Record{Holder: h, RunID: "run-" + h, Hostname: h, Command: "true"}}
		if wait > 0 {
			r.WaitUntil = time.Now().Add(wait)
		}
		return r
	}
	first, err := sem().Acquire(ctx, request("h0", 0))
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		slot *lock.Slot
		err  error
	}
	var got []chan result
	for i, h := range []string{"w1", "w2", "w3"} {
		c := make(chan result, 1)
		got = append(got, c)
		go func() {
			slot, err := sem().Acquire(ctx, request(h, 30*time.Second))
			c <- result{slot, err}
		}()
		if !testkit.Poll(testkit.Wait, func() bool {
			keys, _, err := admin.KV().Keys(base+"queue/", "", nil)
			return err == nil && len(keys) == i+1
		}) {
			t.Fatalf("%s did not join the line", h)
		}
	}
	if err := sem().Release(ctx, first); err != nil {
		t.Fatal(err)
	}
	for i, c := range got {
		var r result
		select {
		case r = <-c:
		case <-time.After(20 * time.Second):
			t.Fatalf("w%d was not handed a slot", i+1)
		}
		if r.err != nil || r.slot.Holder != fmt.Sprintf("w%d", i+1) {
			t.Fatalf("slot %d: %v, %v", i+1, r.slot, r.err)
		}
		if err := sem().Release(ctx, r.slot); err != nil {
			t.Fatalf("w%d's release: %v", i+1, err)
		}
	}
	if p, _, err := admin.KV().Get(base+"line_head", nil); err != nil || p != nil {
		t.Errorf("line_head written by a token that may not: %v %v", p, err)
	}
}
