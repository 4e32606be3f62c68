package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/consul/api"
)

// countingProxy counts the requests clients make to Consul. A client that puts its name as the
// first path segment of its address (CONSUL_HTTP_ADDR=http://ADDR/host-007, which Consul's Go
// API treats as a reverse-proxy prefix) is also told apart: the proxy notes the order in which
// clients began waiting, that is the CreateIndex (Consul's own commit order) of the key each
// registered as a contender: tierlock's queue/ entry, consul lock's contender key. It reads
// that key itself, right after the registration, and does not count that read.
type countingProxy struct {
	Addr     string
	srv      *httptest.Server
	requests atomic.Int64 // that reach the servers
	local    atomic.Int64 // that the host's own agent answers (/v1/agent/self): counted apart
	mu       sync.Mutex
	first    map[string]int64 // client -> CreateIndex of its contender key
	kinds    map[string]int   // with BENCH_DEBUG: requests by kind
	kv       *api.KV
}

// registered returns the key with which r enters its client in a tool's line of waiters.
func registered(r *http.Request, body []byte) (string, bool) {
	if r.Method != http.MethodPut {
		return "", false
	}
	if strings.HasPrefix(r.URL.Path, "/v1/kv/") && r.URL.Query().Has("acquire") {
		return strings.TrimPrefix(r.URL.Path, "/v1/kv/"), true
	}
	if r.URL.Path != "/v1/txn" {
		return "", false
	}
	var ops []struct{ KV struct{ Verb, Key string } }
	if json.Unmarshal(body, &ops) != nil {
		return "", false
	}
	for _, op := range ops {
		if op.KV.Verb == "lock" && strings.Contains(op.KV.Key, "/queue/") {
			return op.KV.Key, true
		}
	}
	return "", false
}

func newCountingProxy(target string) *countingProxy {
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token = target, ""
	client, _ := api.NewClient(cfg)
	p := &countingProxy{first: map[string]int64{}, kinds: map[string]int{}, kv: client.KV()}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client, rest, named := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		path := r.URL.Path
		if named && client != "v1" {
			path = "/" + rest
		}
		// In a fleet each host's agent answers its node name itself; here one agent is both
		// the hosts' agent and the server, so that request is counted apart.
		if path == "/v1/agent/self" {
			p.local.Add(1)
		} else {
			p.requests.Add(1)
		}
		if !named || client == "v1" {
			rp.ServeHTTP(w, r)
			return
		}
		r.URL.Path = "/" + rest
		r.URL.RawPath = ""
		if os.Getenv("BENCH_DEBUG") != "" {
			kind := r.Method + " " + r.URL.Path
			if i := strings.Index(kind, "/v1/kv/"); i >= 0 {
				kind = kind[:i+7]
				if r.URL.Query().Has("index") {
					kind += " (blocking)"
				} else if r.URL.Query().Has("keys") {
					kind += " keys"
				}
			}
			if i := strings.Index(kind, "/v1/session/"); i >= 0 {
				kind = kind[:i] + "/v1/session/" + strings.SplitN(kind[i+12:], "/", 2)[0]
			}
			p.mu.Lock()
			p.kinds[kind]++
			p.mu.Unlock()
		}
		var body []byte
		if r.Method == http.MethodPut && r.Body != nil {
			body, _ = io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		rp.ServeHTTP(w, r)
		if key, ok := registered(r, body); ok {
			pair, _, err := p.kv.Get(key, &api.QueryOptions{RequireConsistent: true})
			if err != nil || pair == nil {
				return
			}
			p.mu.Lock()
			if _, seen := p.first[client]; !seen {
				p.first[client] = int64(pair.CreateIndex)
			}
			p.mu.Unlock()
		}
	}))
	p.Addr = p.srv.Listener.Addr().String()
	return p
}

func (p *countingProxy) Requests() int64 { return p.requests.Load() }

// AgentLocal counts the requests a host's own agent answers without a server.
func (p *countingProxy) AgentLocal() int64 { return p.local.Load() }

// firstSeen is client's place in the order of waiting (0 if it never had to wait).
func (p *countingProxy) firstSeen(client string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.first[client]
}

func (p *countingProxy) Close() { p.srv.Close() }
