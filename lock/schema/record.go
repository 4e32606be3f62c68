package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// State is what a slot's holder is doing.
type State string

// The states of a held slot.
const (
	StateRunning     State = "running"     // the command runs, or a run crashed without saying
	StateFailed      State = "failed"      // the command exited with a code not counted as success
	StateInterrupted State = "interrupted" // the command was stopped by a signal or the timeout
)

func (s State) valid() bool {
	return s == StateRunning || s == StateFailed || s == StateInterrupted
}

// Record is the value of running/<holder>.
type Record struct {
	Holder     string    `json:"holder"`
	Hostname   string    `json:"hostname"`
	InstanceID string    `json:"instance_id"`
	Node       string    `json:"node"` // the Consul node of the agent the run talked to; "" if unknown
	PID        int       `json:"pid"`
	State      State     `json:"state"`
	StartedAt  time.Time `json:"started_at"` // start of the current attempt
	UpdatedAt  time.Time `json:"updated_at"` // last change of State
	ExitCode   *int      `json:"exit_code"`  // set when State is failed (and interrupted, if known)
	Attempts   int       `json:"attempts"`   // runs made while holding this slot, 1 for the first
	Command    string    `json:"command"`
	RunID      string    `json:"run_id"`
	Version    string    `json:"version"`
	// Protocol is the waiting protocol its writer speaks (see Protocol); 0 in records of
	// versions before it was written down.
	Protocol int `json:"protocol,omitempty"`
	// Revision is the configuration revision the run applies ("" when it named none); Batch
	// is the rollout step that admitted it, set only for a mover (see rollout.go).
	Revision string `json:"revision,omitempty"`
	Batch    *int   `json:"batch,omitempty"`
	// Unhealthy: the command succeeded but its health check did not pass (State is failed,
	// which every version reads; status and check show "unhealthy").
	Unhealthy bool `json:"unhealthy,omitempty"`
}

// Shown is the state as operators read it: failed slots whose command succeeded but whose
// health check did not are "unhealthy".
func (r Record) Shown() string {
	if r.State == StateFailed && r.Unhealthy {
		return "unhealthy"
	}
	return string(r.State)
}

// Protocol is the version of the waiting protocol this tierlock speaks: what a queue entry
// means, who hands a freed slot to whom, and what a waiter watches. docs/keys.md says what
// each version may assume of the others. Entries and records without the field are of
// protocol 2 or older:
//
//	1  the first release: a waiter watched the entry ranked ahead of it (or current), and a
//	   release only freed its slot.
//	2  the write that frees a slot hands it to the head of the line in the same transaction
//	   (its entry deleted, its running/ record written from the entry); each waiter watches
//	   its own entry; a write that leaves a slot free rewrites the next waiter's entry (nudge).
//	3  a mover of a progressive rollout (rollout.go) is handed a slot only as the tier's
//	   rollout admits it, and the write that admits it rewrites the rollout record. Only the
//	   entries and records of movers carry 3; everything else is still 2, so a protocol-2 host
//	   keeps handing slots to hosts that apply no rollout, and leaves movers alone.
//
// It changes only when an older host's hand-over would be wrong for a newer entry: fields
// added to a record or an entry do not change it.
const Protocol = 3

// MaxValueLen bounds what we accept from a stored value; a record is a few hundred bytes.
const MaxValueLen = 64 << 10

// ParseRecord decodes the value stored at running/<holder>. Besides JSON records it accepts a
// bare timestamp (RFC 3339 or Unix seconds), as older shell tooling wrote, read as a running
// slot started then.
func ParseRecord(holder string, value []byte) (Record, error) {
	if len(value) > MaxValueLen {
		return Record{}, fmt.Errorf("value is %d bytes, more than %d", len(value), MaxValueLen)
	}
	if !utf8.Valid(value) {
		return Record{}, fmt.Errorf("value is not valid UTF-8")
	}
	trimmed := bytes.TrimSpace(value)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		return parseJSONRecord(holder, trimmed)
	}
	started, err := parseTimestamp(string(trimmed))
	if err != nil {
		return Record{}, err
	}
	return Record{Holder: holder, State: StateRunning, StartedAt: started, UpdatedAt: started}, nil
}

func parseJSONRecord(holder string, value []byte) (Record, error) {
	var r Record
	dec := json.NewDecoder(bytes.NewReader(value))
	if err := dec.Decode(&r); err != nil {
		return Record{}, fmt.Errorf("not a JSON record: %v", err)
	}
	if dec.More() {
		return Record{}, fmt.Errorf("trailing data after the JSON record")
	}
	switch {
	case r.Holder == "":
		r.Holder = holder
	case r.Holder != holder:
		return Record{}, fmt.Errorf("record names holder %q, key names %q", clip(r.Holder), clip(holder))
	}
	if !r.State.valid() {
		return Record{}, fmt.Errorf("state %q is not running, failed or interrupted", clip(string(r.State)))
	}
	if r.StartedAt.IsZero() {
		return Record{}, fmt.Errorf("started_at is missing")
	}
	if r.UpdatedAt.IsZero() {
		r.UpdatedAt = r.StartedAt
	}
	if r.Attempts < 0 {
		return Record{}, fmt.Errorf("attempts %d is negative", r.Attempts)
	}
	return r, nil
}

func parseTimestamp(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, fmt.Errorf("value is empty")
	}
	if isDigits(s) {
		secs, err := strconv.ParseInt(s, 10, 64)
		// 1e11 seconds is the year 5138: anything larger is a mistake (milliseconds, say).
		if err != nil || secs > 1e11 {
			return time.Time{}, fmt.Errorf("%q is not a plausible Unix time in seconds", s)
		}
		return time.Unix(secs, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a JSON record nor a timestamp (RFC 3339 or Unix seconds)", clip(s))
	}
	return t, nil
}

// MaxLimit bounds max_concurrent and current: no tier has a billion hosts, and a bound keeps
// arithmetic on them safe.
const MaxLimit = 1 << 30

// ParseMax decodes max_concurrent: an integer ≥ -1. Surrounding whitespace is ignored, so a
// value written with `echo 2 | consul kv put KEY -` is read as 2.
func ParseMax(value []byte) (int, error) {
	n, err := parseInt(value)
	if err != nil {
		return 0, err
	}
	if n < -1 {
		return 0, fmt.Errorf("%d is below -1 (-1 unlimited, 0 disabled, N at most N)", n)
	}
	return n, nil
}

// ParseCurrent decodes current: an integer ≥ 0.
func ParseCurrent(value []byte) (int, error) {
	n, err := parseInt(value)
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, fmt.Errorf("%d is negative", n)
	}
	return n, nil
}

func parseInt(value []byte) (int, error) {
	s := strings.TrimSpace(string(value))
	digits := strings.TrimPrefix(s, "-")
	if !isDigits(digits) {
		return 0, fmt.Errorf("%q is not an integer", clip(string(value)))
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > MaxLimit || n < -MaxLimit {
		return 0, fmt.Errorf("%q is out of range", clip(s))
	}
	return n, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
