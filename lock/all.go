package lock

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/consul/api"
)

// ReadAll reads every tier under opts.Prefix in one consistent request and returns their
// snapshots sorted by tier. A tier is any ENV/SERVICE with at least one of its keys stored;
// keys that fit no tier's layout are ignored. opts.Tier is not used.
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
	pairs, meta, err := kv.List(prefix+"/", (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("lock: read %s/: %w", prefix, err)
	}
	if err := filtered(meta, prefix+"/"); err != nil {
		return nil, err
	}
	byTier := map[string]api.KVPairs{}
	for _, p := range pairs {
		parts := strings.SplitN(strings.TrimPrefix(p.Key, prefix+"/"), "/", 3)
		if len(parts) < 3 || ValidateTier(parts[0]+"/"+parts[1]) != nil || !tierKey(parts[2]) {
			continue
		}
		t := parts[0] + "/" + parts[1]
		byTier[t] = append(byTier[t], p)
	}
	tiers := make([]string, 0, len(byTier))
	for t := range byTier {
		tiers = append(tiers, t)
	}
	sort.Strings(tiers)
	out := make([]*Snapshot, 0, len(tiers))
	for _, t := range tiers {
		out = append(out, newSnapshot(t, opts.DefaultMax, opts.QueueOrder, byTier[t], prefix+"/"+t+"/", meta.LastIndex))
	}
	return out, nil
}

// tierKey reports whether rel (a key relative to a tier) belongs to the tier layout.
func tierKey(rel string) bool {
	return rel == keyMax || rel == keyCurrent || rel == keySaved ||
		strings.HasPrefix(rel, runningDir) || strings.HasPrefix(rel, queueDir) || strings.HasPrefix(rel, convergedDir)
}
