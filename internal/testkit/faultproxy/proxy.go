// Package faultproxy is a reverse proxy put in front of a real Consul agent in tests, to
// inject the failures tierlock must survive without faking the KV: 429s and 5xx, resets,
// requests that hang past the client's timeout, and the nastiest, writes that Consul applies
// while their sender never learns it.
package faultproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The faults a Rule returns besides an HTTP status, which answers the request with that status
// instead of passing it on (Consul's own 429 and 5xx, "No cluster leader" included, look the
// same to a client).
const (
	// Pass passes the request to Consul and its answer back.
	Pass = 0
	// Reset drops the connection without passing the request on.
	Reset = -1
	// Stall holds the request, unanswered and not passed on, until the client gives up.
	Stall = -2
	// DropAfterCommit passes the request on, waits for Consul's answer, then drops the
	// connection: a write is applied and its sender does not know.
	DropAfterCommit = -3
	// LateCommit holds the request until the client gives up, then passes it on anyway: a
	// write that lands after its sender stopped waiting for it, perhaps after its retry.
	LateCommit = -4
	// StallAfterCommit passes the request on, then holds Consul's answer until the client
	// gives up: a write applied while its sender hangs (and may be killed).
	StallAfterCommit = -5
)

// Kinds are the faults by name, as Counts reports them; a status is its number ("429").
var Kinds = map[int]string{Reset: "reset", Stall: "stall", DropAfterCommit: "drop-after-commit", LateCommit: "late-commit",
	StallAfterCommit: "stall-after-commit"}

// maxHold bounds Stall and LateCommit for a client that never gives up.
const maxHold = 5 * time.Minute

// maxLate bounds the request LateCommit passes on after its client left.
const maxLate = 10 * time.Second

// Rule decides the fate of one request: Pass, a fault above, or an HTTP status.
type Rule func(r *http.Request) int

// Proxy counts and forwards requests to a Consul agent, applying its rule.
type Proxy struct {
	// Addr is host:port to use as CONSUL_HTTP_ADDR.
	Addr     string
	srv      *httptest.Server
	rp       atomic.Pointer[httputil.ReverseProxy]
	closed   chan struct{}
	inflight atomic.Int64
	mu       sync.Mutex
	rule     Rule
	counts   map[string]int64
	requests atomic.Int64
	injected atomic.Int64
}

// New starts a proxy in front of the agent at target (host:port).
func New(target string) *Proxy {
	p := &Proxy{closed: make(chan struct{}), counts: map[string]int64{}}
	p.Retarget(target)
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	p.Addr = p.srv.Listener.Addr().String()
	return p
}

// Retarget sends the requests that arrive from now on to the agent at target (host:port): the
// same address answered by another agent, as a host's CONSUL_HTTP_ADDR still finds its local
// agent restarted under a new node name.
func (p *Proxy) Retarget(target string) {
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	// A request whose client went away is not news; the default logs every one.
	rp.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, _ error) { w.WriteHeader(http.StatusBadGateway) }
	p.rp.Store(rp)
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	p.inflight.Add(1)
	defer p.inflight.Add(-1)
	p.requests.Add(1)
	// One request goes to one agent, even if Retarget is called while it is held.
	rp := p.rp.Load()
	p.mu.Lock()
	rule := p.rule
	p.mu.Unlock()
	fault := Pass
	if rule != nil {
		fault = rule(r)
	}
	if fault == Pass {
		rp.ServeHTTP(w, r)
		return
	}
	p.count(fault)
	var conn net.Conn // the client's connection, closed at the end
	switch fault {
	case Reset:
	case Stall:
		_, _ = io.Copy(io.Discard, r.Body)
		conn = p.hold(w)
	case DropAfterCommit:
		rp.ServeHTTP(httptest.NewRecorder(), r)
	case StallAfterCommit:
		rp.ServeHTTP(httptest.NewRecorder(), r)
		conn = p.hold(w)
	case LateCommit:
		// Read the body now: once the client has gone, its connection may be unreadable.
		body, _ := io.ReadAll(r.Body)
		conn = p.hold(w)
		// Bounded, though: a late blocking read would otherwise wait at Consul for as long as
		// it asked (minutes), keeping the proxy busy long after its client left; a write
		// lands in moments.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), maxLate)
		defer cancel()
		late := r.Clone(ctx)
		late.Body = io.NopCloser(bytes.NewReader(body))
		rp.ServeHTTP(httptest.NewRecorder(), late)
	default:
		http.Error(w, "injected by faultproxy", fault)
		return
	}
	if conn == nil {
		conn, _, _ = w.(http.Hijacker).Hijack()
	}
	if conn != nil {
		conn.Close()
	}
}

// hold takes the client's connection from the server and waits until the client gives up
// (closes it), the proxy closes, or maxHold; it returns the connection, for the caller to
// close. It watches the connection itself: the server notices a client that leaves only once
// the request's body has been read to its end, and a request forwarded through the reverse
// proxy is not always (the soak once waited the whole 5 minutes on one whose client had
// exited). While it waits for an answer, a client sends nothing more on its connection.
func (p *Proxy) hold(w http.ResponseWriter) net.Conn {
	conn, buf, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return nil
	}
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		_, _ = buf.ReadByte() // EOF, or an error once the connection is closed
	}()
	select {
	case <-gone:
	case <-p.closed:
	case <-time.After(maxHold):
	}
	return conn
}

func (p *Proxy) count(fault int) {
	p.injected.Add(1)
	kind, ok := Kinds[fault]
	if !ok {
		kind = strconv.Itoa(fault)
	}
	p.mu.Lock()
	p.counts[kind]++
	p.mu.Unlock()
}

// SetRule replaces the rule; nil passes everything.
func (p *Proxy) SetRule(r Rule) {
	p.mu.Lock()
	p.rule = r
	p.mu.Unlock()
}

// Requests is how many requests reached the proxy.
func (p *Proxy) Requests() int64 { return p.requests.Load() }

// Injected is how many requests the rule faulted.
func (p *Proxy) Injected() int64 { return p.injected.Load() }

// Counts is how many faults of each kind were injected, by name (Kinds, or the status: "429").
func (p *Proxy) Counts() map[string]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int64, len(p.counts))
	for k, v := range p.counts {
		out[k] = v
	}
	return out
}

// Settle waits, up to timeout, until no request is in the proxy: a late commit has landed, a
// held request has let go. It reports whether the proxy is idle.
func (p *Proxy) Settle(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for p.inflight.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// Close stops the proxy, letting go of every held request.
func (p *Proxy) Close() {
	close(p.closed)
	p.srv.CloseClientConnections()
	p.srv.Close()
}

// IsWriteTxn reports whether r is a transaction that writes (PUT /v1/txn with an operation
// other than a get): tierlock also reads through /v1/txn (get operations, to bound what a read
// fetches), and a test that faults "the release" must not hit a read instead. The body is read
// and put back for the proxy to forward.
func IsWriteTxn(r *http.Request) bool {
	if r.URL.Path != "/v1/txn" || r.Body == nil {
		return false
	}
	body, err := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return true
	}
	var ops []struct {
		KV *struct{ Verb string }
	}
	if json.Unmarshal(body, &ops) != nil {
		return true
	}
	for _, op := range ops {
		if op.KV == nil || op.KV.Verb != "get" && op.KV.Verb != "get-tree" {
			return true
		}
	}
	return false
}
