package schema

import (
	"encoding/json"
	"fmt"
	"time"
)

// Convergence is the value of converged/<holder>: the holder's last successful run.
type Convergence struct {
	Holder          string    `json:"holder"`
	ConvergedAt     time.Time `json:"converged_at"`
	RunID           string    `json:"run_id"`
	DurationSeconds float64   `json:"duration_seconds"`
	InstanceID      string    `json:"instance_id"`
	// Node is the Consul node the run talked to, so that the catalog reaper finds the record
	// of a dead node that held no slot when it died.
	Node string `json:"node,omitempty"`
	// Revision is the revision the run applied ("" when it named none).
	Revision string `json:"revision,omitempty"`
}

// Record is the convergence as Evict's match sees it: what the record says of its holder,
// and StartedAt its convergence time.
func (c Convergence) Record() Record {
	return Record{Holder: c.Holder, RunID: c.RunID, InstanceID: c.InstanceID, Node: c.Node, StartedAt: c.ConvergedAt}
}

// ParseConvergence decodes the value stored at converged/<holder>. A record that names another
// holder, or has no time, is refused: it would rank its host wrongly.
func ParseConvergence(holder string, value []byte) (Convergence, error) {
	if len(value) > MaxValueLen {
		return Convergence{}, fmt.Errorf("value is %d bytes, more than %d", len(value), MaxValueLen)
	}
	var c Convergence
	if err := json.Unmarshal(value, &c); err != nil {
		return Convergence{}, fmt.Errorf("not a convergence record: %w", err)
	}
	if c.Holder != "" && c.Holder != holder {
		return Convergence{}, fmt.Errorf("record names holder %q, not %q", c.Holder, holder)
	}
	if c.ConvergedAt.IsZero() {
		return Convergence{}, fmt.Errorf("record has no converged_at")
	}
	c.Holder = holder
	return c, nil
}
