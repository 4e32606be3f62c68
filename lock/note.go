package lock

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/consul/api"
)

// A Note says who changed a tier by hand, from where, when and why. It is written in the same
// transaction as the change it explains, under audit/ in the tier:
//
//	audit/max       the last set-max or disable (enable removes it: the brake is off)
//	audit/release   the last slot an operator freed
//	audit/forget    the last host an operator dropped from the convergence records
//
// so that `status` and `check` can say "prod/web disabled 2h ago by alice on bastion-1:
// incident 4711" instead of leaving the next person to guess. Only the last of each kind is
// kept: the tier's keys stay bounded, and the shell history or the change log has the rest.
type Note struct {
	Action string    `json:"action"`           // "disable", "set-max", "release", "forget"
	Value  string    `json:"value,omitempty"`  // max_concurrent set, or the holder freed/forgotten
	Reason string    `json:"reason,omitempty"` // --reason, as given
	By     string    `json:"by"`               // the person: SUDO_USER, else USER
	Host   string    `json:"host"`             // where the command ran
	At     time.Time `json:"at"`
}

const (
	auditDir = "audit/"
	// MaxReason bounds --reason: a sentence or a ticket, not a document.
	MaxReason = 512
)

// Note kinds: the key under audit/ each operator change writes.
const (
	NoteMax     = "max"
	NoteRelease = "release"
	NoteForget  = "forget"
)

// noteOp is the write of n as audit/<kind>. It is not guarded: notes are last-writer-wins,
// and the change they ride with carries the transaction's checks.
func (s *Semaphore) noteOp(kind string, n *Note) (*api.KVTxnOp, error) {
	if len(n.Reason) > MaxReason {
		return nil, fmt.Errorf("lock: reason of %d bytes: at most %d", len(n.Reason), MaxReason)
	}
	value, err := json.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("lock: encode note: %w", err)
	}
	return &api.KVTxnOp{Verb: api.KVSet, Key: s.base + auditDir + kind, Value: value}, nil
}

// withNote is ops with Options.Note, as action on value, written as audit/<kind>, when there
// is a note to write.
func (s *Semaphore) withNote(ops []*api.KVTxnOp, kind, action, value string) ([]*api.KVTxnOp, error) {
	if s.opts.Note == nil {
		return ops, nil
	}
	n := *s.opts.Note
	n.Action, n.Value = action, value
	op, err := s.noteOp(kind, &n)
	if err != nil {
		return nil, err
	}
	return append(ops, op), nil
}

// parseNote reads an audit/ value. Notes only explain; one that cannot be read is a problem
// to report, never a reason to refuse a run.
func parseNote(value []byte) (Note, error) {
	var n Note
	if err := json.Unmarshal(value, &n); err != nil {
		return Note{}, fmt.Errorf("not a note: %v", err)
	}
	if n.Action == "" || n.At.IsZero() {
		return Note{}, fmt.Errorf("a note without action or time")
	}
	return n, nil
}
