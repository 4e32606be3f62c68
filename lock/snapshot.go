package lock

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/lock/schema"
)

// Snapshot is one consistent read of a tier. It is plain data: the decisions below do no I/O.
type Snapshot struct {
	Tier     string
	Max      int                      // effective max_concurrent (the default when MaxSet is false)
	MaxSet   bool                     // max_concurrent is stored
	Current  int                      // the stored current (0 when absent)
	Saved    int                      // max_saved: the value `disable` replaced, for `enable`
	SavedSet bool                     // max_saved is stored
	Holders  map[string]schema.Record // running/<holder>, by holder (readable ones)
	// RunningKeys is the number of running/ keys, readable or not: what current must equal.
	RunningKeys int
	// Queue is who waits for a slot, in the order they rank (Order).
	Queue []schema.Waiter
	// Order is how Queue is ranked.
	Order QueueOrder
	// Converged is every readable converged/<holder> record, by holder: the hosts known to
	// have converged under tierlock, and when they last did.
	Converged map[string]schema.Convergence
	// BadConverged lists converged/ records that cannot be read. They never stop a run (their
	// hosts rank as never converged); forget and reap still remove them.
	BadConverged []error
	Problems     []error // invalid stored values; Acquire refuses to act on them
	// Suspect are stored keys that are ignored or doubtful but stop nothing: queue entries
	// without a session or with a name no holder can have (left out of Queue), a junk
	// max_saved, running/ keys bound to a session. check reports them as WARNING.
	Suspect []error
	// Notes are the last operator changes by kind (NoteMax, NoteRelease, NoteForget): who,
	// where, when and why. NoteProblems are audit/ values that cannot be read; unlike
	// Problems they never stop a run.
	Notes        map[string]schema.Note
	NoteProblems []error
	// Rollout is the tier's rollout record (zero when none) and Policy its schedule
	// (DefaultPolicy when none is stored); see rollout.go. A record or policy that cannot be
	// read is in Suspect, and stops movers alone (ErrInvalidConfig).
	Rollout schema.Rollout
	Policy  schema.Policy
	// rolloutErr is why the rollout record or policy cannot be read.
	rolloutErr error
	// now is the time the decisions below are made at (bake), set by the reader.
	now time.Time
	// whole: every key of the tier was read, the other hosts' convergence records too.
	whole bool
	// afterDone: the tier Policy.After names has completed Rollout's next revision (set by
	// Acquire, which looked).
	afterDone bool
	// partialQueue: Queue holds only the reader's own entry (see applyAndRead); a decision
	// on free slots needs the whole of it.
	partialQueue bool
	// bounded: read the bounded way (listing, then batches), the one-request read's answer
	// having been too large.
	bounded bool
	modify  map[string]uint64 // key (relative to the tier) -> ModifyIndex, for check-and-set
	// granted are the queue entries a hand-over rewrote with the slot it wrote
	// (schema.Waiter.Granted), by holder, with their ModifyIndex: no place in line, but news
	// its waiter reads and then removes with its session. The holder's next write of its slot
	// deletes one still there, so that an older host, which would take it for a waiter once
	// the slot is free, never hands it another.
	granted map[string]uint64
	// head is the head of the line as a release last read it (line_head, see head.go), nil
	// when there is none or it cannot be read.
	head       *schema.LineHead
	badHolders map[string]bool // running/ keys whose value did not parse
	badCurrent bool            // current is stored but not a count
	badSaved   bool            // max_saved is stored but not a value of max_concurrent
}

// Disabled reports whether no run may start in the tier: max_concurrent is 0, stored (set by
// disable) or, for a run whose --default-max is 0, by default. Every "is the tier disabled"
// asks this; only the operator's writes, which care whether a 0 is stored, look at MaxSet too.
func (s *Snapshot) Disabled() bool { return s.Max == 0 }

// Exists reports whether the tier has any key stored.
func (s *Snapshot) Exists() bool { return len(s.modify) > 0 }

// Held is how many slots are taken. When current and the running/ keys disagree, the larger
// wins, so a drifted counter never admits more than max_concurrent.
func (s *Snapshot) Held() int {
	return max(s.Current, s.RunningKeys)
}

// Drift reports whether current differs from the number of running/ keys.
func (s *Snapshot) Drift() bool {
	return s.Current != s.RunningKeys
}

// Err returns the tier's invalid stored values as one error wrapping ErrInvalidConfig.
func (s *Snapshot) Err() error {
	if len(s.Problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(s.Problems...))
}

// Unreadable lists, sorted, the holders whose running/ values cannot be read (they are in
// Problems, not in Holders). Their slots still count as held.
func (s *Snapshot) Unreadable() []string {
	hs := make([]string, 0, len(s.badHolders))
	for h := range s.badHolders {
		hs = append(hs, h)
	}
	sort.Strings(hs)
	return hs
}

// runningKeys lists the running/ keys (relative to the tier), sorted.
func (s *Snapshot) runningKeys() []string {
	var keys []string
	for k := range s.modify {
		if strings.HasPrefix(k, runningDir) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

const (
	keyMax     = "max_concurrent"
	keyCurrent = "current"
	keySaved   = "max_saved"
	runningDir = "running/"
	queueDir   = "queue/"
	// convergedDir holds each host's last successful run.
	convergedDir = "converged/"
	// keyHead is the head of the line as a release last read it (see head.go).
	keyHead = "line_head"
)

// newSnapshot parses the pairs listed under the tier's prefix (keys relative to it).
func newSnapshot(tier string, defaultMax int, order QueueOrder, pairs api.KVPairs, base string) *Snapshot {
	s := &Snapshot{
		Tier:       tier,
		Max:        defaultMax,
		Holders:    map[string]schema.Record{},
		Converged:  map[string]schema.Convergence{},
		modify:     map[string]uint64{},
		badHolders: map[string]bool{},
		Policy:     schema.DefaultPolicy,
		now:        time.Now().UTC(),
	}
	for _, p := range pairs {
		s.add(strings.TrimPrefix(p.Key, base), p)
	}
	s.rank(order)
	return s
}

// add reads one stored key of the tier (rel, relative to it) into the snapshot.
func (s *Snapshot) add(rel string, p *api.KVPair) {
	switch {
	case rel == keyMax:
		s.addMax(rel, p)
	case rel == keyCurrent:
		s.addCurrent(rel, p)
	case rel == keySaved:
		s.addSaved(rel, p)
	case rel == keyRollout:
		s.addRollout(rel, p)
	case rel == keyPolicy:
		s.addPolicy(rel, p)
	case rel == keyHead:
		s.addHead(rel, p)
	case strings.HasPrefix(rel, auditDir):
		s.addNote(rel, p)
	case strings.HasPrefix(rel, queueDir):
		s.addWaiter(rel, p)
	case strings.HasPrefix(rel, convergedDir):
		s.addConvergence(rel, p)
	case strings.HasPrefix(rel, runningDir):
		s.addHolder(rel, p)
	}
}

// addMax reads max_concurrent.
func (s *Snapshot) addMax(rel string, p *api.KVPair) {
	s.modify[rel] = p.ModifyIndex
	n, err := schema.ParseMax(p.Value)
	if err != nil {
		s.Problems = append(s.Problems, fmt.Errorf("%s: %v", p.Key, err))
		return
	}
	s.Max, s.MaxSet = n, true
}

// addCurrent reads current.
func (s *Snapshot) addCurrent(rel string, p *api.KVPair) {
	s.modify[rel] = p.ModifyIndex
	n, err := schema.ParseCurrent(p.Value)
	if err != nil {
		s.badCurrent = true
		s.Problems = append(s.Problems, fmt.Errorf("%s: %v", p.Key, err))
		return
	}
	s.Current = n
}

// addSaved reads max_saved.
func (s *Snapshot) addSaved(rel string, p *api.KVPair) {
	// Only enable reads max_saved: junk there must not stop the runs (it did: every
	// run exited 78). Enable without a value refuses it; check warns.
	s.modify[rel] = p.ModifyIndex
	n, err := schema.ParseMax(p.Value)
	if err != nil {
		s.badSaved = true
		s.Suspect = append(s.Suspect, fmt.Errorf("%s: %v (enable needs a value until it is replaced)", p.Key, err))
		return
	}
	s.Saved, s.SavedSet = n, true
}

// addRollout reads the rollout record.
func (s *Snapshot) addRollout(rel string, p *api.KVPair) {
	s.modify[rel] = p.ModifyIndex
	r, err := schema.ParseRollout(p.Value)
	if err != nil {
		s.rolloutErr = fmt.Errorf("%s: %v", p.Key, err)
		s.Suspect = append(s.Suspect, fmt.Errorf("%v (movers exit 78 until it is fixed: `tierlock rollout forget`)", s.rolloutErr))
		return
	}
	s.Rollout = r
}

// addPolicy reads rollout_policy.
func (s *Snapshot) addPolicy(rel string, p *api.KVPair) {
	s.modify[rel] = p.ModifyIndex
	var pol schema.Policy
	if err := json.Unmarshal(p.Value, &pol); err != nil {
		s.rolloutErr = fmt.Errorf("%s: %v", p.Key, err)
		s.Suspect = append(s.Suspect, fmt.Errorf("%v (movers exit 78 until it is fixed: `tierlock rollout policy`)", s.rolloutErr))
		return
	}
	s.Policy = pol
}

// addNote reads an operator's note under audit/.
func (s *Snapshot) addNote(rel string, p *api.KVPair) {
	n, err := schema.ParseNote(p.Value)
	if err != nil {
		s.NoteProblems = append(s.NoteProblems, fmt.Errorf("%s: %v", p.Key, err))
		return
	}
	if s.Notes == nil {
		s.Notes = map[string]schema.Note{}
	}
	s.Notes[strings.TrimPrefix(rel, auditDir)] = n
	if rel == auditDir+schema.NoteHistory {
		s.modify[rel] = p.ModifyIndex // for withNote's check-and-set
	}
}

// addWaiter reads a queue entry.
func (s *Snapshot) addWaiter(rel string, p *api.KVPair) {
	// A waiter's name is checked like a holder's: whoever wrote an invalid one is not
	// tierlock, and its name is reported (quoted), never taken as a waiter. Nor is an
	// entry without a session: tierlock binds every entry to its waiter's session,
	// which deletes it when the waiter dies, so an unbound one waits for nobody and,
	// ranked, would stop the tier for ever. Neither stops the runs: the queue is
	// only an order, so leaving an entry out of it is safe.
	holder := strings.TrimPrefix(rel, queueDir)
	if err := schema.ValidateName("queue holder", holder); err != nil {
		s.Suspect = append(s.Suspect, fmt.Errorf("%s: %v; ignored", p.Key, err))
		return
	}
	if p.Session == "" {
		s.Suspect = append(s.Suspect, fmt.Errorf("%s: queue entry without a session (not written by tierlock, or its session's behaviour is release); ignored, delete it", p.Key))
		return
	}
	w, err := parseWaiter(holder, p)
	if err != nil {
		s.Suspect = append(s.Suspect, fmt.Errorf("%s: %v; ignored, delete it", p.Key, err))
		return
	}
	if w.Granted != nil {
		if s.granted == nil {
			s.granted = map[string]uint64{}
		}
		s.granted[holder] = p.ModifyIndex
		return
	}
	s.Queue = append(s.Queue, w)
}

// addConvergence reads a converged/ record.
func (s *Snapshot) addConvergence(rel string, p *api.KVPair) {
	s.modify[rel] = p.ModifyIndex
	holder := strings.TrimPrefix(rel, convergedDir)
	if err := schema.ValidateName("holder", holder); err != nil {
		s.BadConverged = append(s.BadConverged, fmt.Errorf("%s: %v", p.Key, err))
		return
	}
	c, err := schema.ParseConvergence(holder, p.Value)
	if err != nil {
		s.BadConverged = append(s.BadConverged, fmt.Errorf("%s: %v", p.Key, err))
		return
	}
	s.Converged[holder] = c
}

// addHolder reads a running/ record: a held slot, readable or not.
func (s *Snapshot) addHolder(rel string, p *api.KVPair) {
	s.modify[rel] = p.ModifyIndex
	s.RunningKeys++
	holder := strings.TrimPrefix(rel, runningDir)
	if err := schema.ValidateName("holder", holder); err != nil {
		s.badHolders[holder] = true
		s.Problems = append(s.Problems, fmt.Errorf("%s: %v", p.Key, err))
		return
	}
	rec, err := schema.ParseRecord(holder, p.Value)
	if err != nil {
		s.badHolders[holder] = true
		s.Problems = append(s.Problems, fmt.Errorf("%s: %v", p.Key, err))
		return
	}
	s.Holders[holder] = rec
	if p.Session != "" {
		s.Suspect = append(s.Suspect, fmt.Errorf("%s: bound to session %s: the slot vanishes when that session ends (tierlock never binds running/ keys), and current drifts", p.Key, p.Session))
	}
}

// Decision is what Acquire does for a holder, decided from a snapshot alone.
type Decision int

// The decisions, in the order they are checked: a disabled tier wins over re-entry, and
// re-entry over the rollout (a host that holds a failed slot may always re-enter).
const (
	Disabled Decision = iota // max_concurrent is 0: nothing runs
	Reenter                  // the holder already has a slot (an earlier run left it held)
	Take                     // a slot is free, or the tier is unlimited
	Wait                     // the tier is full
	Halted                   // a mover whose revision is halted: nothing runs
	HeldBack                 // a mover the rollout does not admit yet: it waits as in a full tier
)

func (d Decision) String() string {
	switch d {
	case Disabled:
		return "disabled"
	case Reenter:
		return "re-enter"
	case Take:
		return "take"
	case Wait:
		return "wait"
	case Halted:
		return "halted"
	case HeldBack:
		return "held back"
	}
	return "Decision(" + strconv.Itoa(int(d)) + ")"
}

// Decide returns what Acquire does for holder, whose run applies revision rev ("" for none),
// with this snapshot. A holder takes a slot only when one is free and no waiter that could
// go ranks ahead of it, so that nobody overtakes the queue; one that is not queued counts
// the waiters that would rank ahead of it if it joined now, so a newcomer that ranks ahead
// goes ahead. The first in line takes for the others: its take hands the slots left free to
// the waiters behind it (see grants), so waiters never race one another for free slots. A
// mover (see rollout.go) goes only as the rollout admits it.
func (s *Snapshot) Decide(holder, rev string) Decision {
	d, _, _ := s.decide(holder, rev)
	return d
}

// decide is Decide, with the rollout's answer for a mover and the rollout record as its
// admission would leave it.
func (s *Snapshot) decide(holder, rev string) (Decision, gate, schema.Rollout) {
	if s.Disabled() {
		return Disabled, gateOpen, s.Rollout
	}
	if _, ok := s.Holders[holder]; ok {
		return Reenter, gateOpen, s.Rollout
	}
	g, r := gateOpen, s.Rollout
	if s.mover(holder, rev) {
		g, r = s.gate(s.Rollout, rev, holder, 0, "")
		switch g {
		case gateHalted:
			return Halted, g, r
		case gateOpen:
		default:
			return HeldBack, g, r
		}
	}
	if s.Max < 0 || (s.Held() < s.Max && s.Ahead(holder) == 0) {
		return Take, g, r
	}
	return Wait, g, r
}

// Ahead is the number of waiters ranked before holder that could go now: movers the rollout
// holds back do not count (a host already on its revision never waits for them). For a
// holder not queued, it is the number that would rank before it if it joined now (as the last
// to arrive): every waiter in arrival order, those with an older or no convergence (or the
// same) in converged order.
func (s *Snapshot) Ahead(holder string) int {
	me, queued := s.queued(holder)
	if !queued {
		me = schema.Waiter{Holder: holder, ConvergedAt: s.convergedAt(holder), CreateIndex: ^uint64(0)}
	}
	n := 0
	for _, w := range s.Queue {
		if w.Holder == holder {
			break
		}
		if (queued || s.Order.before(w, me)) && s.eligible(w) {
			n++
		}
	}
	return n
}

// passed reports whether holder, not queued and holding a slot it took without reading the
// line (a blind take, see acquisition.look), passed a waiter in doing so: whether a look at
// the whole line would have had it wait, a waiter ranking before it as a newcomer that could
// go (Ahead).
func (s *Snapshot) passed(holder string) bool {
	return s.Ahead(holder) > 0
}

// line is who a write may hand slots to, in rank order: waiters that hold no slot, but skip.
// A waiter of a newer protocol than ours is left out: its running/ record would be written
// from an entry whose meaning we do not fully know (and a nudge, re-encoding it, would drop
// what we do not know), so it takes its own slot when it looks (see Newer).
func (s *Snapshot) line(skip string) []schema.Waiter {
	var line []schema.Waiter
	for _, w := range s.Queue {
		if _, holds := s.modify[runningDir+w.Holder]; w.Holder != skip && !holds && w.Protocol <= schema.Protocol {
			line = append(line, w)
		}
	}
	return line
}

// grantable is line without the movers the rollout holds back as the snapshot shows it.
func (s *Snapshot) grantable(skip string) []schema.Waiter {
	var out []schema.Waiter
	for _, w := range s.line(skip) {
		if s.eligible(w) {
			out = append(out, w)
		}
	}
	return out
}

// Newer names the waiters and holders that speak a newer protocol than this tierlock (see
// Protocol): it ranks their waiters as usual but hands them no slot, and says so, so that a
// fleet in the middle of an upgrade knows why.
func (s *Snapshot) Newer() []string {
	var out []string
	for _, w := range s.Queue {
		if w.Protocol > schema.Protocol {
			out = append(out, fmt.Sprintf("queue/%s (protocol %d)", w.Holder, w.Protocol))
		}
	}
	for h, r := range s.Holders {
		if r.Protocol > schema.Protocol {
			out = append(out, fmt.Sprintf("running/%s (protocol %d)", h, r.Protocol))
		}
	}
	sort.Strings(out)
	return out
}

// cohortRank is holder's place among the holders admitted with it, which end with it when
// runs take alike: those whose runs are running and started before holder's (then by name),
// by at most a tenth of holder's run so far. A release in a wide tier serves the waiter that
// far down the head (see releaseFromHead), so that releases ending together serve different
// waiters; a release alone, or after a run of its own length, serves the first.
func (s *Snapshot) cohortRank(holder string) int {
	me, ok := s.Holders[holder]
	if !ok {
		return 0
	}
	since := me.StartedAt.Add(-s.now.Sub(me.StartedAt) / 10)
	return s.startedBefore(holder, func(r schema.Record) bool {
		return r.State == schema.StateRunning && !r.StartedAt.Before(since)
	})
}

// holderRank is holder's place among the holders by the start of their runs (then name).
func (s *Snapshot) holderRank(holder string) int {
	return s.startedBefore(holder, func(schema.Record) bool { return true })
}

// startedBefore counts the holders that counts accepts and whose runs started before
// holder's (then by name); 0 when holder holds no slot.
func (s *Snapshot) startedBefore(holder string, counts func(schema.Record) bool) int {
	me, ok := s.Holders[holder]
	if !ok {
		return 0
	}
	n := 0
	for h, r := range s.Holders {
		if (r.StartedAt.Before(me.StartedAt) || (r.StartedAt.Equal(me.StartedAt) && h < holder)) && counts(r) {
			n++
		}
	}
	return n
}

// without is the snapshot with the waiters in gone left out of the line: a copy, sharing the
// rest (which nothing changes once read).
func (s *Snapshot) without(gone map[string]bool) *Snapshot {
	c := *s
	c.Queue = nil
	for _, w := range s.Queue {
		if !gone[w.Holder] {
			c.Queue = append(c.Queue, w)
		}
	}
	return &c
}

// alone reports whether holder is alone in the tier: no running/ key but its own (if it has
// one), and nobody in line. A take reads the tier back for its Release only then, and the
// Release uses that read only then (see Release).
func (s *Snapshot) alone(holder string) bool {
	others := s.RunningKeys
	if _, own := s.modify[runningDir+holder]; own {
		others--
	}
	return others == 0 && len(s.Queue) == 0
}

// queued returns holder's queue entry.
func (s *Snapshot) queued(holder string) (schema.Waiter, bool) {
	for _, w := range s.Queue {
		if w.Holder == holder {
			return w, true
		}
	}
	return schema.Waiter{}, false
}
