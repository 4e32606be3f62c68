package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// errLocallyBusy means another tierlock run for the tier is active on this host.
var errLocallyBusy = errors.New("another tierlock run for this tier is active on this host")

// lockLocally takes an exclusive flock on STATE_DIR/ENV/SERVICE.lock, so two runs on one host
// (a timer and a person, say) never share one holder's slot. The kernel drops the lock when
// the process dies, so a crash leaves nothing to clean up. unlock releases it.
func lockLocally(stateDir, tier string) (unlock func(), err error) {
	path := filepath.Join(stateDir, filepath.FromSlash(tier)+".lock")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("--state-dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("--state-dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s)", errLocallyBusy, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
