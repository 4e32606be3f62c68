package lock

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/lock/schema"
)

// The queue: a holder that finds the tier full writes queue/<holder>, bound to a Consul
// session with a TTL (behaviour delete) that it renews while it waits, so a waiter that dies
// disappears. Arrival order is the entries' CreateIndex; waiters rank by the convergence their
// entry carries, then arrival (Options.QueueOrder). A write that frees a slot hands it to the
// first in line in the same transaction (grants: its running/ record written, its entry
// rewritten to carry it), so each waiter watches only its own entry, with a blocking query on
// that one key: a release wakes exactly the waiter it admits, and tells it so. set-max and
// enable hand slots over under the new limit; disable deletes the entries, so their waiters
// wake and leave; a write that leaves slots free with waiters it could not serve rewrites the
// next waiter's entry (nudge).

// Sessions is the part of Consul's *api.Session the queue uses.
type Sessions interface {
	Create(se *api.SessionEntry, q *api.WriteOptions) (string, *api.WriteMeta, error)
	Destroy(id string, q *api.WriteOptions) (*api.WriteMeta, error)
	Renew(id string, q *api.WriteOptions) (*api.SessionEntry, *api.WriteMeta, error)
}

// parseWaiter reads a queue entry. One that is not a JSON object naming its run is not
// tierlock's (every version has written run_id): ranked, it would stand first in line and
// never be handed a slot, since a grant needs the run it admits, and the tier would wait on
// it for as long as its session lives. So it ranks nowhere, like an entry without a session.
func parseWaiter(holder string, p *api.KVPair) (schema.Waiter, error) {
	var w schema.Waiter
	if err := json.Unmarshal(p.Value, &w); err != nil {
		return schema.Waiter{}, fmt.Errorf("queue entry is not a tierlock waiter (%d bytes, not its JSON)", len(p.Value))
	}
	if w.RunID == "" {
		return schema.Waiter{}, fmt.Errorf("queue entry names no run_id (not written by tierlock)")
	}
	w.Holder, w.Session, w.CreateIndex, w.ModifyIndex = holder, p.Session, p.CreateIndex, p.ModifyIndex
	return w, nil
}

// The TTL of a waiter's session is a trade: a waiter whose process dies while its host's
// agent lives (SIGKILL, a crash; a host that dies takes its sessions with it at once, as each
// is bound to the node's health too) leaves the queue within twice it (Consul's grace), and one
// that lives renews it once per TTL, a request Consul answers for each waiter all the while it
// waits (a line of 2,000 hosts: 200 a second at 10s, 33 at a minute). The default is a minute:
// at 10s the renewals of 2,000 idle waiters alone cost Consul 5 % of a core (bench/README.md,
// "Idle waiters"). (A minute had been tried before and the fleet benchmark's 2,000 hosts lost
// places in line; since a waiter that gives up deletes its own entry, that is gone: 1.00
// joins per run at 60s as at 10s.)
const (
	DefaultQueueTTL = time.Minute
	minQueueTTL     = 10 * time.Second // Consul's least session TTL
	maxQueueTTL     = 24 * time.Hour   // and its greatest
)

// queue is one Acquire's place in the queue.
type queue struct {
	s       *Semaphore
	holder  string
	session string
	stop    chan struct{}
	stopped chan struct{}
	cancel  context.CancelFunc // ends a renewal in flight when the queue is left
	ctx     context.Context    // of the renewals
	// net is how long a watch of the entry lasts before the waiter looks on its own: set at
	// joining (safetyNet), doubled at each look (acquisition.wait).
	net time.Duration
}

// join creates the session and writes the entry; net is its safety net's period. The entry
// carries this run's id so that a retried Acquire of the same run recognises it. The same
// transaction reads the tier back, so the waiter knows its place (and what to watch) without
// another request.
func (s *Semaphore) join(ctx context.Context, w schema.Waiter, net time.Duration) (*queue, *Snapshot, error) {
	if s.opts.Sessions == nil {
		return nil, nil, fmt.Errorf("lock: waiting for a slot needs Options.Sessions")
	}
	ttl := s.opts.QueueTTL
	wctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	id, _, err := s.opts.Sessions.Create(&api.SessionEntry{
		Name: "tierlock queue " + s.opts.Tier + " " + w.Holder, TTL: ttl.String(),
		Behavior: api.SessionBehaviorDelete, LockDelay: time.Millisecond,
	}, (&api.WriteOptions{}).WithContext(wctx))
	if err != nil {
		return nil, nil, fmt.Errorf("lock: queue session for %s: %w", w.Holder, err)
	}
	q := &queue{s: s, holder: w.Holder, session: id, stop: make(chan struct{}), stopped: make(chan struct{}), net: net}
	q.ctx, q.cancel = context.WithCancel(context.WithoutCancel(ctx))
	go q.renew(ttl)
	value, err := json.Marshal(w)
	if err != nil {
		q.leave(ctx)
		return nil, nil, err
	}
	// An entry of an earlier run of this holder (killed while it waited; its session not yet
	// expired) is deleted first: a holder runs once at a time, so it is stale.
	key := s.base + queueDir + w.Holder
	snap, err := s.applyAndRead(ctx, &txn{writes: api.KVTxnOps{
		{Verb: api.KVDelete, Key: key},
		{Verb: api.KVLock, Key: key, Value: value, Session: id},
	}}, w.Holder)
	if err == nil && snap == nil {
		err = fmt.Errorf("lock: %s is held by another session", key)
	}
	if err != nil {
		q.leave(ctx)
		return nil, nil, err
	}
	return q, snap, nil
}

// renew keeps the session alive until leave. A renewal is sent once per TTL; one that fails is
// tried again a quarter of the TTL later (Consul ends a session only at twice its TTL without
// renewal, so that leaves three more tries), then the tick goes on. If the session is lost
// anyway, the entry goes with it and Acquire queues again. (Tried at a TTL of 10s: retrying a
// failed renewal within moments, and spreading renewals over the TTL's last quarter. On a
// saturated Consul the retries fed the load that failed them: at 2,000 waiters, 64 renewals
// and 25 sessions per run, against 6 and 1 with the plain tick.)
func (q *queue) renew(ttl time.Duration) {
	defer close(q.stopped)
	t := time.NewTimer(ttl)
	defer t.Stop()
	for {
		select {
		case <-q.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(q.ctx, q.s.opts.RequestTimeout)
			_, _, err := q.s.opts.Sessions.Renew(q.session, (&api.WriteOptions{}).WithContext(ctx))
			cancel()
			if err != nil {
				t.Reset(ttl / 4)
			} else {
				t.Reset(ttl)
			}
		}
	}
}

// leave destroys the session, which deletes the entry if a slot was not taken with it. It runs
// even when ctx is cancelled, within its own bound: a signal must not strand an entry for the
// TTL. It keeps ctx's deadline, though (give or take a moment to send the request): that is
// the caller's bound on the whole operation, and an entry left behind goes with its session.
func (q *queue) leave(ctx context.Context) {
	if q == nil {
		return
	}
	close(q.stop)
	q.cancel()
	<-q.stopped
	deadline := time.Now().Add(q.s.opts.RequestTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
		if least := time.Now().Add(leaveMoment); deadline.Before(least) {
			deadline = least
		}
	}
	ctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	_, _ = q.s.opts.Sessions.Destroy(q.session, (&api.WriteOptions{}).WithContext(ctx))
}

// leaveMoment is the least time leave gives the destruction of its session.
const leaveMoment = 250 * time.Millisecond

// The safety net: a waiter watches its own entry (a blocking query), and when a watch ends with
// nothing new it looks at the tier on its own, for a change nobody announced, such as
// max_concurrent raised by hand (tierlock's own writes hand slots over or nudge). Each look is
// two requests (the watch's answer and a read), so what a line costs Consul at rest is the sum
// over its waiters of one over their periods. A waiter's first period is minNet, or, when it
// read the line before joining (a mover does; a run's first look reads only its own entry and
// the slots), the length of that line over netLooks seconds (more than 240 ahead); each look
// that finds nothing new doubles it, up to maxNet (Consul's longest blocking query by default,
// max_query_time). The line seen at joining alone is not enough: in a burst (a tier enabled
// again, Consul back after an outage) every host looks before most have joined the line.
// So 2,000 waiters of a burst look at 1, 3, 7 and 15 minutes after joining: 10 looks a second
// over their first 10 minutes, against 33 with a minute each (bench/README.md, "Idle
// waiters"). A long line still finds a raised limit within moments, since somebody in it looks
// several times a second: a waiter whose look finds a slot free with others ahead of it hands
// the slot to them (acquisition.wait), not only the first in line. A short one finds it within
// minutes; set-max and enable wake the line at once.
const (
	minNet   = time.Minute
	maxNet   = 10 * time.Minute
	netLooks = 4
)

// safetyNet is the period of the safety net of a waiter that joined a line of n (see minNet),
// least being minNet but in tests.
func safetyNet(n int, least time.Duration) time.Duration {
	return min(max(time.Duration(n)*time.Second/netLooks, least), maxNet)
}

// watch blocks until w, the waiter's own queue entry, changes, or until. It returns at until
// too: Acquire then reads and decides, so that a slot handed over at the last moment is found,
// not left held. A write that hands the waiter a slot rewrites its entry with the record it
// wrote (or, from a host that predates that, deletes it: see grantNews), one that leaves a slot
// free for it rewrites it unchanged (nudge), and disable deletes it. The record is returned
// with handed.
func (s *Semaphore) watch(ctx context.Context, w schema.Waiter, net time.Duration, until time.Time) (wake, *schema.Record, error) {
	left := until.Sub(s.opts.Now())
	if left <= 0 {
		return woken, nil, nil
	}
	wait := min(left, net)
	ctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout+wait+wait/16)
	defer cancel()
	key := s.base + queueDir + w.Holder
	p, _, err := s.kv.Get(key, (&api.QueryOptions{WaitIndex: w.ModifyIndex, WaitTime: wait}).WithContext(ctx))
	switch {
	case err != nil:
		return woken, nil, fmt.Errorf("lock: watch %s: %w", key, err)
	case p == nil:
		return entryGone, nil, nil
	case p.ModifyIndex == w.ModifyIndex:
		return nothingNew, nil, nil
	}
	if entry, err := parseWaiter(w.Holder, p); err == nil && entry.Granted != nil && entry.Granted.RunID == w.RunID && entry.Granted.Holder == w.Holder {
		return handed, entry.Granted, nil
	}
	return woken, nil, nil
}

// wake is why a watch ended.
type wake int

const (
	woken      wake = iota // something changed, or the wait is over: read and decide
	entryGone              // the waiter's entry went: most likely it was handed a slot
	nothingNew             // the safety net's period passed with the entry as it was
	handed                 // the entry carries the slot a write handed the waiter (GrantInEntry)
)
