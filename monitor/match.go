package monitor

import (
	"strings"

	"github.com/tierlock/tierlock/lock/schema"
)

// Match reports whether a slot, held by holder and recorded as rec, belongs to a dead host.
// A slot whose value cannot be read comes with only rec.Holder set.
type Match func(holder string, rec schema.Record) bool

// ByInstance matches the slots recorded with instance id, and those held under a name that is
// the instance id itself or starts with it as a label (i-0abc or
// i-0abc.eu-west-1.compute.internal: EC2's resource-based host names), so that slots written
// without --instance-id are found too. An empty id matches nothing.
func ByInstance(id string) Match {
	return func(holder string, rec schema.Record) bool {
		return id != "" && (rec.InstanceID == id || holder == id || strings.HasPrefix(holder, id+"."))
	}
}

// ByHolder matches the slot held by holder. An empty holder matches nothing.
func ByHolder(holder string) Match {
	return func(h string, _ schema.Record) bool { return holder != "" && h == holder }
}

// ByNodes matches the slots whose recorded Consul node is one of nodes, compared without
// regard to case as Consul compares node names. Slots that recorded no node never match.
func ByNodes(nodes []string) Match {
	set := map[string]bool{}
	for _, n := range nodes {
		if n != "" {
			set[strings.ToLower(n)] = true
		}
	}
	return func(_ string, rec schema.Record) bool { return set[strings.ToLower(rec.Node)] }
}
