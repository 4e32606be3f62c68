package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// releaseTrace is what a tierlock host's release did until its first write committed (the
// hand-over), for the slow handoffs' account (slowAccount): how long that took from the
// command's end, its requests, how many of them read the whole line, and how many writes
// Consul refused (lost check-and-set races). What the release does after (a refill of the
// head) is not counted: the next run could start by then.
type releaseTrace struct {
	dur       time.Duration
	requests  int
	lineReads int
	lost      int
	handed    time.Time // when the first write committed; zero if none did
}

// releaseProbe is a tierlock host's transport while it releases: it counts the release's
// requests, its reads of the whole line (a transaction with a get-tree of queue/), and its
// refused writes (409). It adds no request of its own, and counts nothing outside a release.
type releaseProbe struct {
	next http.RoundTripper
	mu   sync.Mutex
	on   bool
	tr   releaseTrace
}

func (p *releaseProbe) RoundTrip(r *http.Request) (*http.Response, error) {
	p.mu.Lock()
	on := p.on
	p.mu.Unlock()
	if !on {
		return p.next.RoundTrip(r)
	}
	line, write := false, false
	if r.Method == http.MethodPut && r.URL.Path == "/v1/txn" && r.Body != nil {
		body, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			return nil, err
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		ops := txnOps(body)
		line, write = readsLine(ops), writes(ops)
	}
	resp, err := p.next.RoundTrip(r)
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.tr.handed.IsZero() {
		return resp, err // after the hand-over
	}
	if write && err == nil && resp.StatusCode == http.StatusOK {
		p.tr.handed = time.Now()
	}
	p.tr.requests++
	if line {
		p.tr.lineReads++
	}
	if err == nil && resp.StatusCode == http.StatusConflict {
		p.tr.lost++
	}
	return resp, err
}

// txnOps are the operations of a transaction's body (none if it is not one).
func txnOps(body []byte) api.TxnOps {
	var ops api.TxnOps
	if json.Unmarshal(body, &ops) != nil {
		return nil
	}
	return ops
}

// readsLine reports whether a transaction gets the tree of a tier's queue/ (its key ends in
// queue/), which is a read of the whole line; a get-tree of one's own entry does not.
func readsLine(ops api.TxnOps) bool {
	for _, op := range ops {
		if op.KV != nil && op.KV.Verb == api.KVGetTree && strings.HasSuffix(op.KV.Key, "/queue/") {
			return true
		}
	}
	return false
}

// writes reports whether a transaction writes anything (its verbs other than gets and
// checks).
func writes(ops api.TxnOps) bool {
	for _, op := range ops {
		if op.KV != nil {
			switch op.KV.Verb {
			case api.KVGet, api.KVGetTree, api.KVCheckIndex, api.KVCheckSession, api.KVCheckNotExists:
			default:
				return true
			}
		}
	}
	return false
}

// start begins counting a release.
func (p *releaseProbe) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.on, p.tr = true, releaseTrace{}
}

// stop ends it and returns what it counted, its duration counted from end.
func (p *releaseProbe) stop(end time.Time) releaseTrace {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.on = false
	tr := p.tr
	if tr.handed.IsZero() {
		tr.handed = time.Now()
	}
	tr.dur = tr.handed.Sub(end)
	return tr
}
