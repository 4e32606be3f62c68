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
	// GrantInEntry says the waiter reads a slot handed to it from its own entry: a write that
	// hands it one rewrites the entry with the record it wrote (Granted), rather than delete
	// it, so the waiter's watch answers with its slot and it needs no look to learn it has
	// one. Hosts that do not know the field hand over by deleting the entry, which the
	// waiter understands too, so it changes no protocol number.
	GrantInEntry bool `json:"grant_in_entry,omitempty"`
	// Granted is the running/ record a hand-over wrote for the waiter (see GrantInEntry): the
	// entry is then no longer a place in line but the news of a slot, and goes with the
	// waiter's session a moment later.
	Granted     *Record `json:"granted,omitempty"`
	Session     string  `json:"-"`
	CreateIndex uint64  `json:"-"`
	ModifyIndex uint64  `json:"-"`
}
