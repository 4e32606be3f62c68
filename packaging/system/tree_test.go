//go:build systemtest

package system

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// suite and include describe the tree (rpm: to install and erase the .rpm under the same
// systemd); treeName changes with them, so a cached tree of another recipe is never reused.
const (
	suite    = "bookworm"
	include  = "systemd,dbus,systemd-sysv,rpm"
	treeName = "debian-" + suite + "-minbase-systemd-rpm-v1.tar.zst"
)

// errNoMirror: apt names no Debian mirror to bootstrap from.
var errNoMirror = errors.New("system: no Debian mirror for " + suite + " in apt's sources")

// treeTarball returns the cached tree, making it first with debootstrap when absent (about
// 42 s on a quiet machine, several minutes on a busy one). made says whether it was made now.
func treeTarball(ctx context.Context, logf func(string, ...any)) (path string, made bool, err error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", false, fmt.Errorf("system: cache dir: %w", err)
	}
	path = filepath.Join(cache, "tierlock", treeName)
	if _, err := os.Stat(path); err == nil {
		return path, false, nil
	}
	mirror, err := aptMirror()
	if err != nil {
		return "", false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", false, fmt.Errorf("system: %w", err)
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), "tree-")
	if err != nil {
		return "", false, fmt.Errorf("system: %w", err)
	}
	defer os.RemoveAll(dir)
	// The tree's / (MkdirTemp makes it 0700): services that drop root, dbus first, must
	// traverse it.
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", false, fmt.Errorf("system: %w", err)
	}
	logf("debootstrap --variant=minbase --include=%s %s from %s", include, suite, mirror)
	out, err := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", "--include="+include,
		suite, dir, mirror).CombinedOutput()
	if err != nil {
		return "", false, fmt.Errorf("system: debootstrap: %w\n%s", err, tail(out, 2000))
	}
	// The downloaded .debs and package lists are half the tree and not needed to boot it.
	for _, glob := range []string{"var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*"} {
		files, _ := filepath.Glob(filepath.Join(dir, glob))
		for _, f := range files {
			os.Remove(f)
		}
	}
	tmp := path + ".tmp"
	if out, err := exec.CommandContext(ctx, "tar", "-C", dir, "--numeric-owner", "--xattrs", "--acls",
		"-I", "zstd -T0 -3", "-cpf", tmp, ".").CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", false, fmt.Errorf("system: packing the tree: %w\n%s", err, out)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", false, fmt.Errorf("system: %w", err)
	}
	return path, true, nil
}

// unpack extracts the cached tree into dir.
func unpack(ctx context.Context, tarball, dir string) error {
	out, err := exec.CommandContext(ctx, "tar", "-C", dir, "--numeric-owner", "--xattrs", "--acls",
		"-I", "zstd", "-xpf", tarball).CombinedOutput()
	if err != nil {
		return fmt.Errorf("system: unpacking %s: %w\n%s", tarball, err, out)
	}
	// Whatever mode the tarball gave /, as above.
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("system: %w", err)
	}
	return nil
}

// aptMirror is the first Debian archive apt is configured with for the suite (the security
// archive does not hold the base system), from one-line (.list) or deb822 (.sources) files.
func aptMirror() (string, error) {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	files = append([]string{"/etc/apt/sources.list"}, files...)
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		if strings.HasSuffix(name, ".sources") {
			for _, stanza := range strings.Split(string(b), "\n\n") {
				f := deb822(stanza)
				if strings.Contains(" "+f["types"]+" ", " deb ") && strings.Contains(" "+f["suites"]+" ", " "+suite+" ") {
					if uris := strings.Fields(f["uris"]); len(uris) > 0 && !strings.Contains(uris[0], "security") {
						return uris[0], nil
					}
				}
			}
			continue
		}
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			w := strings.Fields(sc.Text())
			// deb [options] URI SUITE COMPONENTS...
			if len(w) > 0 && w[0] == "deb" {
				w = w[1:]
				if len(w) > 0 && strings.HasPrefix(w[0], "[") {
					for len(w) > 0 && !strings.HasSuffix(w[0], "]") {
						w = w[1:]
					}
					w = w[1:]
				}
				if len(w) >= 2 && w[1] == suite && !strings.Contains(w[0], "security") {
					return w[0], nil
				}
			}
		}
	}
	return "", errNoMirror
}

// deb822 reads one stanza's fields, names lowercased.
func deb822(stanza string) map[string]string {
	f := map[string]string{}
	for _, line := range strings.Split(stanza, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, " ") {
			f[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
		}
	}
	return f
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// since formats a phase's duration for the log.
func since(start time.Time) string { return time.Since(start).Round(10 * time.Millisecond).String() }
