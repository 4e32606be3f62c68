package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// errLocallyBusy means another tierlock run for the tier is active on this host.
var errLocallyBusy = errors.New("another tierlock run for this tier is active on this host")

// lockLocally takes an exclusive flock on STATE_DIR/ENV/SERVICE.lock, so two runs on one host
// (a timer and a person, say) never share one holder's slot. The kernel drops the lock when
// the process dies, so a crash leaves nothing to clean up. unlock releases it.
//
// tierlock runs as root: a state dir that is a symlink, that group or others can write, or
// that someone else owns is refused (errUnsafeDir), and neither the ENV directory nor the
// lock file is ever opened through a link, so nobody can have root create or lock a file of
// their choosing.
func lockLocally(stateDir, tier string) (unlock func(), err error) {
	env, service, _ := strings.Cut(tier, "/")
	path := filepath.Join(stateDir, env, service+".lock")
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, fmt.Errorf("--state-dir: %w", err)
	}
	dir, err := openSafeDir(unix.AT_FDCWD, stateDir, "--state-dir "+stateDir)
	if err != nil {
		return nil, err
	}
	defer syscall.Close(dir)
	if err := syscall.Mkdirat(dir, env, 0o755); err != nil && !errors.Is(err, syscall.EEXIST) {
		return nil, fmt.Errorf("--state-dir: mkdir %s: %w", filepath.Join(stateDir, env), err)
	}
	envDir, err := openSafeDir(dir, env, filepath.Join(stateDir, env))
	if err != nil {
		return nil, err
	}
	defer syscall.Close(envDir)
	fd, err := syscall.Openat(envDir, service+".lock", syscall.O_RDWR|syscall.O_CREAT|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%w: %s is a symlink: refusing to follow it", errUnsafeDir, path)
	}
	if err != nil {
		return nil, fmt.Errorf("--state-dir: open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	if err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s)", errLocallyBusy, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
