package schema

import (
	"encoding/json"
	"fmt"
	"time"
)

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

// LineHead is the head of a tier's line as a release last read it whole (key line_head): the
// first waiters in rank order, each as its entry was, so that the next releases hand their
// slots over from it without reading the line, which grows with the fleet. Its promise is
// Bound: every waiter it does not list ranks after Bound. Releases keep it (in tiers of at most
// 16 slots they remove the waiters they hand slots to, with check-and-set on it; in wider ones
// they leave them listed, and check which are still waiting); a waiter that joins ranking before
// Bound deletes it; a release that cannot serve from it reads the line and writes it anew.
// A grant from it is check-and-set on the waiter's entry as listed, so a listed waiter that
// left or changed fails the grant, and the release reads the line instead.
type LineHead struct {
	// Order is the queue order it was ranked in ("converged", "arrival"): a host of
	// another order does not use it.
	Order   string       `json:"order"`
	Waiters []HeadWaiter `json:"waiters"`
	Bound   HeadRank     `json:"bound"`
}

// HeadWaiter is a listed waiter: its entry's JSON fields, and the entry's session and indexes
// as read.
type HeadWaiter struct {
	Waiter
	EntrySession string `json:"session"`
	Created      uint64 `json:"create_index"`
	Modified     uint64 `json:"modify_index"`
}

// HeadRank is what ranks a waiter: its convergence (nil: never), arrival and name.
type HeadRank struct {
	ConvergedAt *time.Time `json:"converged_at"`
	CreateIndex uint64     `json:"create_index"`
	Holder      string     `json:"holder"`
}

// MaxHeadWaiters bounds the waiters a LineHead lists: as many as a transaction may check
// (Consul's 128 operations; a release in a tier of more than 16 slots checks every waiter
// listed). Hosts of the round before read at most 64, and ignore a longer head.
const MaxHeadWaiters = 128

// ParseLineHead reads a stored line_head. A value that is not one, or lists invalid names, is
// an error: the head is then not used (the line is read), and the next release replaces it.
func ParseLineHead(value []byte) (LineHead, error) {
	if len(value) > MaxValueLen {
		return LineHead{}, fmt.Errorf("value is %d bytes, more than %d", len(value), MaxValueLen)
	}
	var h LineHead
	if err := json.Unmarshal(value, &h); err != nil {
		return LineHead{}, fmt.Errorf("not a line head (%d bytes, not its JSON)", len(value))
	}
	if len(h.Waiters) > MaxHeadWaiters {
		return LineHead{}, fmt.Errorf("lists %d waiters, more than %d", len(h.Waiters), MaxHeadWaiters)
	}
	for i, w := range h.Waiters {
		if err := ValidateName("head waiter", w.Holder); err != nil {
			return LineHead{}, err
		}
		if w.RunID == "" || w.EntrySession == "" || w.Modified == 0 {
			return LineHead{}, fmt.Errorf("waiter %d (%s) lacks its run, session or index", i, w.Holder)
		}
		h.Waiters[i].Session, h.Waiters[i].CreateIndex, h.Waiters[i].ModifyIndex = w.EntrySession, w.Created, w.Modified
	}
	return h, nil
}

// HeadWaiterOf is w, as a LineHead lists it.
func HeadWaiterOf(w Waiter) HeadWaiter {
	return HeadWaiter{Waiter: w, EntrySession: w.Session, Created: w.CreateIndex, Modified: w.ModifyIndex}
}
