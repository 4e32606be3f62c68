package lock

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/answercap"
	"github.com/tierlock/tierlock/lock/schema"
)

// ReadAll reads every tier under opts.Prefix and returns their snapshots sorted by tier. A
// tier is any ENV/SERVICE with at least one key stored under it; keys that fit no tier's
// layout are ignored, and their values are never fetched. Each tier is consistent in itself
// (see read.go). Junk under one tier costs that tier alone: names too long for any tier key
// are skipped and reported in its Suspect; a tier with more than MaxTierKeys keys, or whose
// key names come to more than a listing reads or take Consul too long to list, is returned
// unread, the reason in its Problems.
// opts.Tier is not used.
func ReadAll(ctx context.Context, kv KV, opts Options) ([]*Snapshot, error) {
	prefix := strings.Trim(opts.Prefix, "/")
	if prefix == "" {
		prefix = schema.DefaultPrefix
	}
	if err := schema.ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	// opts.RequestTimeout bounds each request, not the whole read: a read of a prefix with
	// junk under it takes longer than one request (ctx bounds the whole).
	timeout := opts.RequestTimeout
	if timeout <= 0 {
		timeout = DefaultRequestTimeout
	}
	listed, err := listTiers(ctx, kv, prefix, timeout)
	if err != nil {
		return nil, err
	}
	tiers := make([]string, 0, len(listed))
	var wanted []string
	for t, l := range listed {
		tiers = append(tiers, t)
		if l.over == nil && len(l.keys) <= MaxTierKeys {
			sort.Strings(l.keys)
			wanted = append(wanted, l.keys...)
		}
	}
	sort.Strings(tiers)
	sort.Strings(wanted)
	// One pass fetches the values of every tier, batched across tiers; a tier that changed
	// since the listing is read again on its own.
	got, gone, over, err := fetch(ctx, kv, wanted, opts.ReadBatch, func(k string) string { return baseOf(prefix, k) }, timeout)
	if err != nil {
		return nil, err
	}
	all := allRead{kv: kv, opts: opts, prefix: prefix, timeout: timeout, got: got, gone: gone, over: over}
	out := make([]*Snapshot, 0, len(tiers))
	for _, t := range tiers {
		snap, err := all.tier(ctx, t, listed[t])
		if err != nil {
			return nil, err
		}
		out = append(out, snap)
	}
	return out, nil
}

// allRead is what ReadAll fetched in one pass, for each tier's snapshot.
type allRead struct {
	kv         KV
	opts       Options
	prefix     string
	timeout    time.Duration
	got        map[string]*api.KVPair
	gone, over map[string]bool
}

// tier is the snapshot of tier t as listed in l: unread with its reason, from the pass, or
// read again on its own when it changed since the listing.
func (a allRead) tier(ctx context.Context, t string, l *tierList) (*Snapshot, error) {
	opts, base := a.opts, a.prefix+"/"+t+"/"
	var snap *Snapshot
	switch {
	case l.over != nil:
		snap = newSnapshot(t, opts.DefaultMax, opts.QueueOrder, nil, base)
		snap.Problems = append(snap.Problems, l.over)
	case len(l.keys) > MaxTierKeys:
		snap = newSnapshot(t, opts.DefaultMax, opts.QueueOrder, nil, base)
		snap.Problems = append(snap.Problems, tooManyKeys(base, len(l.keys)))
	case a.over[base]:
		snap = newSnapshot(t, opts.DefaultMax, opts.QueueOrder, nil, base)
		snap.Problems = append(snap.Problems, tooMuchValue(base))
	case current(l.keys, a.got, a.gone, l.index):
		snap = newSnapshot(t, opts.DefaultMax, opts.QueueOrder, pairsOf(l.keys, a.got), base)
		if err := l.junk.err(base); err != nil {
			snap.Suspect = append(snap.Suspect, err)
		}
	default:
		tctx, cancel := context.WithTimeout(ctx, a.timeout)
		var err error
		snap, err = readTier(tctx, tierRead{kv: a.kv, tier: t, base: base, defaultMax: opts.DefaultMax, order: opts.QueueOrder,
			batch: opts.ReadBatch, q: &api.QueryOptions{RequireConsistent: true}})
		cancel()
		if errors.Is(err, ErrTooManyKeys) {
			snap = newSnapshot(t, opts.DefaultMax, opts.QueueOrder, nil, base)
			snap.Problems, err = append(snap.Problems, err), nil
		}
		if err != nil {
			return nil, err
		}
	}
	snap.whole = len(snap.Problems) == 0
	if opts.Now != nil {
		snap.now = opts.Now().UTC()
	}
	return snap, nil
}

// tierList is what the listing found of one tier.
type tierList struct {
	keys  []string   // layout keys, of valid length
	junk  *junkNames // names under the tier too long for any key of it
	index uint64     // the index of the listing the keys come from
	over  error      // the tier's names came to more than a listing reads: not listed
}

// listTiers lists the keys of every tier under prefix: the environments, each environment's
// services, then each tier's keys, so that junk names under a tier (which a host of the tier
// may write) cost that tier alone. A tier's listing whose answer is too large, or which Consul
// takes longer than tierListTimeout to give twice in a row (it builds the whole answer first:
// 500 MB of names take it 8 s or more), leaves the tier unread, the reason in over. Only junk directly under
// prefix or an environment, where only a token for the whole prefix or environment may write,
// can fail the listing of every tier.
//
// Listing the whole prefix in one request would cost one request instead of one per tier,
// but Consul would build the answer whole, junk included, before its first byte.
func listTiers(ctx context.Context, kv KV, prefix string, timeout time.Duration) (map[string]*tierList, error) {
	q := &api.QueryOptions{RequireConsistent: true}
	listed := map[string]*tierList{}
	envs, err := listDirs(ctx, kv, prefix+"/", q, timeout)
	if err != nil {
		return nil, err
	}
	for _, env := range envs {
		svcs, err := listDirs(ctx, kv, prefix+"/"+env+"/", q, timeout)
		if err != nil {
			return nil, err
		}
		for _, svc := range svcs {
			t := env + "/" + svc
			if schema.ValidateTier(t) != nil {
				continue
			}
			base := prefix + "/" + t + "/"
			d := tierListTimeout(timeout)
			var keys []string
			var index uint64
			var err error
			// Slow twice in a row, not once: one request may stall for reasons of its own.
			for range 2 {
				tctx, cancel := context.WithTimeout(ctx, d)
				keys, index, err = listKeys(tctx, kv, base, "", q)
				cancel()
				if err == nil || ctx.Err() != nil || !errors.Is(tctx.Err(), context.DeadlineExceeded) {
					break
				}
				err = fmt.Errorf("%w: consul took longer than %s, twice, to list the keys under %s (junk names under it make the listing slow): not read; delete the junk under it",
					ErrTooManyKeys, d, base)
			}
			switch {
			case errors.Is(err, answercap.ErrTooLarge):
				listed[t] = &tierList{junk: &junkNames{}, over: tooManyNames(base)}
				continue
			case errors.Is(err, ErrTooManyKeys):
				listed[t] = &tierList{junk: &junkNames{}, over: err}
				continue
			case err != nil:
				return nil, err
			}
			for _, k := range keys {
				addKey(listed, prefix, k, index)
			}
		}
	}
	return listed, nil
}

// tierListTimeout bounds the listing of one tier's keys within a read bounded by timeout: a
// quarter of it, at least 2 s, so that one tier whose junk makes Consul slow to list it (see
// listTiers) leaves time for the others, while an ordinary tier's listing, a few
// milliseconds, has ample time on a loaded Consul.
func tierListTimeout(timeout time.Duration) time.Duration {
	return max(timeout/4, 2*time.Second)
}

// listDirs lists the names of the "directories" directly under dir (which ends in "/") that
// are valid names; other names are not tiers' and are ignored.
func listDirs(ctx context.Context, kv KV, dir string, q *api.QueryOptions, timeout time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	keys, _, err := listKeys(ctx, kv, dir, "/", q)
	if errors.Is(err, answercap.ErrTooLarge) {
		return nil, fmt.Errorf("%w: the names directly under %s come to more than the %d MB a listing reads: delete the junk there",
			ErrTooManyKeys, clipKey(dir), listAnswerLimit>>20)
	}
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, k := range keys {
		name, ok := strings.CutSuffix(strings.TrimPrefix(k, dir), "/")
		if ok && schema.ValidateName("tier part", name) == nil {
			dirs = append(dirs, name)
		}
	}
	return dirs, nil
}

// baseOf is the base of the tier key k (under prefix) belongs to: PREFIX/ENV/SERVICE/.
func baseOf(prefix, k string) string {
	parts := strings.SplitN(strings.TrimPrefix(k, prefix+"/"), "/", 3)
	if len(parts) < 3 {
		return k
	}
	return prefix + "/" + parts[0] + "/" + parts[1] + "/"
}

// addKey files key k (from a listing at index) under its tier: a layout key, or a junk name
// if it is too long for any; other keys are ignored.
func addKey(listed map[string]*tierList, prefix, k string, index uint64) {
	parts := strings.SplitN(strings.TrimPrefix(k, prefix+"/"), "/", 3)
	if len(parts) < 3 || len(parts[0]) > schema.MaxNameLen || len(parts[1]) > schema.MaxNameLen || schema.ValidateTier(parts[0]+"/"+parts[1]) != nil {
		return
	}
	rel := parts[2]
	junk := len(rel) > maxRelKeyLen
	if !junk && !tierKey(rel) {
		return
	}
	t := parts[0] + "/" + parts[1]
	l := listed[t]
	if l == nil {
		l = &tierList{junk: &junkNames{}, index: index}
		listed[t] = l
	}
	if junk {
		l.junk.add(k)
		return
	}
	l.keys = append(l.keys, k)
}
