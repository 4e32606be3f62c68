package hostfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrBusy means another tierlock run for the tier is active on this host.
var ErrBusy = errors.New("another tierlock run for this tier is active on this host")

// tierDirPrefix starts the name of each environment's directory in the state dir:
// STATE_DIR/tier=ENV/SERVICE.lock. No tier part can hold '=' (they are letters, digits, '.',
// '_', '-'), so nothing tierlock keeps in the state dir under another name can ever be taken
// for a tier's, nor a tier's for it: a tier named consul-node/web is as good as any.
const tierDirPrefix = "tier="

// legacyNodeCache is where earlier versions kept the agent's node name. It is removed, never
// read: a kept name went stale when the agent was renamed.
const legacyNodeCache = "consul-node"

// LockTier takes an exclusive flock on STATE_DIR/tier=ENV/SERVICE.lock, so two runs on one
// host (a timer and a person, say) never share one holder's slot. The kernel drops the lock
// when the process dies, so a crash leaves nothing to clean up. unlock releases it.
//
// Earlier versions locked STATE_DIR/ENV/SERVICE.lock. A run of one started before an
// upgrade may still be going (chef upgrading tierlock from inside `tierlock run`, say), so if
// that file exists it is locked too: the two versions exclude each other. It is never created
// (ENV as a name in the state dir is what could collide), and it is gone after a reboot, the
// state dir being a tmpfs.
//
// tierlock runs as root: a state dir that is a symlink, that group or others can write, or
// that someone else owns is refused (ErrUnsafeDir), and neither the tier=ENV directory nor the
// lock file is ever opened through a link, so nobody can have root create or lock a file of
// their choosing.
func LockTier(stateDir, tier string) (unlock func(), err error) {
	env, service, _ := strings.Cut(tier, "/")
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, fmt.Errorf("--state-dir: %w", err)
	}
	dir, err := openSafeDir(unix.AT_FDCWD, stateDir, "--state-dir "+stateDir)
	if err != nil {
		return nil, err
	}
	defer syscall.Close(dir)
	_ = unix.Unlinkat(dir, legacyNodeCache, 0) // best effort; a directory of that name stays
	envName := tierDirPrefix + env
	if err := syscall.Mkdirat(dir, envName, 0o755); err != nil && !errors.Is(err, syscall.EEXIST) {
		return nil, fmt.Errorf("--state-dir: mkdir %s: %w", filepath.Join(stateDir, envName), err)
	}
	f, err := flockAt(dir, stateDir, envName, service+".lock", true)
	if err != nil {
		return nil, err
	}
	legacy, err := flockAt(dir, stateDir, env, service+".lock", false)
	if err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		if legacy != nil {
			legacy.Close()
		}
		f.Close()
	}, nil
}

// flockAt takes an exclusive flock on STATE_DIR/envName/name. Without create, a missing
// directory or file (or a plain file where the directory would be) is no lock to take: it
// returns nil and no error.
func flockAt(dir int, stateDir, envName, name string, create bool) (*os.File, error) {
	envPath := filepath.Join(stateDir, envName)
	path := filepath.Join(envPath, name)
	if !create {
		var st unix.Stat_t
		err := unix.Fstatat(dir, envName, &st, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) || err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Mode&unix.S_IFMT != unix.S_IFLNK {
			return nil, nil
		}
	}
	envDir, err := openSafeDir(dir, envName, envPath)
	if err != nil {
		return nil, err
	}
	defer syscall.Close(envDir)
	flags := syscall.O_RDWR | syscall.O_NOFOLLOW | syscall.O_CLOEXEC
	if create {
		flags |= syscall.O_CREAT
	}
	fd, err := syscall.Openat(envDir, name, flags, 0o600)
	switch {
	case errors.Is(err, syscall.ELOOP):
		return nil, fmt.Errorf("%w: %s is a symlink: refusing to follow it", ErrUnsafeDir, path)
	case !create && errors.Is(err, syscall.ENOENT):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("--state-dir: open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	if err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s)", ErrBusy, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}
