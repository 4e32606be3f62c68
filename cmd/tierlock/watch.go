package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/tierlock/tierlock/internal/consulclient"
	"github.com/tierlock/tierlock/lock/schema"
	"github.com/tierlock/tierlock/monitor"
)

// watchWait bounds one blocking query of the watch (Consul answers at once on a change), so
// the ages on screen are at most this old.
const watchWait = 30 * time.Second

// minRedraw spaces redraws during a busy rollout: the view stays readable and the watch costs
// Consul at most a few reads a second, however many hosts move.
const minRedraw = 250 * time.Millisecond

// watchStatus draws the status, then waits on a blocking query of the keys under the prefix
// (or the tier) and draws again after every change, until ctx ends or a signal arrives. On a
// terminal each view replaces the last; elsewhere (a pipe, a file, a log) views are appended,
// each under a line with its time.
func (a *App) watchStatus(ctx context.Context, c *cli.Context, timeout time.Duration, hosts bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-a.Signals:
			cancel()
		case <-ctx.Done():
		}
	}()
	tier := c.String("tier")
	prefix, err := prefixOf(c)
	if err != nil {
		return err
	}
	if tier != "" {
		if err := schema.ValidateTier(tier); err != nil {
			return usage("--tier: %w", err)
		}
	}
	client, err := consulclient.New()
	if err != nil {
		return err
	}
	key := prefix + "/"
	if tier != "" {
		key += tier + "/"
	}
	tty := isTerminal(a.Stdout)
	kv := client.KV()
	// The index to wait on comes from the same listing the wait uses: an index from another
	// kind of read (a transaction's, say) may be ahead of the listing's and would miss changes.
	index, _ := waitChange(ctx, kv, key, 0)
	for {
		snaps, err := a.readTiersWith(ctx, c, client, timeout)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fail(err)
		}
		now := a.Now()
		var buf bytes.Buffer
		if tty {
			buf.WriteString("\x1b[H\x1b[2J") // home, clear
		}
		fmt.Fprintf(&buf, "--- %s  tierlock status --watch %s (Ctrl-C to stop)\n", now.Format(time.RFC3339), key)
		writeStatusTable(&buf, snaps, monitor.Judge(snaps, now, monitor.DefaultThresholds()), now, hosts)
		if _, err := a.Stdout.Write(buf.Bytes()); err != nil {
			return nil // the reader went away (a closed pipe): nothing left to show
		}
		drawn := time.Now()
		next, err := waitChange(ctx, kv, key, index)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			// The next read retries for --consul-timeout and says what is wrong if it lasts.
			next = 0
			drawn = time.Now().Add(time.Second)
		}
		index = next
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(minRedraw - time.Since(drawn)):
		}
	}
}

// waitChange blocks until something under key changes after index (or watchWait passes, so
// the ages shown stay fresh), and returns the index to wait on next. Consul's index may go
// backwards (a snapshot restore); starting again from 0 is its advice. The listing stops at
// the first "/" (its index still covers everything under key), and its answer is capped: the
// names of every key under the prefix, junk included, are not worth a byte here.
func waitChange(ctx context.Context, kv *api.KV, key string, index uint64) (uint64, error) {
	ctx = consulclient.WithAnswerLimit(ctx, watchAnswerLimit)
	_, meta, err := kv.Keys(key, "/", (&api.QueryOptions{WaitIndex: index, WaitTime: watchWait}).WithContext(ctx))
	if err != nil {
		return index, err
	}
	if meta.LastIndex < index {
		return 0, nil
	}
	return meta.LastIndex, nil
}

// watchAnswerLimit caps the answer of waitChange's listing: environments (or a tier's
// directories) are a few bytes each.
const watchAnswerLimit = 1 << 20

// isTerminal reports whether w is a terminal, where the view is redrawn in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// watchFlag is status's --watch.
func watchFlag() cli.Flag {
	return &cli.BoolFlag{Name: "watch", Usage: "redraw on every change of the tier (blocking queries, no polling) until Ctrl-C; appends views when stdout is not a terminal"}
}
