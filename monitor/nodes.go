package monitor

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Catalog is what Consul's catalog said, at one moment, about the nodes that hold slots.
type Catalog struct {
	// Nodes are the nodes registered in the catalog.
	Nodes []string
	// Critical are the nodes whose serfHealth check is critical.
	Critical []string
	// Filtered is true when Consul left nodes out because the token may not read them: a
	// node missing from such a catalog may be alive, so none is judged to have left.
	Filtered bool
}

// NodeVerdict is the judgement of one node that holds slots.
type NodeVerdict struct {
	Node   string // as a slot recorded it
	Dead   bool   // its slots are to be freed
	Reason string // why, for people: "not in the catalog for 1h2m0s (grace 1h0m0s)", "alive", ...
	// Hidden is set when the node is missing from a catalog Consul filtered by ACL: the
	// token lacks node:read on it, so nobody can tell whether it left.
	Hidden bool
}

// JudgeNodes judges the nodes the slots recorded (held) by the catalog: a node missing from
// it (it left, or was reaped) or whose serfHealth is critical is dead once it has been seen
// so for at least grace. A node missing from the catalog gets the same grace as a failing
// one: a host whose agent was renamed, or that left and joins again, is alive while its
// record still names the node it had, and freeing its slot at once would lift a failed run's
// brake. Consul does not say since when a check is critical or a node gone, so since carries
// when earlier judgements first saw each node missing or critical (one time for both: a node
// that fails, then leaves, counts from the failure); a node first seen so counts from now.
// JudgeNodes returns one verdict per node (sorted, duplicates that differ only in case
// judged once) and the since to keep: the held nodes still missing or critical. Node names
// are compared without regard to case, as Consul compares them.
func JudgeNodes(held []string, cat Catalog, since map[string]time.Time, now time.Time, grace time.Duration) ([]NodeVerdict, map[string]time.Time) {
	registered, critical := lowerSet(cat.Nodes), lowerSet(cat.Critical)
	remembered := map[string]time.Time{}
	for n, t := range since {
		remembered[strings.ToLower(n)] = t
	}
	next := map[string]time.Time{}
	seen := map[string]bool{}
	var verdicts []NodeVerdict
	// sick judges a node seen missing or critical (what says which) against the grace.
	sick := func(v *NodeVerdict, key, what string) {
		first, ok := remembered[key]
		if !ok {
			first = now
		}
		next[key] = first
		// A time ahead of now (another reaper's clock) counts as now, and is kept.
		d := max(now.Sub(first), 0)
		v.Dead = d >= grace
		if v.Dead {
			v.Reason = fmt.Sprintf("%s for %s (grace %s)", what, d, grace)
		} else {
			v.Reason = fmt.Sprintf("%s for %s, within the grace of %s", what, d, grace)
		}
	}
	for _, node := range held {
		key := strings.ToLower(node)
		if node == "" || seen[key] {
			continue
		}
		seen[key] = true
		v := NodeVerdict{Node: node}
		switch {
		case !registered[key] && cat.Filtered:
			v.Hidden = true
			v.Reason = "not in the catalog, which Consul filtered by ACL (the token lacks permission 'node:read'): cannot tell whether it left"
		case !registered[key]:
			sick(&v, key, "not in the catalog")
		case critical[key]:
			sick(&v, key, "serfHealth critical")
		default:
			v.Reason = "alive"
		}
		verdicts = append(verdicts, v)
	}
	slices.SortFunc(verdicts, func(a, b NodeVerdict) int { return strings.Compare(a.Node, b.Node) })
	return verdicts, next
}

func lowerSet(names []string) map[string]bool {
	set := make(map[string]bool, len(names))
	for _, n := range names {
		set[strings.ToLower(n)] = true
	}
	return set
}
