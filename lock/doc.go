// Package lock is tierlock's per-tier semaphore in Consul KV.
//
// A tier is ENVIRONMENT/SERVICE. Its keys live under PREFIX/ENVIRONMENT/SERVICE/:
//
//	max_concurrent     "-1" unlimited, "0" disabled, "N" at most N holders; absent: Options.DefaultMax
//	max_saved          the value Disable replaced, for Enable (read by Enable alone)
//	current            number of held slots; absent means 0
//	running/<holder>   one key per held slot: a JSON schema.Record (older tooling wrote a bare timestamp)
//	queue/<holder>     a waiter, bound to its session (see queue.go)
//	converged/<holder> the holder's last successful run (see converged.go)
//	rollout_policy     the tier's progressive rollout schedule (see rollout.go)
//	rollout            the revision rolling out and how far it got (see rollout.go)
//	line_head          the head of the line as a release last read it (see head.go)
//	audit/<kind>       the last operator change of each kind, audit/history the last 16 (note.go)
//
// What each key holds, as JSON, and the rules names must follow are package schema's; lock
// reads and writes them, and keeps the invariant.
//
// The invariant: after every committed write, current equals the number of running/ keys.
// Every write of a slot this package makes is a single Consul transaction that sets current to the
// number of running/ keys it leaves behind (a write that leaves that number as it was, such as a
// release that hands its slot over, leaves current alone), writes one running/ key or deletes some (a
// release frees one slot, an eviction every slot of a dead host), hands every slot it leaves
// free to the waiters at the head of the queue (their records written, their entries rewritten
// to carry them or deleted, see grantNews: a release wakes no one to race for the slot), and is guarded
// by check-and-set on every key it read (current, max_concurrent when it exists, the holder's own key and,
// within Consul's limit of operations per transaction, the other running/ keys). Because every
// write that changes the number of holders moves current in the same transaction as running/,
// the guard on current alone already serialises those writes; the other guards catch foreign
// writers. A write that keeps the number cannot take the tier past max_concurrent, so it needs
// only its own check-and-sets and the check of max_concurrent.
//
// A slot is kept when its command fails (state "failed") or is interrupted: holding it is the
// point, so a bad change stops spreading once max_concurrent hosts have failed. running/ keys
// are never bound to a Consul session for the same reason.
//
// A holder's read is one read-only transaction (get-tree of max_concurrent, current, running/,
// queue/ and its own converged/ record; a run's first look narrows queue/ to its own entry, and
// a take decided on it reads the line back: see acquisition.look), its answer capped so that junk under the tier cannot
// exhaust memory; past the cap, it lists the key names and fetches the values in batches
// (read.go: every listing's and every batch's answer capped, every request under Consul's
// txn_max_req_len). A key whose name is longer than any of the layout's can be is junk: its
// value is never fetched, and the snapshot reports it, cut, in Suspect. Junk under one tier
// costs that tier alone (ReadAll).
//
// A run may name the revision of the configuration it applies: a host that has not converged
// on it (a mover) is admitted canary first, then in the tier's batches, and a failure halts the
// revision (rollout.go). The rollout record moves inside the transactions that admit a mover
// and record its outcome; only movers' entries and records carry protocol 3 (schema.Protocol).
//
// What lock decides for itself, and what it leaves to the caller: it re-reads and tries again
// after a lost check-and-set race (at most maxRaces in a row, a random pause of up to 20 ms
// after each), joins the queue at once after losing a race for a free slot, reads again and
// decides again when an answer was too large, renews a waiter's session and joins again when
// it was lost, and takes one more look before it gives up a wait. Acquire is idempotent per run
// id, and when it ends on a Consul error that Options.Retryable calls passing, it keeps the
// run's place in line for the caller's retry. Retrying Consul errors, logging and exit
// codes are the caller's business. The memory cap on answers holds with the client of
// internal/consulclient, which honours the limit lock puts in each request's context
// (internal/answercap); a plain api.Client reads whole answers.
package lock
