package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The counting proxy runs in a process of its own (this binary, started with proxyRoleEnv set),
// so that the harness's CPU time is the simulated hosts' alone. It counts every request by
// kind, with the bytes of each answer and whether the request is a Raft write, and serves the
// running totals at countsPath.

const (
	proxyRoleEnv = "TIERLOCK_FLEET_ROLE"
	countsPath   = "/_fleet/counts"
	secondsPath  = "/_fleet/seconds"
)

// kindCount is what the proxy counted of one kind of request.
type kindCount struct {
	Requests int64 `json:"requests"`
	Bytes    int64 `json:"bytes"`       // answer bodies
	Errors   int64 `json:"errors"`      // 429 and 5xx answers, and requests Consul never answered
	Raft     bool  `json:"raft"`        // each request of this kind is one Raft log entry
	Local    bool  `json:"agent_local"` // answered by the host's own agent: no server sees it
	// Refused counts the transactions of this kind that Consul refused (409) because a check
	// failed: lost check-and-set races, each still a Raft write. Lost counts them by the key
	// class of each operation that failed (see keyClass); one refusal may fail on several.
	Refused int64            `json:"refused,omitempty"`
	Lost    map[string]int64 `json:"lost,omitempty"`
}

// counts is a snapshot of the proxy's totals, by kind.
type counts map[string]kindCount

// minus is what was counted between before and c.
func (c counts) minus(before counts) counts {
	d := counts{}
	for k, v := range c {
		b := before[k]
		v.Requests -= b.Requests
		v.Bytes -= b.Bytes
		v.Errors -= b.Errors
		v.Refused -= b.Refused
		if len(v.Lost) > 0 {
			lost := map[string]int64{}
			for class, n := range v.Lost {
				if n -= b.Lost[class]; n != 0 {
					lost[class] = n
				}
			}
			v.Lost = lost
		}
		if v.Requests != 0 {
			d[k] = v
		}
	}
	return d
}

// plus is c and o counted together (two proxies' counts).
func (c counts) plus(o counts) counts {
	sum := counts{}
	for _, from := range []counts{c, o} {
		for k, v := range from {
			s := sum[k]
			s.Requests += v.Requests
			s.Bytes += v.Bytes
			s.Errors += v.Errors
			s.Refused += v.Refused
			s.Raft, s.Local = v.Raft, v.Local
			for class, n := range v.Lost {
				if s.Lost == nil {
					s.Lost = map[string]int64{}
				}
				s.Lost[class] += n
			}
			sum[k] = s
		}
	}
	return sum
}

// totals sums the requests that reach the servers, their Raft writes and answer bytes, the
// error answers, and apart from them the agent-local requests.
func (c counts) totals() (requests, raft, bytes, errors, local int64) {
	for _, v := range c {
		errors += v.Errors
		if v.Local {
			local += v.Requests
			continue
		}
		requests += v.Requests
		bytes += v.Bytes
		if v.Raft {
			raft += v.Requests
		}
	}
	return requests, raft, bytes, errors, local
}

// lost sums the refused writes (transactions of the kinds that are Raft writes; a read-only
// transaction is refused too when a key it gets went since it was listed), and their failed
// checks by key class.
func (c counts) lost() (refused int64, byClass map[string]int64) {
	byClass = map[string]int64{}
	for _, v := range c {
		if !v.Raft {
			continue
		}
		refused += v.Refused
		for class, n := range v.Lost {
			byClass[class] += n
		}
	}
	return refused, byClass
}

// keyClass names the tier key a transaction's operation is on: running/, queue/,
// converged/, audit/, or the key's own name (current, rollout, max_concurrent, ...).
func keyClass(key string) string {
	for _, dir := range []string{"running/", "queue/", "converged/", "audit/"} {
		if strings.Contains(key, "/"+dir) {
			return dir
		}
	}
	if i := strings.LastIndex(key, "/"); i >= 0 {
		return key[i+1:]
	}
	return key
}

// lostClasses are the key classes of the operations a refused transaction failed on, each
// once, from the request's operations and Consul's answer ({"Errors":[{"OpIndex":..}]}, gzipped
// when large).
func lostClasses(reqBody, answer []byte) []string {
	var ops []txnOp
	var resp struct {
		Errors []struct {
			OpIndex int
			What    string
		}
	}
	if len(answer) > 2 && answer[0] == 0x1f && answer[1] == 0x8b { // Consul gzips a larger answer
		if zr, err := gzip.NewReader(bytes.NewReader(answer)); err == nil {
			answer, _ = io.ReadAll(io.LimitReader(zr, 4<<20))
		}
	}
	if json.Unmarshal(reqBody, &ops) != nil || json.Unmarshal(answer, &resp) != nil {
		return []string{"(unreadable)"}
	}
	var out []string
	for _, e := range resp.Errors {
		class := "(unknown)"
		if e.OpIndex >= 0 && e.OpIndex < len(ops) && ops[e.OpIndex].KV != nil {
			class = keyClass(ops[e.OpIndex].KV.Key)
		}
		if !slices.Contains(out, class) {
			out = append(out, class)
		}
	}
	return out
}

// txnOp is the part of a /v1/txn operation classify looks at.
type txnOp struct {
	KV *struct {
		Verb string
		Key  string
	}
}

// classify names the kind of a Consul HTTP request and says whether Consul turns it into a Raft
// log entry. Every write goes through Raft whether or not its check-and-set succeeds (the
// check is made when the entry is applied); reads, blocking or consistent, and session renewals
// (the leader only resets a timer) do not.
func classify(method, path string, query url.Values, body []byte) (kind string, raft bool) {
	switch {
	case path == "/v1/txn":
		var ops []txnOp
		if err := json.Unmarshal(body, &ops); err != nil {
			return "txn (unreadable)", true
		}
		write, queue, take, grant, release := false, false, false, false, false
		// A grant writes running/<h> beside a check of queue/<h> (the waiter's entry as read);
		// a take writes the writer's own running/ key.
		checked := map[string]bool{}
		for _, op := range ops {
			if op.KV != nil && op.KV.Verb == "check-index" {
				if _, h, ok := strings.Cut(op.KV.Key, "/queue/"); ok {
					checked[h] = true
				}
			}
		}
		for _, op := range ops {
			if op.KV == nil {
				write = true // service, node or check operations: writes
				continue
			}
			switch op.KV.Verb {
			case "get", "get-tree", "check-index", "check-session", "check-not-exists":
			default:
				write = true
			}
			running := strings.Contains(op.KV.Key, "/running/")
			switch {
			case op.KV.Verb == "lock" && strings.Contains(op.KV.Key, "/queue/"):
				queue = true
			case op.KV.Verb == "cas" && running:
				_, h, _ := strings.Cut(op.KV.Key, "/running/")
				if checked[h] {
					grant = true
				} else {
					take = true
				}
			case op.KV.Verb == "delete-cas" && running:
				release = true
			}
		}
		switch {
		case !write:
			return readKind(ops), false
		case queue:
			return "txn join queue", true
		case grant && release:
			return "txn release and hand over", true // a slot freed and given to a waiter
		case take && grant:
			return "txn take slot and hand over", true // the first in line, for those behind it
		case take:
			return "txn take slot", true
		case grant:
			return "txn hand over", true // free slots given to waiters, none taken or freed
		case release:
			return "txn release slot", true
		}
		return "txn write", true
	case strings.HasPrefix(path, "/v1/kv/"):
		switch method {
		case http.MethodGet:
			kind := "kv get"
			switch {
			case query.Has("recurse"):
				kind = "kv list"
			case query.Has("keys"):
				kind = "kv keys"
			}
			if query.Has("index") {
				kind += " (blocking)"
			}
			return kind, false
		case http.MethodPut:
			switch {
			case query.Has("acquire"):
				return "kv acquire", true
			case query.Has("release"):
				return "kv release", true
			case query.Has("cas"):
				return "kv cas", true
			}
			return "kv put", true
		case http.MethodDelete:
			if query.Has("cas") {
				return "kv delete-cas", true
			}
			return "kv delete", true
		}
	case strings.HasPrefix(path, "/v1/session/"):
		op := strings.SplitN(strings.TrimPrefix(path, "/v1/session/"), "/", 2)[0]
		switch op {
		case "create", "destroy":
			return "session " + op, true
		}
		return "session " + op, false
	}
	// Anything else (/v1/agent/self, say), by its first three path segments.
	parts := strings.SplitN(strings.TrimPrefix(path, "/"), "/", 4)
	if len(parts) > 3 {
		parts = parts[:3]
	}
	return method + " /" + strings.Join(parts, "/"), method != http.MethodGet
}

// readKind names a read-only transaction by what it reads, so that the bytes can be told
// apart: the line (a get-tree of queue/), a host's own keys with line_head (a release's read)
// or without it (a first look, the safety net), index checks alone (a wide tier's release
// asking which listed waiters still wait); "txn read" for any other.
func readKind(ops []txnOp) string {
	checks, trees := 0, map[string]bool{}
	for _, op := range ops {
		switch {
		case op.KV == nil:
		case op.KV.Verb == "check-index":
			checks++
		case op.KV.Verb == "get-tree":
			if i := strings.LastIndex(strings.TrimSuffix(op.KV.Key, "/"), "/"); i >= 0 {
				trees[op.KV.Key[i+1:]] = true
			}
		}
	}
	switch {
	case checks > 0 && checks == len(ops):
		return "txn read (index checks)"
	case trees["queue/"]:
		return "txn read (line)"
	case trees["line_head"]:
		return "txn read (own keys, head)"
	case trees["running/"]:
		return "txn read (own keys)"
	}
	return "txn read"
}

// agentLocal says whether a host's local agent answers a request at path itself, without
// asking a server. Here one agent is both the hosts' agent and the server; in a fleet each
// host's /v1/agent/self (the node name tierlock run records, asked at every run) stays on the
// host. Such requests are counted apart, never in the requests a run costs the servers.
func agentLocal(path string) bool { return path == "/v1/agent/self" }

// countingProxy forwards to Consul and counts: by kind, and second by second (by the second
// each answer ended in, from the proxy's start), to see when a workload's answers turned to
// errors.
type countingProxy struct {
	rp      *httputil.ReverseProxy
	mu      sync.Mutex
	kinds   counts
	start   time.Time
	seconds []second
}

// second is what the proxy answered in one second.
type second struct {
	Requests int64 `json:"requests"`
	Errors   int64 `json:"errors"` // as kindCount.Errors
	Bytes    int64 `json:"bytes"`
}

// secondsFrom are the proxy's seconds: its start (Unix nanoseconds) and each second since.
type secondsFrom struct {
	Start   int64    `json:"start_unix_nano"`
	Seconds []second `json:"seconds"`
}

func newCountingProxy(target string) *countingProxy {
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	// Thousands of hosts hold a request open at once: keep a connection to Consul for each
	// rather than open and close one per request.
	rp.Transport = &http.Transport{
		Proxy: nil, DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConns: 0, MaxIdleConnsPerHost: 100000, IdleConnTimeout: 5 * time.Minute,
		// Passes the host's Accept-Encoding on as it came: left to itself, Go's transport
		// would ask Consul for gzip on behalf of a host that did not, and unpack it here.
		DisableCompression: true,
	}
	// A host that gives up on a request (a cancelled wait) is no news: the answer's 502 is
	// counted as an error answer, and not logged.
	rp.ErrorLog = log.New(io.Discard, "", 0)
	return &countingProxy{rp: rp, kinds: counts{}, start: time.Now()}
}

// countingWriter counts an answer's bytes and notes its status. A refused transaction's
// answer (409, small: the errors) is kept, to tell which checks failed.
type countingWriter struct {
	http.ResponseWriter
	status  int
	bytes   int64
	keep    bool
	refused bytes.Buffer
}

func (w *countingWriter) WriteHeader(code int) { w.status = code; w.ResponseWriter.WriteHeader(code) }
func (w *countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	if w.keep && w.status == http.StatusConflict && w.refused.Len() < 1<<20 {
		w.refused.Write(b[:n])
	}
	return n, err
}
func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// serveJSON answers with what of returns, taken under the proxy's lock.
func (p *countingProxy) serveJSON(w http.ResponseWriter, of func() any) {
	p.mu.Lock()
	b, err := json.Marshal(of())
	p.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	_, _ = w.Write(b)
}

func (p *countingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case secondsPath:
		p.serveJSON(w, func() any { return secondsFrom{Start: p.start.UnixNano(), Seconds: p.seconds} })
		return
	case countsPath:
		p.serveJSON(w, func() any { return p.kinds })
		return
	}
	var body []byte
	if r.URL.Path == "/v1/txn" && r.Body != nil {
		body, _ = io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	kind, raft := classify(r.Method, r.URL.Path, r.URL.Query(), body)
	cw := &countingWriter{ResponseWriter: w, status: http.StatusOK, keep: r.URL.Path == "/v1/txn"}
	p.rp.ServeHTTP(cw, r)
	var lost []string
	if cw.keep && cw.status == http.StatusConflict {
		lost = lostClasses(body, cw.refused.Bytes())
	}
	p.mu.Lock()
	c := p.kinds[kind]
	c.Requests++
	c.Bytes += cw.bytes
	c.Raft = raft
	c.Local = agentLocal(r.URL.Path)
	failed := cw.status == http.StatusTooManyRequests || cw.status >= 500
	if failed {
		c.Errors++
	}
	at := int(time.Since(p.start) / time.Second)
	for len(p.seconds) <= at {
		p.seconds = append(p.seconds, second{})
	}
	p.seconds[at].Requests++
	p.seconds[at].Bytes += cw.bytes
	if failed {
		p.seconds[at].Errors++
	}
	if cw.keep && cw.status == http.StatusConflict {
		c.Refused++
	}
	if len(lost) > 0 {
		if c.Lost == nil {
			c.Lost = map[string]int64{}
		}
		for _, class := range lost {
			c.Lost[class]++
		}
	}
	p.kinds[kind] = c
	p.mu.Unlock()
}

// proxyMain is the proxy process: it forwards 127.0.0.1:<free port> to the agent named by its
// only argument, prints its address on stdout, and serves until killed.
func proxyMain(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "fleet proxy: want one argument, the agent's host:port")
		return 2
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleet proxy:", err)
		return 1
	}
	fmt.Println(ln.Addr().String())
	srv := &http.Server{Handler: newCountingProxy(args[0]), ReadHeaderTimeout: time.Minute}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "fleet proxy:", err)
		return 1
	}
	return 0
}

// proxyProcess is the harness's handle on the proxy process.
type proxyProcess struct {
	Addr string
	cmd  *exec.Cmd
	hc   *http.Client
}

// startProxy starts this binary again as the proxy in front of target.
func startProxy(target string) (*proxyProcess, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, target)
	cmd.Env = append(os.Environ(), proxyRoleEnv+"=proxy")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a Ctrl-C is the harness's to handle
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("fleet: start the proxy: %w", err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("fleet: the proxy did not say its address: %w", err)
	}
	return &proxyProcess{Addr: strings.TrimSpace(line), cmd: cmd, hc: &http.Client{Timeout: 2 * time.Minute}}, nil
}

// Counts returns the proxy's totals so far.
func (p *proxyProcess) Counts() (counts, error) {
	c := counts{}
	return c, p.getJSON(countsPath, "counts", &c)
}

// Seconds returns the proxy's second-by-second counts so far.
func (p *proxyProcess) Seconds() (secondsFrom, error) {
	var sf secondsFrom
	return sf, p.getJSON(secondsPath, "seconds", &sf)
}

// getJSON decodes into v what the proxy answers at path (one of its own endpoints, what
// naming it in errors).
func (p *proxyProcess) getJSON(path, what string, v any) error {
	resp, err := p.hc.Get("http://" + p.Addr + path)
	if err != nil {
		return fmt.Errorf("fleet: proxy %s: %w", what, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("fleet: proxy %s: %w", what, err)
	}
	return nil
}

// within sums the seconds of proxies (sfs) that fall in [from, to), by second from from.
func within(sfs []secondsFrom, from, to time.Time) []second {
	n := int((to.Sub(from) + time.Second - 1) / time.Second)
	if n <= 0 {
		return nil
	}
	out := make([]second, n)
	for _, sf := range sfs {
		start := time.Unix(0, sf.Start)
		for i, s := range sf.Seconds {
			at := start.Add(time.Duration(i) * time.Second)
			if !at.Add(time.Second).After(from) || !at.Before(to) { // no overlap with the window
				continue
			}
			k := max(int(at.Sub(from)/time.Second), 0) // < n, as at is before to
			out[k].Requests += s.Requests
			out[k].Errors += s.Errors
			out[k].Bytes += s.Bytes
		}
	}
	return out
}

// PID is the proxy's process id.
func (p *proxyProcess) PID() int { return p.cmd.Process.Pid }

// Stop ends the proxy process (it is ours, by its pid) and waits for it.
func (p *proxyProcess) Stop() {
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
}
