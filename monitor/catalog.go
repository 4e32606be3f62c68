package monitor

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/kvtxn"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// NodeLister is the part of *api.Catalog the catalog reaper reads.
type NodeLister interface {
	Nodes(q *api.QueryOptions) ([]*api.Node, *api.QueryMeta, error)
}

// CheckLister is the part of *api.Health the catalog reaper reads.
type CheckLister interface {
	State(state string, q *api.QueryOptions) (api.HealthChecks, *api.QueryMeta, error)
}

// sinceKey holds JudgeNodes' since between runs, relative to the prefix.
const sinceKey = "_reaper/critical_since"

// CatalogOptions configure ReapCatalog.
type CatalogOptions struct {
	// Grace is how long a node must have been missing from the catalog, or its serfHealth
	// critical, before its slots are freed. A missing node gets the grace too: a host whose
	// agent was renamed is alive under another name until its next run records that name.
	Grace time.Duration
	// DryRun judges and finds, and writes nothing (not even when nodes were first seen
	// critical, so a dry run never brings a freeing closer).
	DryRun bool
}

// CatalogResult is what ReapCatalog judged and freed.
type CatalogResult struct {
	Verdicts []NodeVerdict // one per node recorded by a slot
	Freed    []Freed       // the slots freed (in a dry run: that would be)
}

// ReapCatalog frees the slots whose recorded Consul node has been missing from the catalog, or
// its serfHealth check critical, for at least opts.Grace (see JudgeNodes), for fleets outside
// AWS. Slots that recorded no node are never judged. It reads every tier, the catalog and the
// check states consistently, remembers when it first saw each node missing or critical (with
// check-and-set; losing that race to another reaper only means its view is kept), then frees
// like Reap.
func (r *Reaper) ReapCatalog(ctx context.Context, nodes NodeLister, checks CheckLister, opts CatalogOptions) (CatalogResult, error) {
	if opts.Grace < 0 {
		return CatalogResult{}, fmt.Errorf("monitor: grace %s is negative", opts.Grace)
	}
	held, err := r.heldNodes(ctx)
	if err != nil || len(held) == 0 {
		return CatalogResult{}, err
	}
	cat, err := r.readCatalog(ctx, nodes, checks)
	if err != nil {
		return CatalogResult{}, err
	}
	since, index, err := r.readSince(ctx)
	if err != nil {
		return CatalogResult{}, err
	}
	verdicts, next := JudgeNodes(held, cat, since, r.opts.Now(), opts.Grace)
	res := CatalogResult{Verdicts: verdicts}
	var dead []string
	for _, v := range verdicts {
		if v.Dead {
			dead = append(dead, v.Node)
		}
	}
	if opts.DryRun {
		if len(dead) > 0 {
			res.Freed, err = r.findFreed(ctx, ByNodes(dead))
		}
		return res, err
	}
	if err := r.writeSince(ctx, since, next, index); err != nil {
		return res, err
	}
	if len(dead) > 0 {
		res.Freed, err = r.reapOnce(ctx, ByNodes(dead))
	}
	return res, err
}

// heldNodes lists the nodes recorded by slots, in every tier.
func (r *Reaper) heldNodes(ctx context.Context) ([]string, error) {
	found, err := r.findFreed(ctx, func(_ string, rec schema.Record) bool { return rec.Node != "" })
	if err != nil {
		return nil, err
	}
	nodes := make([]string, 0, len(found))
	for _, f := range found {
		nodes = append(nodes, f.Node)
	}
	return nodes, nil
}

// readCatalog reads the registered nodes and the critical serfHealth checks. Both reads are
// consistent: a stale catalog could miss a node that has just joined.
func (r *Reaper) readCatalog(ctx context.Context, nodes NodeLister, checks CheckLister) (Catalog, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.RequestTimeout)
	defer cancel()
	q := (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx)
	ns, meta, err := nodes.Nodes(q)
	if err != nil {
		return Catalog{}, fmt.Errorf("monitor: read the catalog's nodes: %w", err)
	}
	// The reaper's own agent is always registered: an empty catalog is a broken answer, and
	// judging by it would free every slot.
	if len(ns) == 0 && meta != nil && meta.ResultsFilteredByACLs {
		return Catalog{}, fmt.Errorf("monitor: read the catalog's nodes: %w: the token lacks permission 'node:read' on \"\" (consul filtered the catalog by ACL)", lock.ErrRejected)
	}
	if len(ns) == 0 {
		return Catalog{}, fmt.Errorf("monitor: the catalog lists no node at all; not judging by it")
	}
	cat := Catalog{Filtered: meta.ResultsFilteredByACLs}
	for _, n := range ns {
		cat.Nodes = append(cat.Nodes, n.Node)
	}
	q = (&api.QueryOptions{RequireConsistent: true, Filter: `CheckID == "serfHealth"`}).WithContext(ctx)
	cs, _, err := checks.State(api.HealthCritical, q)
	if err != nil {
		return Catalog{}, fmt.Errorf("monitor: read the critical serfHealth checks: %w", err)
	}
	for _, c := range cs {
		if c.CheckID == "serfHealth" { // the filter is Consul's; this keeps a lax answer honest
			cat.Critical = append(cat.Critical, c.Node)
		}
	}
	return cat, nil
}

// readSince reads when nodes were first seen missing or critical, and the key's ModifyIndex
// (0 if absent) for the check-and-set that writes it back.
func (r *Reaper) readSince(ctx context.Context) (map[string]time.Time, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.RequestTimeout)
	defer cancel()
	key := r.opts.Prefix + "/" + sinceKey
	pairs, _, err := r.kv.List(key, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, 0, fmt.Errorf("monitor: read %s: %w", key, err)
	}
	for _, p := range pairs {
		if p.Key != key {
			continue // List is by prefix
		}
		since := map[string]time.Time{}
		if err := json.Unmarshal(p.Value, &since); err != nil {
			// Only bookkeeping: starting the grace over is safe, freeing early would not be.
			return map[string]time.Time{}, p.ModifyIndex, nil
		}
		return since, p.ModifyIndex, nil
	}
	return map[string]time.Time{}, 0, nil
}

// writeSince stores next if it differs from since, with check-and-set on index.
func (r *Reaper) writeSince(ctx context.Context, since, next map[string]time.Time, index uint64) error {
	if sameTimes(since, next) {
		return nil
	}
	value, err := json.Marshal(next)
	if err != nil {
		return fmt.Errorf("monitor: encode %s: %w", sinceKey, err)
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.RequestTimeout)
	defer cancel()
	key := r.opts.Prefix + "/" + sinceKey
	op := &api.KVTxnOp{Verb: api.KVCAS, Key: key, Value: value, Index: index}
	if len(next) == 0 {
		op = &api.KVTxnOp{Verb: api.KVDeleteCAS, Key: key, Index: index}
	}
	ok, resp, _, err := r.kv.Txn(api.KVTxnOps{op}, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("monitor: write %s: %w", key, err)
	}
	if ok {
		return nil
	}
	// Another reaper wrote first (a lost race, as lock judges them): its view is as good as
	// ours. Anything else is Consul refusing (an ACL, say), and the grace would never run
	// out: that must be seen.
	if why := kvtxn.Refused(api.KVTxnOps{op}, resp); why != "" {
		return fmt.Errorf("monitor: write %s: %w: %s", key, lock.ErrRejected, why)
	}
	return nil
}

func sameTimes(a, b map[string]time.Time) bool {
	if len(a) != len(b) {
		return false
	}
	for k, t := range a {
		if u, ok := b[k]; !ok || !u.Equal(t) {
			return false
		}
	}
	return true
}
