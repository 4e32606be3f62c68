package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hashicorp/consul/api"
	"github.com/sirupsen/logrus"

	"github.com/tierlock/tierlock/internal/consulclient"
	"github.com/tierlock/tierlock/lock"
)

// consulRetry retries Consul operations that fail for reasons that may pass (see
// consulclient.Retryable) with exponential backoff and jitter. It gives up once Consul has
// answered nothing successfully for --consul-timeout, so a long wait for a slot (during which
// Consul answers fine) does not use up the budget.
type consulRetry struct {
	timeout time.Duration
	now     func() time.Time
	log     *logrus.Entry
	lastOK  atomic.Int64 // unix nanoseconds of the last successful Consul request
}

func (r *consulRetry) do(ctx context.Context, what string, op func(context.Context) error) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0 // bounded below, by time since Consul last answered
	start := r.now()
	for {
		err := op(ctx)
		if err == nil || !consulclient.Retryable(ctx, err) {
			return err
		}
		failingSince := max(start.UnixNano(), r.lastOK.Load())
		next := b.NextBackOff()
		if r.now().Add(next).UnixNano()-failingSince > r.timeout.Nanoseconds() {
			return fmt.Errorf("%s: consul failing for longer than --consul-timeout %s: %w", what, r.timeout, err)
		}
		r.log.WithError(err).Warnf("%s: consul error, retrying in %s", what, next.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return err
		case <-time.After(next):
		}
	}
}

// observe wraps kv so that every successful request moves lastOK.
func (r *consulRetry) observe(kv *api.KV) lock.KV { return observedKV{kv: kv, r: r} }

type observedKV struct {
	kv *api.KV
	r  *consulRetry
}

func (o observedKV) Get(key string, q *api.QueryOptions) (*api.KVPair, *api.QueryMeta, error) {
	pair, meta, err := o.kv.Get(key, q)
	o.ok(err)
	return pair, meta, err
}

func (o observedKV) Keys(prefix, separator string, q *api.QueryOptions) ([]string, *api.QueryMeta, error) {
	keys, meta, err := o.kv.Keys(prefix, separator, q)
	o.ok(err)
	return keys, meta, err
}

func (o observedKV) List(prefix string, q *api.QueryOptions) (api.KVPairs, *api.QueryMeta, error) {
	pairs, meta, err := o.kv.List(prefix, q)
	o.ok(err)
	return pairs, meta, err
}

func (o observedKV) Txn(ops api.KVTxnOps, q *api.QueryOptions) (bool, *api.KVTxnResponse, *api.QueryMeta, error) {
	ok, resp, meta, err := o.kv.Txn(ops, q)
	o.ok(err)
	return ok, resp, meta, err
}

func (o observedKV) ok(err error) {
	if err == nil {
		o.r.lastOK.Store(o.r.now().UnixNano())
	}
}

// explain puts Consul's refusals by ACL and TLS failures in one sentence that names what to
// fix (consulclient.ACLProblem, TLSProblem), keeping the error underneath for errors.Is;
// other errors pass unchanged.
func explain(err error) error {
	p := consulclient.ACLProblem(err)
	if p == "" {
		p = consulclient.TLSProblem(err)
	}
	if p != "" {
		return &refusal{msg: p, err: err}
	}
	return err
}

// refusal is an error explain explained: a configuration problem, not an outage.
type refusal struct {
	msg string
	err error
}

func (e *refusal) Error() string { return e.msg }
func (e *refusal) Unwrap() error { return e.err }
