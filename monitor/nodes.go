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
	Reason string // why, for people: "left the catalog", "serfHealth critical for 1h2m0s", ...
	// Hidden is set when the node is missing from a catalog Consul filtered by ACL: the
	// token lacks node:read on it, so nobody can tell whether it left.
	Hidden bool
}

// JudgeNodes judges the nodes the slots recorded (held) by the catalog: a node missing from it
// has left and is dead; a node whose serfHealth is critical is dead once it has been seen
// critical for at least grace. Consul does not say since when a check is critical, so since
// carries when earlier judgements first saw each node critical; a node seen critical for the
// first time counts from now. JudgeNodes returns one verdict per node (sorted, duplicates
// that differ only in case judged once) and the since to keep: the held nodes still critical.
// Node names are compared without regard to case, as Consul compares them.
func JudgeNodes(held []string, cat Catalog, since map[string]time.Time, now time.Time, grace time.Duration) ([]NodeVerdict, map[string]time.Time) {
	registered, critical := lowerSet(cat.Nodes), lowerSet(cat.Critical)
	remembered := map[string]time.Time{}
	for n, t := range since {
		remembered[strings.ToLower(n)] = t
	}
	next := map[string]time.Time{}
	seen := map[string]bool{}
	var verdicts []NodeVerdict
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
			v.Dead, v.Reason = true, "left the catalog"
		case critical[key]:
			first, ok := remembered[key]
			if !ok {
				first = now
			}
			next[key] = first
			// A time ahead of now (another reaper's clock) counts as now, and is kept.
			critFor := max(now.Sub(first), 0)
			v.Dead = critFor >= grace
			if v.Dead {
				v.Reason = fmt.Sprintf("serfHealth critical for %s (grace %s)", critFor, grace)
			} else {
				v.Reason = fmt.Sprintf("serfHealth critical for %s, within the grace of %s", critFor, grace)
			}
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
