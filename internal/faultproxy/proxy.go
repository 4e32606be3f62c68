// Package faultproxy is a reverse proxy put in front of a real Consul agent in tests, to
// inject the failures tierlock must survive (429s, 5xx, resets) without faking the KV.
package faultproxy

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
)

// Reset, returned by a Rule, drops the connection without an answer.
const Reset = -1

// Rule decides the fate of one request: 0 passes it to Consul, an HTTP status answers it with
// that status instead, Reset drops the connection.
type Rule func(r *http.Request) int

// Proxy counts and forwards requests to a Consul agent, applying its rule.
type Proxy struct {
	// Addr is host:port to use as CONSUL_HTTP_ADDR.
	Addr     string
	srv      *httptest.Server
	mu       sync.Mutex
	rule     Rule
	requests atomic.Int64
	injected atomic.Int64
}

// New starts a proxy in front of the agent at target (host:port).
func New(target string) *Proxy {
	p := &Proxy{}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		p.mu.Lock()
		rule := p.rule
		p.mu.Unlock()
		status := 0
		if rule != nil {
			status = rule(r)
		}
		switch {
		case status == 0:
			rp.ServeHTTP(w, r)
		case status == Reset:
			p.injected.Add(1)
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				conn.Close()
			}
		default:
			p.injected.Add(1)
			http.Error(w, "injected by faultproxy", status)
		}
	}))
	p.Addr = p.srv.Listener.Addr().String()
	return p
}

// SetRule replaces the rule; nil passes everything.
func (p *Proxy) SetRule(r Rule) {
	p.mu.Lock()
	p.rule = r
	p.mu.Unlock()
}

// Requests is how many requests reached the proxy; Injected how many it failed.
func (p *Proxy) Requests() int64 { return p.requests.Load() }

// Injected is how many requests the rule failed.
func (p *Proxy) Injected() int64 { return p.injected.Load() }

// Close stops the proxy.
func (p *Proxy) Close() { p.srv.Close() }
