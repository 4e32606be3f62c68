package runner

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/tierlock/tierlock/internal/hostfs"
	"github.com/tierlock/tierlock/internal/imds"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// ErrNoInstanceID: the instance id was to be asked of the EC2 metadata service, which did
// not give one. The run does not go on without it: the termination hook frees slots by it.
var ErrNoInstanceID = errors.New("runner: no instance id")

// Host is this host's side of a run, before the slot is asked for: the tier's lock on the
// host, the splay, and the facts the slot's record carries.
type Host struct {
	// StateDir holds the lock of Tier (hostfs.LockTier) that keeps two runs on one host
	// from sharing a holder's slot. Empty: no local lock (tests).
	StateDir, Tier string
	// Splay is the upper bound of a random sleep before anything else, so a fleet whose
	// timers fire together does not ask Consul at once. Rand draws it; default rand.N.
	Splay time.Duration
	Rand  func(time.Duration) time.Duration
	// InstanceID is recorded in the slot; "imds" asks the EC2 metadata service at
	// IMDSEndpoint (default imds.Endpoint()).
	InstanceID   string
	IMDSEndpoint string
	// Node, if set, is this host's Consul node name, asked at every run (an agent renamed
	// between runs must not leave a slot naming a node that is gone). Best effort: a slot
	// without a node is still a slot.
	Node func(ctx context.Context) (string, error)
	// RevisionCommand, if set, prints the revision this run applies (see Revision); it
	// replaces the Request's Revision.
	RevisionCommand *Command
	// Wait is how long to wait for a slot, counted from when the record is complete.
	Wait time.Duration
	// PassConsulToken keeps the Consul token variables in the commands' environment; by
	// default they are removed (CommandEnv).
	PassConsulToken bool
}

// EventKind is what an Event reports.
type EventKind int

const (
	// Splaying: the run sleeps Event.Duration first.
	Splaying EventKind = iota
	// NoNode: the agent did not say its node name (Event.Err); the slot records none.
	NoNode
	// Waiting: the first time the run waits (for a slot, or for the rollout to admit it).
	Waiting
	// Acquired: the slot is held, after Event.Duration; the command starts next.
	Acquired
)

// Event is something a Job reports as it happens, for the log; the Outcome says how it ended.
type Event struct {
	Kind     EventKind
	Duration time.Duration
	Err      error
	// Slot is the slot taken (Acquired).
	Slot *lock.Slot
	// Tier is what the run read before waiting (Waiting); HeldBack is set when the rollout,
	// not a full tier, holds it back.
	Tier     *lock.Snapshot
	HeldBack bool
	// Revision is the revision the run applies (Waiting).
	Revision string
}

// tokenVars are the variables through which a Consul credential reaches tierlock: the ACL
// token (or the file holding it) and the HTTP basic-auth user:password that a proxy in front
// of Consul may ask for. The command (chef-client and every recipe and daemon it starts) has
// no use for them, and would hand them on to anything it runs.
var tokenVars = []string{"CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_AUTH"}

// CommandEnv is a command's environment: environ without the Consul token variables, unless
// pass is set. Everything else is kept, in order; never nil (nil would inherit ours).
func CommandEnv(environ []string, pass bool) []string {
	if pass {
		return environ
	}
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(tokenVars, name) {
			out = append(out, kv)
		}
	}
	return out
}

// prepare is the host side before the slot: the local lock, the splay and the record. A
// signal cancels ctx and makes stopped report true: the splay or the record then ends with
// ErrStopped. unlock is to be called when the run is over, also on error.
func (j *Job) prepare(ctx context.Context, stopped func() bool) (req lock.Request, unlock func(), err error) {
	unlock = func() {}
	if j.Host.StateDir != "" {
		if unlock, err = hostfs.LockTier(j.Host.StateDir, j.Host.Tier); err != nil {
			return req, func() {}, err
		}
	}
	if d := j.splay(); d > 0 {
		j.notify(Event{Kind: Splaying, Duration: d})
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
	if stopped() {
		return req, unlock, ErrStopped
	}
	req, err = j.describe(ctx)
	if stopped() {
		return req, unlock, ErrStopped
	}
	return req, unlock, err
}

func (j *Job) splay() time.Duration {
	if j.Host.Splay <= 0 {
		return 0
	}
	if j.Host.Rand != nil {
		return j.Host.Rand(j.Host.Splay)
	}
	return rand.N(j.Host.Splay)
}

// describe completes the run's record: who, where, what, and the instance and Consul node
// the reapers judge it by.
func (j *Job) describe(ctx context.Context) (lock.Request, error) {
	req := j.Request
	if req.PID == 0 {
		req.PID = os.Getpid()
	}
	if req.Hostname == "" {
		req.Hostname, _ = os.Hostname()
	}
	switch id := j.Host.InstanceID; id {
	case "imds":
		endpoint := j.Host.IMDSEndpoint
		if endpoint == "" {
			endpoint = imds.Endpoint()
		}
		id, err := imds.InstanceID(ctx, endpoint)
		if err == nil {
			err = schema.ValidateName("instance id", id)
		}
		if err != nil {
			return req, fmt.Errorf("%w: asked of the EC2 metadata service: %v", ErrNoInstanceID, err)
		}
		req.InstanceID = id
	case "":
	default:
		req.InstanceID = id
	}
	if c := j.Host.RevisionCommand; c != nil {
		rev, err := Revision(ctx, *c)
		if err != nil {
			return req, fmt.Errorf("revision command %q (timeout %s): %w", strings.Join(append([]string{c.Path}, c.Args...), " "), c.Timeout, err)
		}
		req.Revision = rev
	}
	if j.Host.Node != nil {
		node, err := j.Host.Node(ctx)
		if err != nil {
			j.notify(Event{Kind: NoNode, Err: err})
		}
		req.Node = node
	}
	if j.Host.Wait > 0 {
		req.WaitUntil = j.now().Add(j.Host.Wait)
	}
	return req, nil
}

func orEnviron(env []string) []string {
	if env == nil {
		return os.Environ()
	}
	return env
}
