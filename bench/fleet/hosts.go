package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/consulclient"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// The tools compared.
const (
	toolTierlock = "tierlock"
	toolPeer     = "consul-lock" // api.Semaphore, what `consul lock -n` runs
)

// runRecord is one simulated host's run.
type runRecord struct {
	holder string
	// arrived is the CreateIndex of the key with which the host entered its tool's line of
	// waiters (tierlock's queue/ entry, the peer's contender key); 0 if it never waited in one.
	arrived    uint64
	start, end time.Time // of the command; zero if it never ran
	err        error
	// batch is the rollout step that admitted the run as a mover (its slot's Batch); -1 when
	// the run was no mover (no revision, or its host already on it), and for the peer.
	batch int
	// release is what the release did (tierlock only): see slowHandoffs.
	release releaseTrace
}

// host is one simulated host: its own api.Client, over its own connection to the proxy.
type host interface {
	// run acquires, runs the command (a sleep of t) and releases, as `tierlock run` or
	// `consul lock -n` does. started, if not nil, is called once the command has started.
	run(ctx context.Context, t time.Duration, started func()) runRecord
}

// newClient is a Consul client of its own, on a transport (and so a connection pool) of its
// own, like a host's. wrap, if not nil, wraps its transport.
func newClient(addr string, wrap func(http.RoundTripper) http.RoundTripper) (*api.Client, error) {
	cfg := api.DefaultConfig() // a new pooled transport each time
	cfg.Address, cfg.Scheme, cfg.Token, cfg.TokenFile = addr, "http", "", ""
	cfg.TLSConfig = api.TLSConfig{}
	if wrap == nil {
		return consulclient.FromConfig(cfg)
	}
	hc, err := api.NewHttpClient(cfg.Transport, cfg.TLSConfig)
	if err != nil {
		return nil, err
	}
	hc.Transport = wrap(hc.Transport)
	cfg.HttpClient = hc
	return api.NewClient(cfg)
}

// tierlockHost drives the lock package as cmd/tierlock's run does: the agent's node name
// (asked at every run, an agent-local request), Acquire with its queue and wait, the command,
// Release.
type tierlockHost struct {
	holder, prefix string
	client         *api.Client
	wait, queueTTL time.Duration
	revision       string // as run's --revision ("" when the run names none)
	onLine         func() // called once the host waits in the queue (the long wait counts them)
	probe          *releaseProbe
}

const benchTier = "bench/tier"

func newTierlockHost(addr, prefix, holder string, wait, queueTTL time.Duration) (*tierlockHost, error) {
	probe := &releaseProbe{}
	c, err := newClient(addr, func(next http.RoundTripper) http.RoundTripper {
		probe.next = next
		return probe
	})
	if err != nil {
		return nil, err
	}
	return &tierlockHost{holder: holder, prefix: prefix, client: c, wait: wait, queueTTL: queueTTL, probe: probe}, nil
}

func (h *tierlockHost) run(ctx context.Context, t time.Duration, started func()) runRecord {
	rec := runRecord{holder: h.holder, batch: -1}
	// Best effort, as in run: a slot without a node is still a slot.
	node, _ := consulclient.NodeName(ctx, h.client)
	sem, err := lock.New(h.client.KV(), lock.Options{
		Prefix: h.prefix, Tier: benchTier, DefaultMax: lock.DefaultMaxConcurrent,
		RequestTimeout: lock.DefaultRequestTimeout, Sessions: h.client.Session(), Retryable: consulclient.Retryable, QueueTTL: h.queueTTL,
	})
	if err != nil {
		rec.err = err
		return rec
	}
	req := lock.Request{
		Record: schema.Record{
			Holder: h.holder, Hostname: h.holder, Node: node, PID: os.Getpid(),
			Command: "sleep", RunID: h.holder + "-" + fmt.Sprint(time.Now().UnixNano()), Version: "tierlock fleet-bench",
			Revision: h.revision,
		},
		WaitUntil: time.Now().Add(h.wait),
	}
	inLine := false
	req.Waiting = func(s *lock.Snapshot) {
		if inLine {
			return
		}
		inLine = true
		for _, w := range s.Queue {
			if w.Holder == h.holder {
				rec.arrived = w.CreateIndex
			}
		}
		if h.onLine != nil {
			h.onLine()
		}
	}
	var slot *lock.Slot
	err = retry(ctx, func() (err error) {
		slot, err = sem.Acquire(ctx, req)
		return err
	})
	if err != nil {
		// As run does (runner.Job): a run that gives up undoes what its Acquire may have
		// left, its place in line (kept, with its session renewed, for a retry that will not
		// come) or a slot handed to it meanwhile. Without this, a host that gave up in a
		// burst left a place that a release later handed a slot to, held by nobody.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_ = retry(actx, func() error { return sem.Abandon(actx, h.holder, req.RunID) })
		rec.err = err
		return rec
	}
	if slot.Batch != nil {
		rec.batch = *slot.Batch
	}
	rec.start = time.Now()
	if started != nil {
		started()
	}
	sleep(ctx, t)
	rec.end = time.Now()
	// As run's finish: the release outlives a cancelled run, with its own bound.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	h.probe.start()
	if err := retry(rctx, func() error { return sem.Release(rctx, slot) }); err != nil {
		rec.err = fmt.Errorf("release: %w", err)
	}
	rec.release = h.probe.stop(rec.end)
	return rec
}

// consulTimeout is `tierlock run`'s default --consul-timeout.
const consulTimeout = time.Minute

// retry is run's retry policy (cmd/tierlock/retry.go) in brief: Consul errors that may pass
// are retried with exponential backoff and jitter, 100ms to 5s, until they have lasted
// consulTimeout. Acquire and Release are idempotent for one run, so retrying them is safe.
func retry(ctx context.Context, op func() error) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 100*time.Millisecond, 5*time.Second, consulTimeout
	return backoff.Retry(func() error {
		err := op()
		if err != nil && !consulclient.Retryable(ctx, err) {
			return backoff.Permanent(err)
		}
		return err
	}, backoff.WithContext(b, ctx))
}

// peerHost drives api.Semaphore as `consul lock -n N PREFIX CMD` does: Acquire (a session,
// a contender key, then watching the prefix), the command, Release, Destroy.
type peerHost struct {
	holder, prefix string
	limit          int
	client         *api.Client
	seen           *arrivalWatcher
}

func newPeerHost(addr, prefix, holder string, limit int) (*peerHost, error) {
	seen := &arrivalWatcher{}
	c, err := newClient(addr, func(rt http.RoundTripper) http.RoundTripper { seen.next = rt; return seen })
	if err != nil {
		return nil, err
	}
	return &peerHost{holder: holder, prefix: prefix, limit: limit, client: c, seen: seen}, nil
}

func (h *peerHost) run(ctx context.Context, t time.Duration, started func()) runRecord {
	rec := runRecord{holder: h.holder, batch: -1}
	// The options `consul lock -n` passes (its -monitor-retry default is 3).
	sem, err := h.client.SemaphoreOpts(&api.SemaphoreOptions{
		Prefix: h.prefix, Limit: h.limit, SessionName: "Consul lock for " + h.prefix + " at " + h.holder,
		MonitorRetries: 3, MonitorRetryTime: api.DefaultMonitorRetryTime,
	})
	if err != nil {
		rec.err = err
		return rec
	}
	lost, err := sem.Acquire(ctx.Done())
	rec.arrived = h.seen.createIndex()
	if err != nil || lost == nil {
		if err == nil { // stopped by ctx
			err = ctx.Err()
		}
		rec.err = err
		return rec
	}
	rec.start = time.Now()
	if started != nil {
		started()
	}
	sleep(ctx, t)
	rec.end = time.Now()
	if err := sem.Release(); err != nil {
		rec.err = fmt.Errorf("release: %w", err)
		return rec
	}
	if err := sem.Destroy(); err != nil && !errors.Is(err, api.ErrSemaphoreInUse) {
		rec.err = fmt.Errorf("destroy: %w", err)
	}
	return rec
}

// arrivalWatcher is a peer host's transport: it notes the contender key the host acquires
// and, from the first listing of the prefix after that, the key's CreateIndex, which is the
// host's place in the order of arrival. It adds no request of its own.
type arrivalWatcher struct {
	next    http.RoundTripper
	mu      sync.Mutex
	key     string // the contender key, once acquired
	session string
	index   uint64
	onLine  func() // called once the contender key is written (the long wait counts them)
}

func (a *arrivalWatcher) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := a.next.RoundTrip(r)
	if err != nil || resp.StatusCode != http.StatusOK || !strings.HasPrefix(r.URL.Path, "/v1/kv/") {
		return resp, err
	}
	q := r.URL.Query()
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case r.Method == http.MethodPut && q.Has("acquire") && a.key == "":
		a.key, a.session = strings.TrimPrefix(r.URL.Path, "/v1/kv/"), q.Get("acquire")
		if a.onLine != nil {
			a.onLine()
		}
	case r.Method == http.MethodGet && q.Has("recurse") && a.key != "" && a.index == 0:
		body, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		if rerr != nil {
			return resp, nil
		}
		var pairs []struct {
			Key         string
			CreateIndex uint64
		}
		if json.Unmarshal(body, &pairs) == nil {
			for _, p := range pairs {
				if p.Key == a.key {
					a.index = p.CreateIndex
				}
			}
		}
	}
	return resp, nil
}

func (a *arrivalWatcher) createIndex() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.index
}

// sessionID is the session the host's semaphore created, "" before it did.
func (a *arrivalWatcher) sessionID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.session
}

// sleep is the command: t, or less if ctx ends.
func sleep(ctx context.Context, t time.Duration) {
	timer := time.NewTimer(t)
	defer timer.Stop()
	select {
	case <-ctx.Done():
	case <-timer.C:
	}
}
