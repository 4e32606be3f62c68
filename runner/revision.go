package runner

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/tierlock/tierlock/lock/schema"
)

// ErrNoRevision: the revision command failed, timed out, or printed nothing usable. The run
// must not go on without one: it would bypass the tier's rollout.
var ErrNoRevision = errors.New("runner: no revision")

// MaxRevisionOutput bounds what a revision command may print: one revision, not a document.
const MaxRevisionOutput = 4096

// Revision runs c (its Timeout bounds it) and returns what it printed, trimmed: the revision
// of the configuration the run applies (a git SHA, a Policyfile revision_id). c.Stdout is
// ignored; c.Stderr gets the command's errors. It never sees the Consul tokens (CommandEnv):
// printing a revision needs none.
func Revision(ctx context.Context, c Command) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Path, c.Args...)
	cmd.Env, cmd.Stderr = CommandEnv(orEnviron(c.Env), false), c.Stderr
	out := &capped{max: MaxRevisionOutput}
	cmd.Stdout = out
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return "", fmt.Errorf("%w: it did not finish within %s", ErrNoRevision, c.Timeout)
	case err != nil:
		return "", fmt.Errorf("%w: %v", ErrNoRevision, err)
	case out.over:
		return "", fmt.Errorf("%w: it printed more than %d bytes; want one revision", ErrNoRevision, out.max)
	}
	rev := strings.TrimSpace(out.String())
	if rev == "" {
		return "", fmt.Errorf("%w: it printed nothing", ErrNoRevision)
	}
	if err := schema.ValidateRevision(rev); err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoRevision, err)
	}
	return rev, nil
}

// capped keeps the first max bytes written to it.
type capped struct {
	strings.Builder
	max  int
	over bool
}

func (c *capped) Write(p []byte) (int, error) {
	n := len(p)
	if c.Len()+len(p) > c.max {
		c.over = true
		p = p[:max(c.max-c.Len(), 0)]
	}
	c.Builder.Write(p)
	return n, nil // the rest is dropped, not refused: the command must not die of a full pipe
}
