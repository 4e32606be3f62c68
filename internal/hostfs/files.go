package hostfs

import (
	cryptorand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Files tierlock writes as root live in directories others may be able to write (a textfile
// collector's directory, say). So nothing is opened through a symlink: a temporary file is
// created new (O_EXCL) under a name nobody can guess, never reached through a link
// (O_NOFOLLOW), its mode is set on the open file rather than by path, and it is renamed over
// the target, which replaces a link there instead of writing through it.

// tempName returns a fresh name for a temporary file beside base.
func tempName(base string) string {
	b := make([]byte, 8)
	_, _ = cryptorand.Read(b)
	return "." + base + ".tmp-" + hex.EncodeToString(b)
}

// WriteFileAtomic replaces path with what write writes, with the given mode. A reader sees the
// old file or the new one, never half of one.
func WriteFileAtomic(path string, mode os.FileMode, write func(io.Writer) error) error {
	return writeFileAtomicNamed(path, mode, write, tempName)
}

// writeFileAtomicNamed is WriteFileAtomic with the temporary names drawn from name.
func writeFileAtomicNamed(path string, mode os.FileMode, write func(io.Writer) error, name func(base string) string) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	var f *os.File
	var tmp string
	// A name taken (a planted file or link, or a leftover) is skipped, never opened.
	for range 8 {
		tmp = filepath.Join(dir, name(base))
		f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
		if !errors.Is(err, os.ErrExist) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("create a temporary file beside %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err := write(f); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, path, err)
	}
	return nil
}

// ErrUnsafeDir is a directory others could plant files or links in.
var ErrUnsafeDir = errors.New("unsafe directory")

// openSafeDir opens the directory path (not a link to one) and checks that only its owner can
// write in it, and that the owner is us or root. The caller closes the returned descriptor.
func openSafeDir(at int, path, shown string) (int, error) {
	fd, err := syscall.Openat(at, path, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.ENOTDIR) {
		var st unix.Stat_t
		mode := "not a directory"
		if unix.Fstatat(at, path, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			mode = "a symlink"
		}
		return -1, fmt.Errorf("%w: %s is %s: refusing to use it", ErrUnsafeDir, shown, mode)
	}
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", shown, err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("stat %s: %w", shown, err)
	}
	perm := os.FileMode(st.Mode & 0o7777)
	switch {
	case st.Mode&0o022 != 0:
		syscall.Close(fd)
		return -1, fmt.Errorf("%w: %s has mode %04o: group or others can write in it; make it writable by its owner only (chmod go-w)",
			ErrUnsafeDir, shown, uint32(perm))
	case int(st.Uid) != os.Geteuid() && st.Uid != 0:
		syscall.Close(fd)
		return -1, fmt.Errorf("%w: %s (mode %04o) is owned by uid %d, neither root nor us (uid %d)",
			ErrUnsafeDir, shown, uint32(perm), st.Uid, os.Geteuid())
	}
	return fd, nil
}
