package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestReadsLine(t *testing.T) {
	body := func(keys ...string) []byte {
		var ops api.TxnOps
		for _, k := range keys {
			ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVGetTree, Key: k}})
		}
		ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "p/e/s/queue/", Value: []byte("x")}})
		b, err := json.Marshal(ops)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		body []byte
		want bool
	}{
		{body("p/e/s/running/", "p/e/s/queue/"), true},
		{body("p/e/s/running/", "p/e/s/queue/web-1"), false}, // its own entry
		{body("p/e/s/current"), false},                       // a set of a key named so is no read
	} {
		if got := readsLine(txnOps(tc.body)); got != tc.want {
			t.Errorf("readsLine(%s) = %v, want %v", tc.body, got, tc.want)
		}
	}
}

func TestSlowHandoffsAccount(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	recs := []runRecord{
		{start: at(0), end: at(100), release: releaseTrace{dur: 5 * time.Millisecond, requests: 2}},
		{start: at(0), end: at(110), release: releaseTrace{dur: 150 * time.Millisecond, requests: 3, lineReads: 1}},
		{start: at(120), end: at(500), release: releaseTrace{dur: 5 * time.Millisecond, requests: 2}}, // the first end's: 20 ms
		{start: at(300), end: at(400), release: releaseTrace{dur: 5 * time.Millisecond, requests: 2}}, // the second's: 190 ms
	}
	a := timingOf(recs).Slow
	if a == nil {
		t.Fatal("no account")
	}
	if a.Handoffs != 2 || a.Slow != 1 || a.SlowAfterLine != 1 || a.AfterLineRead != 1 || a.SlowReleaseBound != 1 {
		t.Errorf("account %+v; want 2 handoffs, 1 slow, after a read of the line", *a)
	}
	if a.SlowReleaseP50Ms != 150 || a.SlowWakeP50Ms != 40 {
		t.Errorf("slow release %.0f ms, wake %.0f ms; want 150, 40", a.SlowReleaseP50Ms, a.SlowWakeP50Ms)
	}
}

func TestWrites(t *testing.T) {
	enc := func(verbs ...api.KVOp) []byte {
		var ops api.TxnOps
		for _, v := range verbs {
			ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: v, Key: "k"}})
		}
		b, _ := json.Marshal(ops)
		return b
	}
	if writes(txnOps(enc(api.KVGetTree, api.KVGet, api.KVCheckIndex))) {
		t.Error("a read counted as a write")
	}
	if !writes(txnOps(enc(api.KVCheckIndex, api.KVCAS, api.KVGetTree))) {
		t.Error("a check-and-set not counted as a write")
	}
}
