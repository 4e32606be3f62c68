package schema

import (
	"encoding/json"
	"fmt"
	"time"
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
	Action string    `json:"action"`           // "disable", "set-max", "enable", "release", "forget"
	Value  string    `json:"value,omitempty"`  // max_concurrent set, or the holder freed/forgotten
	Reason string    `json:"reason,omitempty"` // --reason, as given
	By     string    `json:"by"`               // the person (see cmd/tierlock's operatorName)
	Host   string    `json:"host"`             // where the command ran
	At     time.Time `json:"at"`
	// UID is the real uid the command ran as; nil in notes of older versions.
	UID *int `json:"uid,omitempty"`
	// Token is the Consul ACL token the change was made with, as Consul describes it (its
	// AccessorID, never the secret, and its Description), when ACLs are on: unlike By,
	// which a person's environment may say, Consul vouches for it.
	Token *TokenInfo `json:"token,omitempty"`
	// Earlier are the notes before this one, newest first, in audit/history only (at most
	// MaxHistory - 1 of them, without their own Earlier).
	Earlier []Note `json:"earlier,omitempty"`
}

// TokenInfo names an ACL token without its secret.
type TokenInfo struct {
	AccessorID  string `json:"accessor_id"`
	Description string `json:"description,omitempty"`
}

// Note kinds: the key under audit/ each operator change writes.
const (
	NoteMax     = "max"
	NoteRelease = "release"
	NoteForget  = "forget"
	// NoteHistory is every operator change, the last MaxHistory of them: the newest as the
	// note itself, the ones before in its Earlier. It keeps what audit/max forgets when
	// enable takes the brake off: who released it, and who had pulled it. Older versions
	// read it as a note of a kind they do not know, and leave it be.
	NoteHistory = "history"
)

// MaxHistory bounds audit/history: with MaxReason, its value stays under 16 KiB.
const MaxHistory = 16

// EncodeNote is n as stored under audit/, its reason checked against MaxReason.
func EncodeNote(n *Note) ([]byte, error) {
	if len(n.Reason) > MaxReason {
		return nil, fmt.Errorf("lock: reason of %d bytes: at most %d", len(n.Reason), MaxReason)
	}
	value, err := json.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("lock: encode note: %w", err)
	}
	return value, nil
}

// ParseNote reads an audit/ value. Notes only explain; one that cannot be read is a problem
// to report, never a reason to refuse a run.
func ParseNote(value []byte) (Note, error) {
	var n Note
	if err := json.Unmarshal(value, &n); err != nil {
		return Note{}, fmt.Errorf("not a note: %v", err)
	}
	if n.Action == "" || n.At.IsZero() {
		return Note{}, fmt.Errorf("a note without action or time")
	}
	return n, nil
}
