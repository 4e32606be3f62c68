package lock

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/consul/api"
)

// ReadAll reads every tier under opts.Prefix and returns their snapshots sorted by tier. A
// tier is any ENV/SERVICE with at least one of its layout keys stored; keys that fit no
// tier's layout are ignored, and their values are never fetched. Each tier is consistent in
// itself (see read.go). A tier with more than MaxTierKeys keys is returned unread, with the
// cap in its Problems, so that one junk-filled tier does not hide the others; a prefix with
// more than MaxListKeys keys is an error wrapping ErrTooManyKeys. opts.Tier is not used.
func ReadAll(ctx context.Context, kv KV, opts Options) ([]*Snapshot, error) {
	prefix := strings.Trim(opts.Prefix, "/")
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if err := ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	timeout := opts.RequestTimeout
	if timeout <= 0 {
		timeout = DefaultRequestTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	all, index, err := listKeys(ctx, kv, prefix+"/", &api.QueryOptions{RequireConsistent: true})
	if err != nil {
		return nil, err
	}
	if len(all) > MaxListKeys {
		return nil, fmt.Errorf("%w: %s/ has %d keys, more than the cap of %d one listing reads (lock.MaxListKeys)",
			ErrTooManyKeys, prefix, len(all), MaxListKeys)
	}
	byTier := map[string][]string{}
	for _, k := range all {
		parts := strings.SplitN(strings.TrimPrefix(k, prefix+"/"), "/", 3)
		if len(parts) < 3 || ValidateTier(parts[0]+"/"+parts[1]) != nil || !tierKey(parts[2]) {
			continue
		}
		t := parts[0] + "/" + parts[1]
		byTier[t] = append(byTier[t], k)
	}
	all = nil
	tiers := make([]string, 0, len(byTier))
	var wanted []string
	for t, keys := range byTier {
		tiers = append(tiers, t)
		if len(keys) <= MaxTierKeys {
			sort.Strings(keys)
			wanted = append(wanted, keys...)
		}
	}
	sort.Strings(tiers)
	sort.Strings(wanted)
	// One pass fetches the values of every tier, batched across tiers; a tier that changed
	// since the listing is read again on its own.
	got, gone, err := fetch(ctx, kv, wanted, opts.ReadBatch)
	if err != nil {
		return nil, err
	}
	out := make([]*Snapshot, 0, len(tiers))
	for _, t := range tiers {
		base := prefix + "/" + t + "/"
		keys := byTier[t]
		var snap *Snapshot
		switch {
		case len(keys) > MaxTierKeys:
			snap = newSnapshot(t, opts.DefaultMax, opts.QueueOrder, nil, base)
			snap.Problems = append(snap.Problems, tooManyKeys(base, len(keys)))
		case current(keys, got, gone, index):
			snap = newSnapshot(t, opts.DefaultMax, opts.QueueOrder, pairsOf(keys, got), base)
		default:
			snap, err = readTier(ctx, kv, t, opts.DefaultMax, opts.QueueOrder, opts.ReadBatch, base, &api.QueryOptions{RequireConsistent: true}, nil)
			if errors.Is(err, ErrTooManyKeys) {
				snap = newSnapshot(t, opts.DefaultMax, opts.QueueOrder, nil, base)
				snap.Problems, err = append(snap.Problems, err), nil
			}
			if err != nil {
				return nil, err
			}
		}
		out = append(out, snap)
	}
	return out, nil
}
