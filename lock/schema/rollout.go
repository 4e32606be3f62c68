package schema

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	// maxPast is how many superseded revisions the record remembers (for a rollback).
	maxPast = 8
	// maxSchedule bounds the steps of a schedule.
	maxSchedule = 32
)

// Policy is a tier's rollout schedule (rollout_policy).
type Policy struct {
	// Schedule are the steps' sizes, in order; the last repeats, and 0 there is "max" (no
	// limit but max_concurrent). nil: doubling, 1, 2, 4, ...
	Schedule []int
	// Bake is how long after the last success of a step the next one waits.
	Bake time.Duration
	// Failures is how many failures of a revision halt it (at least 1).
	Failures int
	// After is another tier: a revision starts here only once it has completed there.
	After string
}

// DefaultPolicy applies while rollout_policy is absent: doubling, no bake, halt at the first
// failure.
var DefaultPolicy = Policy{Failures: 1}

// ParseSchedule reads a schedule as an operator writes it: "1,2,5,max", or "double" (or "")
// for the default doubling.
func ParseSchedule(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "double" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > maxSchedule {
		return nil, fmt.Errorf("lock: schedule %q has %d steps: at most %d", clip(s), len(parts), maxSchedule)
	}
	out := make([]int, 0, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "max" {
			if i != len(parts)-1 {
				return nil, fmt.Errorf("lock: schedule %q: max must be the last step", clip(s))
			}
			out = append(out, 0)
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > MaxLimit || !isDigits(p) {
			return nil, fmt.Errorf("lock: schedule %q: step %q is neither a positive number nor max", clip(s), clip(p))
		}
		out = append(out, n)
	}
	return out, nil
}

// FormatSchedule writes a schedule as ParseSchedule reads it.
func FormatSchedule(sched []int) string {
	if len(sched) == 0 {
		return "double"
	}
	parts := make([]string, len(sched))
	for i, n := range sched {
		parts[i] = strconv.Itoa(n)
		if n == 0 {
			parts[i] = "max"
		}
	}
	return strings.Join(parts, ",")
}

// Validate checks a policy as an operator gave it.
func (p Policy) Validate() error {
	if p.Failures < 1 || p.Failures > MaxLimit {
		return fmt.Errorf("lock: rollout failures %d: want at least 1", p.Failures)
	}
	if p.Bake < 0 || p.Bake > 30*24*time.Hour {
		return fmt.Errorf("lock: rollout bake %s: want 0 to 720h", p.Bake)
	}
	if p.After != "" {
		if err := ValidateTier(p.After); err != nil {
			return fmt.Errorf("lock: rollout after: %w", err)
		}
	}
	for i, n := range p.Schedule {
		if n < 0 || (n == 0 && i != len(p.Schedule)-1) {
			return fmt.Errorf("lock: schedule %s: max must be the last step", FormatSchedule(p.Schedule))
		}
	}
	return nil
}

// Size is the number of movers step admits; -1: no limit but max_concurrent.
func (p Policy) Size(step int) int {
	if len(p.Schedule) == 0 {
		return 1 << min(step, 30)
	}
	n := p.Schedule[min(step, len(p.Schedule)-1)]
	if n == 0 {
		return -1
	}
	return n
}

// MarshalJSON stores the policy as people read it: "1,2,5,max", "15m0s".
func (p Policy) MarshalJSON() ([]byte, error) {
	return json.Marshal(policyJSON{Schedule: FormatSchedule(p.Schedule), Bake: p.Bake.String(), Failures: p.Failures, After: p.After})
}

// UnmarshalJSON reads a stored policy, checked as Validate checks a new one.
func (p *Policy) UnmarshalJSON(b []byte) error {
	var j policyJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	sched, err := ParseSchedule(j.Schedule)
	if err != nil {
		return err
	}
	bake := time.Duration(0)
	if j.Bake != "" {
		if bake, err = time.ParseDuration(j.Bake); err != nil {
			// Not ParseDuration's own error: it quotes the whole value, unclipped, twice.
			return fmt.Errorf("bake %q: not a duration such as 15m or 1h30m", clip(j.Bake))
		}
	}
	q := Policy{Schedule: sched, Bake: bake, Failures: j.Failures, After: j.After}
	if err := q.Validate(); err != nil {
		return err
	}
	*p = q
	return nil
}

// Rollout states.
const (
	RolloutRolling = "rolling"
	RolloutHalted  = "halted"
)

// Rollout is the tier's rollout record: the revision rolling out and how far it got. It stays
// small at any tier size: counts, the last few failed hosts, the last few revisions.
type Rollout struct {
	Revision string    `json:"revision"`
	State    string    `json:"state"` // RolloutRolling or RolloutHalted
	Since    time.Time `json:"since"` // when its first mover was admitted, an operator set it, or it was resumed
	// Step is the batch open now: 0 is the canary.
	Step int `json:"step"`
	// Admitted counts the movers admitted to Step; every admission moves it, so that
	// concurrent admissions fail each other's check-and-set.
	Admitted int `json:"admitted"`
	// Succeeded counts the movers of Step that succeeded.
	Succeeded   int        `json:"succeeded"`
	LastSuccess *time.Time `json:"last_success,omitempty"`
	// Successes and Failures count every mover's runs of Revision.
	Successes int       `json:"successes"`
	Failures  int       `json:"failures"`
	Failed    []Failure `json:"failed,omitempty"` // the last maxFailedShown, newest last
	// Full: promoted past its schedule (promote --full, or a rollback to a revision that had
	// completed): only max_concurrent limits its movers.
	Full bool `json:"full,omitempty"`
	// AfterOK: the policy's After tier had completed Revision when a mover looked.
	AfterOK  bool       `json:"after_ok,omitempty"`
	HaltedAt *time.Time `json:"halted_at,omitempty"`
	// HaltedBy is "failures" when the failure limit halted it, "operator" for rollout halt.
	HaltedBy string `json:"halted_by,omitempty"`
	// Past are the revisions it superseded, newest first (at most maxPast).
	Past []PastRevision `json:"past,omitempty"`
	// Rollbacks are the last movers (at most maxPast) that asked for a revision a newer one
	// had superseded, restarting its rollout: a rollback, or a host whose checkout is stale
	// (check names them). Kept across supersessions.
	Rollbacks []Rollback `json:"rollbacks,omitempty"`
}

// Rollback is a mover that asked for an older revision than the one rolling out.
type Rollback struct {
	Holder string    `json:"holder"`
	From   string    `json:"from"` // the revision it superseded
	To     string    `json:"to"`   // the older one it asked for
	At     time.Time `json:"at"`
}

// Failure is one failed run of a revision.
type Failure struct {
	Holder    string    `json:"holder"`
	ExitCode  *int      `json:"exit_code,omitempty"`
	Unhealthy bool      `json:"unhealthy,omitempty"` // the command succeeded, its health check did not
	At        time.Time `json:"at"`
}

// PastRevision is a revision a newer one superseded.
type PastRevision struct {
	Revision  string    `json:"revision"`
	State     string    `json:"state"`     // its state when superseded
	Completed bool      `json:"completed"` // every host of the tier had converged on it
	Successes int       `json:"successes"`
	Failures  int       `json:"failures"`
	Until     time.Time `json:"until"`
}

// Halted reports whether the record's revision is halted.
func (r *Rollout) Halted() bool { return r.State == RolloutHalted }

// PastOf is what the record remembers of rev as a superseded revision.
func (r *Rollout) PastOf(rev string) (PastRevision, bool) {
	for _, p := range r.Past {
		if p.Revision == rev {
			return p, true
		}
	}
	return PastRevision{}, false
}

// Clone is r with its slices its own, so that a change does not reach the snapshot's copy.
func (r Rollout) Clone() Rollout {
	r.Failed = slices.Clone(r.Failed)
	r.Past = slices.Clone(r.Past)
	return r
}

// Supersede is the record of a new rollout of rev, which replaces r's revision (remembered in
// Past, with whether it had completed). A rollback to a revision that had completed here
// skips the schedule, as Argo's rollback window does: it is known good.
func (r Rollout) Supersede(rev string, now time.Time, completed bool) Rollout {
	n := Rollout{Revision: rev, State: RolloutRolling, Since: now}
	if p, ok := r.PastOf(rev); ok && p.Completed {
		n.Full = true
	}
	var past []PastRevision
	if r.Revision != "" {
		state := "superseded"
		if r.Halted() {
			state = RolloutHalted
		}
		past = append(past, PastRevision{Revision: r.Revision, State: state, Completed: completed,
			Successes: r.Successes, Failures: r.Failures, Until: now})
	}
	for _, p := range r.Past {
		if p.Revision != rev && len(past) < maxPast {
			past = append(past, p)
		}
	}
	n.Past, n.Rollbacks = past, slices.Clone(r.Rollbacks)
	return n
}

// NoteRollback records a mover that asked for a revision the record remembers as superseded.
func (r *Rollout) NoteRollback(b Rollback) {
	r.Rollbacks = append([]Rollback{b}, r.Rollbacks...)
	r.Rollbacks = r.Rollbacks[:min(len(r.Rollbacks), maxPast)]
}

// ValidateRevision checks a revision's name: 1 to MaxRevision printable ASCII bytes, no
// spaces, so that it can be logged, shown and typed back.
func ValidateRevision(rev string) error {
	if rev == "" || len(rev) > MaxRevision {
		return fmt.Errorf("%w: revision %q: want 1 to %d bytes", ErrInvalidName, clip(rev), MaxRevision)
	}
	for i := 0; i < len(rev); i++ {
		if c := rev[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("%w: revision %q: byte %d is not printable ASCII", ErrInvalidName, clip(rev), i)
		}
	}
	return nil
}

// NoteRollout is the note kind of an operator's rollout change (policy, halt, resume,
// promote, forget).
const NoteRollout = "rollout"

type policyJSON struct {
	Schedule string `json:"schedule"`
	Bake     string `json:"bake"`
	Failures int    `json:"failures"`
	After    string `json:"after,omitempty"`
}

// ParseRollout reads the rollout record.
func ParseRollout(value []byte) (Rollout, error) {
	if len(value) > MaxValueLen {
		return Rollout{}, fmt.Errorf("value is %d bytes, more than %d", len(value), MaxValueLen)
	}
	var r Rollout
	if err := json.Unmarshal(value, &r); err != nil {
		return Rollout{}, fmt.Errorf("not a rollout record: %v", err)
	}
	if r.State == "" && r.Revision == "" {
		r.State = RolloutRolling // nothing rolling out (written so by an older build's forget)
	}
	if r.State != RolloutRolling && r.State != RolloutHalted {
		return Rollout{}, fmt.Errorf("rollout state %q is neither %s nor %s", clip(r.State), RolloutRolling, RolloutHalted)
	}
	if r.Step < 0 || r.Admitted < 0 || r.Succeeded < 0 || r.Successes < 0 || r.Failures < 0 {
		return Rollout{}, fmt.Errorf("rollout record has a negative count")
	}
	if err := ValidateRevision(r.Revision); r.Revision != "" && err != nil {
		return Rollout{}, err
	}
	return r, nil
}
