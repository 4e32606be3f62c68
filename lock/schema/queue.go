package schema

import "time"

// Waiter is one queue/ entry.
type Waiter struct {
	Holder     string    `json:"holder"`
	RunID      string    `json:"run_id"`
	InstanceID string    `json:"instance_id,omitempty"` // as in the Record the waiter will write,
	Node       string    `json:"node,omitempty"`        // so the reaper can find its entry too
	Since      time.Time `json:"since"`
	// The rest of the record the waiter asked to write: a write that hands it a slot writes
	// its running/ record from the entry (see grants).
	Hostname string `json:"hostname,omitempty"`
	PID      int    `json:"pid,omitempty"`
	Command  string `json:"command,omitempty"`
	Version  string `json:"version,omitempty"`
	// Protocol is the waiting protocol the waiter speaks (0: 2 or older; see Protocol).
	Protocol int `json:"protocol,omitempty"`
	// Revision is the revision the waiter's run applies; Mover that the rollout limits it.
	Revision string `json:"revision,omitempty"`
	Mover    bool   `json:"mover,omitempty"`
	// ConvergedAt is the holder's last convergence when it joined (nil: never), which ranks it.
	ConvergedAt *time.Time `json:"converged_at"`
	Session     string     `json:"-"`
	CreateIndex uint64     `json:"-"`
	ModifyIndex uint64     `json:"-"`
}
