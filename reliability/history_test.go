package reliability_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/lock/schema"
)

// history follows the test tier in the real Consul server (blocking queries on its prefix,
// straight to the server, past any fault proxy) and checks the rollout's promises in every
// state it sees:
//
//   - never more running/ keys than max_concurrent;
//   - no more movers of the revision rolling out in flight in its open step, plus those of
//     that step that succeeded, than the schedule allows the step;
//   - while a revision is halted, no mover of it whose slot was taken after the halt.
//
// A blocking query returns the state at its answer's index: states that come and go between
// two answers are not seen. Each answer is checked at once and the next asked straight after,
// so with a fleet of a few hosts nearly every committed write is seen; States counts them.
type history struct {
	t      *testing.T
	c      *api.Client
	mu     sync.Mutex
	states int
	halted int            // states with the revision halted
	maxRev map[string]int // the largest step seen per revision
	bad    []string
	// noMax leaves out the max_concurrent rule, for a test that lowers max_concurrent while
	// slots are held (the soak): the slots held before stay held.
	noMax bool
	stop  chan struct{}
	done  chan struct{}
}

func watchHistory(t *testing.T, c *api.Client) *history {
	h := &history{t: t, c: c, maxRev: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go h.follow()
	return h
}

func (h *history) follow() {
	defer close(h.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-h.stop; cancel() }()
	var index uint64
	for ctx.Err() == nil {
		pairs, meta, err := h.c.KV().List(base, (&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Second}).WithContext(ctx))
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
				time.Sleep(50 * time.Millisecond) // the server restarting, say
			}
			continue
		}
		if meta.LastIndex == index {
			continue
		}
		index = meta.LastIndex
		h.check(index, pairs)
	}
}

// check judges one state of the tier.
func (h *history) check(index uint64, pairs api.KVPairs) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.states++
	maxC, policy := -1, schema.DefaultPolicy
	var ro schema.Rollout
	var recs []schema.Record
	for _, p := range pairs {
		rel := strings.TrimPrefix(p.Key, base)
		switch {
		case rel == "max_concurrent":
			maxC, _ = strconv.Atoi(strings.TrimSpace(string(p.Value)))
		case rel == "rollout":
			if err := json.Unmarshal(p.Value, &ro); err != nil {
				h.fail(index, "rollout unreadable: %v", err)
			}
		case rel == "rollout_policy":
			if err := json.Unmarshal(p.Value, &policy); err != nil {
				h.fail(index, "rollout_policy unreadable: %v", err)
			}
		case strings.HasPrefix(rel, "running/"):
			var r schema.Record
			if err := json.Unmarshal(p.Value, &r); err != nil {
				h.fail(index, "%s unreadable: %v", rel, err)
			}
			recs = append(recs, r)
		}
	}
	if maxC > 0 && len(recs) > maxC && !h.noMax {
		h.fail(index, "%d slots held, max_concurrent %d", len(recs), maxC)
	}
	if ro.Revision == "" {
		return
	}
	h.maxRev[ro.Revision] = max(h.maxRev[ro.Revision], ro.Step)
	if ro.Halted() {
		h.halted++
	}
	inflight := 0
	var names []string
	for _, r := range recs {
		if r.Revision != ro.Revision || r.Batch == nil {
			continue
		}
		if *r.Batch == ro.Step && r.State == schema.StateRunning {
			inflight++
			names = append(names, fmt.Sprintf("%s started %s attempt %d", r.Holder, r.StartedAt.Format("15:04:05.000"), r.Attempts))
		}
		if ro.Halted() && ro.HaltedAt != nil && r.StartedAt.After(*ro.HaltedAt) {
			h.fail(index, "%s started %s as a mover of %s after its halt at %s", r.Holder, r.StartedAt.Format(time.RFC3339Nano), ro.Revision, ro.HaltedAt.Format(time.RFC3339Nano))
		}
	}
	if size := policy.Size(ro.Step); !ro.Full && size >= 0 && inflight+ro.Succeeded > size {
		b, _ := json.Marshal(ro)
		h.fail(index, "step %d of %s admits %d, but %d run (%v) and %d succeeded; rollout %s", ro.Step, ro.Revision, size, inflight, names, ro.Succeeded, b)
	}
}

func (h *history) fail(index uint64, format string, args ...any) {
	h.bad = append(h.bad, fmt.Sprintf("index %d: ", index)+fmt.Sprintf(format, args...))
}

// finish stops following and fails the test on every broken promise. It returns the number
// of states checked.
func (h *history) finish() int {
	close(h.stop)
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range h.bad {
		h.t.Error("history: " + b)
	}
	return h.states
}
