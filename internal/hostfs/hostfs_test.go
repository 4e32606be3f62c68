package hostfs

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// victim is a file an attacker would like root to overwrite or chmod.
func victim(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(path, []byte("untouched"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func wantUntouched(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	fi, serr := os.Stat(path)
	if err != nil || serr != nil || string(b) != "untouched" || fi.Mode().Perm() != 0o600 {
		t.Errorf("the victim changed: %q %v, mode %v %v", b, err, fi.Mode(), serr)
	}
}

func writeHello(w io.Writer) error { _, err := io.WriteString(w, "hello\n"); return err }

// A link planted at the temporary name, or at the target, leads nowhere: the victim it points
// at is neither written nor chmodded.
func TestWriteFileAtomicNeverFollowsLinks(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run.prom")
	v := victim(t)
	planted := 0
	names := func(base string) string {
		planted++
		if planted <= 2 {
			return "." + base + ".planted" + string(rune('0'+planted))
		}
		return tempName(base)
	}
	for _, link := range []string{".run.prom.planted1", ".run.prom.planted2", "run.prom"} {
		if err := os.Symlink(v, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeFileAtomicNamed(path, 0o644, writeHello, names); err != nil {
		t.Fatal(err)
	}
	wantUntouched(t, v)
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
		t.Errorf("%s: %v %v, want a regular file of mode 0644", path, fi.Mode(), err)
	}
	if b, _ := os.ReadFile(path); string(b) != "hello\n" {
		t.Errorf("%s holds %q", path, b)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 { // run.prom and the two planted links, nothing of ours left over
		t.Errorf("left in the directory: %v", entries)
	}
}

// A failed write leaves the old file as it was, and no temporary file.
func TestWriteFileAtomicFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run.prom")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := WriteFileAtomic(path, 0o644, func(io.Writer) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("err = %v, want boom", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("%s holds %q after a failed write", path, b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("left in the directory: %v", entries)
	}
}

func TestLockLocallyRefusesUnsafePlaces(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir, v string) string // returns the state dir
		want  string
	}{
		{"world-writable state dir", func(t *testing.T, dir, _ string) string {
			return chmod(t, dir, 0o777)
		}, "has mode 0777"},
		{"group-writable state dir", func(t *testing.T, dir, _ string) string {
			return chmod(t, dir, 0o775)
		}, "has mode 0775"},
		{"sticky world-writable state dir", func(t *testing.T, dir, _ string) string {
			return chmod(t, dir, 0o1777)
		}, "has mode 1777"},
		{"state dir is a symlink", func(t *testing.T, dir, _ string) string {
			link := filepath.Join(t.TempDir(), "state")
			mustSymlink(t, dir, link)
			return link
		}, "is a symlink"},
		{"env dir is a symlink", func(t *testing.T, dir, _ string) string {
			mustSymlink(t, t.TempDir(), filepath.Join(dir, "tier=prod"))
			return dir
		}, "is a symlink"},
		{"env dir is world-writable", func(t *testing.T, dir, _ string) string {
			chmod(t, mkdir(t, filepath.Join(dir, "tier=prod")), 0o777)
			return dir
		}, "has mode 0777"},
		{"lock file is a symlink to a victim", func(t *testing.T, dir, v string) string {
			mustSymlink(t, v, filepath.Join(mkdir(t, filepath.Join(dir, "tier=prod")), "web.lock"))
			return dir
		}, "is a symlink"},
		{"lock file is a dangling symlink", func(t *testing.T, dir, v string) string {
			mustSymlink(t, v+".new", filepath.Join(mkdir(t, filepath.Join(dir, "tier=prod")), "web.lock"))
			return dir
		}, "is a symlink"},
		// An earlier version's lock, which is taken when it exists, gets the same care.
		{"earlier version's env dir is a symlink", func(t *testing.T, dir, _ string) string {
			mustSymlink(t, t.TempDir(), filepath.Join(dir, "prod"))
			return dir
		}, "is a symlink"},
		{"earlier version's env dir is world-writable", func(t *testing.T, dir, _ string) string {
			chmod(t, mkdir(t, filepath.Join(dir, "prod")), 0o777)
			return dir
		}, "has mode 0777"},
		{"earlier version's lock file is a symlink to a victim", func(t *testing.T, dir, v string) string {
			mustSymlink(t, v, filepath.Join(mkdir(t, filepath.Join(dir, "prod")), "web.lock"))
			return dir
		}, "is a symlink"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := victim(t)
			stateDir := tc.setup(t, t.TempDir(), v)
			unlock, err := LockTier(stateDir, "prod/web")
			if err == nil {
				unlock()
				t.Fatal("LockTier accepted it")
			}
			if !errors.Is(err, ErrUnsafeDir) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want ErrUnsafeDir saying %q", err, tc.want)
			}
			wantUntouched(t, v)
			if _, err := os.Lstat(v + ".new"); err == nil {
				t.Errorf("a file was created through the dangling link")
			}
		})
	}
	// The safe case: created as needed, lock file 0600, a second lock is refused as busy.
	dir := filepath.Join(t.TempDir(), "new")
	unlock, err := LockTier(dir, "prod/web")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if fi, err := os.Lstat(filepath.Join(dir, "tier=prod", "web.lock")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("lock file: %v %v, want mode 0600", fi.Mode(), err)
	}
	if _, err := LockTier(dir, "prod/web"); !errors.Is(err, ErrBusy) {
		t.Errorf("second lock: %v, want busy", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "prod")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an earlier version's lock was created: %v", err)
	}
}

// The state dir holds nothing a tier's name can collide with: a tier whose environment is
// named like a file an earlier version kept there (consul-node, its node name cache) locks as
// any other, and the stale file is removed, never read.
func TestLockLocallyNamesCannotCollide(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "consul-node"), []byte("v1 127.0.0.1:8500 web-1-oldname 1764331200\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tier := range []string{"consul-node/web", "tier/consul-node", "web.lock/web", "prod/web.lock", "prod/web"} {
		unlock, err := LockTier(dir, tier)
		if err != nil {
			t.Fatalf("%s: %v", tier, err)
		}
		defer unlock()
	}
	if _, err := os.Lstat(filepath.Join(dir, "consul-node")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the old node name cache is still there: %v", err)
	}
	var names []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, " "); got != "tier=consul-node tier=prod tier=tier tier=web.lock" {
		t.Errorf("the state dir holds %s", got)
	}
}

// An earlier version's run, still going after an upgrade, holds STATE_DIR/ENV/SERVICE.lock:
// a run of this version waits for it (is busy), and once it ends runs as usual.
func TestLockLocallyExcludesAnEarlierVersion(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(mkdir(t, filepath.Join(dir, "prod")), "web.lock")
	f, err := os.OpenFile(old, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if _, err := LockTier(dir, "prod/web"); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), old) {
		t.Fatalf("with an earlier version's run going: %v, want busy naming %s", err, old)
	}
	// The busy answer left the new lock free.
	f.Close()
	unlock, err := LockTier(dir, "prod/web")
	if err != nil {
		t.Fatalf("after it ended: %v", err)
	}
	// While this run holds both, an earlier version's run cannot start either.
	g, err := os.OpenFile(old, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := syscall.Flock(int(g.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Errorf("an earlier version's lock while this run holds it: %v, want EWOULDBLOCK", err)
	}
	unlock()
	if err := syscall.Flock(int(g.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Errorf("after unlock: %v", err)
	}
}

func chmod(t *testing.T, dir string, mode os.FileMode) string {
	t.Helper()
	if mode&0o1000 != 0 {
		mode = mode&0o777 | os.ModeSticky
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mkdir(t *testing.T, dir string) string {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}
