package lock

import (
	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/lock/schema"
)

const auditDir = "audit/"

// withNote is ops with Options.Note, as action on value, written as audit/<kind> (unless kind
// is "") and at the head of audit/history, when there is a note to write. audit/<kind> is not
// guarded: those notes are last-writer-wins, and the change they ride with carries the
// transaction's checks. The history is written with check-and-set against snap, so that two
// operators' changes at once cannot lose one of them: the loser's whole transaction is read
// again and retried.
func (s *Semaphore) withNote(snap *Snapshot, ops []*api.KVTxnOp, kind, action, value string) ([]*api.KVTxnOp, error) {
	if s.opts.Note == nil {
		return ops, nil
	}
	n := *s.opts.Note
	n.Action, n.Value, n.Earlier = action, value, nil
	note, err := schema.EncodeNote(&n)
	if err != nil {
		return nil, err
	}
	if kind != "" {
		ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: s.base + auditDir + kind, Value: note})
	}
	h := n
	if last, ok := snap.Notes[schema.NoteHistory]; ok {
		earlier := last.Earlier
		last.Earlier = nil
		h.Earlier = append([]schema.Note{last}, earlier[:min(len(earlier), schema.MaxHistory-2)]...)
	}
	history, err := schema.EncodeNote(&h)
	if err != nil {
		return nil, err
	}
	return append(ops, s.set(snap, auditDir+schema.NoteHistory, string(history))), nil
}
