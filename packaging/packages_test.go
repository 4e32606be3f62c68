package packaging_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/tierlock/tierlock/internal/testkit/testdeps"
)

// debEntry is one regular file of a .deb's data.
type debEntry struct {
	mode      os.FileMode
	uid, gid  int
	user, grp string
	content   []byte
}

// debFiles reads the regular files of a .deb, by absolute path.
func debFiles(t *testing.T, deb string) map[string]debEntry {
	t.Helper()
	out, err := exec.Command("dpkg-deb", "--fsys-tarfile", deb).Output()
	if err != nil {
		t.Fatalf("dpkg-deb --fsys-tarfile %s: %v", deb, err)
	}
	files := map[string]debEntry{}
	tr := tar.NewReader(bytes.NewReader(out))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimPrefix(h.Name, ".")] = debEntry{os.FileMode(h.Mode).Perm(), h.Uid, h.Gid, h.Uname, h.Gname, b}
	}
	return files
}

// Each .deb holds exactly the shipped files, owned by root, with their modes and contents,
// no conffile (postinst creates /etc/default/tierlock from the template, so that dpkg never
// prompts when it was placed first), and the maintainer scripts of packaging/scripts.
func TestDebContents(t *testing.T) {
	testdeps.Tool(t, "dpkg-deb", "dpkg")
	for _, arch := range arches {
		t.Run(arch.deb, func(t *testing.T) {
			deb := debFile(t, arch.deb)
			if got := strings.TrimSpace(command(t, "dpkg-deb", "-f", deb, "Architecture")); got != arch.deb {
				t.Errorf("Architecture %q, want %q", got, arch.deb)
			}
			if got := strings.TrimSpace(command(t, "dpkg-deb", "-f", deb, "Version")); got != version(t)+"-1" {
				t.Errorf("Version %q, want %q", got, version(t)+"-1")
			}
			files := debFiles(t, deb)
			var want []string
			for _, f := range shipped {
				if f.rpmOnly {
					continue
				}
				want = append(want, f.deb)
				e, ok := files[f.deb]
				if !ok {
					t.Errorf("%s missing", f.deb)
					continue
				}
				if e.mode != f.mode || e.uid != 0 || e.gid != 0 || e.user != "root" || e.grp != "root" {
					t.Errorf("%s: mode %v owner %s:%s (%d:%d), want %v root:root", f.deb, e.mode, e.user, e.grp, e.uid, e.gid, f.mode)
				}
				if !bytes.Equal(e.content, f.want(t, arch.goarch)) {
					t.Errorf("%s differs from what it should be a copy of (%s%s)", f.deb, f.src, strings.Join(f.gen, " "))
				}
			}
			got := slices.Sorted(func(yield func(string) bool) {
				for p := range files {
					if !yield(p) {
						return
					}
				}
			})
			sort.Strings(want)
			if !slices.Equal(got, want) {
				t.Errorf("files\n got %q\nwant %q", got, want)
			}

			control := t.TempDir()
			command(t, "dpkg-deb", "--control", deb, control)
			if conffiles, err := os.ReadFile(filepath.Join(control, "conffiles")); err == nil {
				t.Errorf("conffiles %q, want none", conffiles)
			}
			for script, src := range map[string]string{"preinst": "preinstall.sh", "postinst": "postinstall.sh", "prerm": "preremove.sh", "postrm": "postremove.sh"} {
				got, err := os.ReadFile(filepath.Join(control, script))
				if err != nil {
					t.Errorf("no %s: %v", script, err)
					continue
				}
				want, _ := os.ReadFile(filepath.Join(repo, "packaging", "scripts", src))
				if !bytes.Equal(got, want) {
					t.Errorf("%s is not packaging/scripts/%s", script, src)
				}
			}
		})
	}
}

// rpm -qlp lists the same files as the .deb (at each family's paths for zsh and the license)
// plus the directories it owns; modes, owners, contents and flags are right.
func TestRPMContents(t *testing.T) {
	testdeps.Tool(t, "rpm", "rpm")
	for _, arch := range arches {
		t.Run(arch.rpm, func(t *testing.T) {
			rpm := rpmFile(t, arch.rpm)
			if got := command(t, "rpm", "-qp", "--qf", "%{ARCH} %{VERSION}-%{RELEASE}", rpm); got != arch.rpm+" "+version(t)+"-1" {
				t.Errorf("arch and version %q, want %q", got, arch.rpm+" "+version(t)+"-1")
			}
			want := slices.Clone(rpmDirs)
			for _, f := range shipped {
				want = append(want, f.rpmPath())
			}
			sort.Strings(want)
			got := strings.Fields(command(t, "rpm", "-qlp", rpm))
			if !slices.Equal(got, want) {
				t.Errorf("rpm -qlp\n got %q\nwant %q", got, want)
			}

			// One line per file: mode, flags (c config, n noreplace, d doc, l license), owner,
			// SHA-256 (FILEDIGESTALGO 8), path.
			type entry struct{ perms, flags, owner, digest string }
			entries := map[string]entry{}
			for _, line := range strings.Split(strings.TrimSpace(command(t, "rpm", "-qp", "--qf",
				`[%{FILEMODES:perms}|%{FILEFLAGS:fflags}|%{FILEUSERNAME}:%{FILEGROUPNAME}|%{FILEDIGESTALGO}:%{FILEDIGESTS}|%{FILENAMES}\n]`, rpm)), "\n") {
				p := strings.Split(line, "|")
				entries[p[4]] = entry{p[0], p[1], p[2], p[3]}
			}
			flags := map[string]string{"/etc/default/tierlock": "cn"}
			for _, f := range shipped {
				if strings.HasPrefix(f.deb, "/usr/share/doc/tierlock/") && f.rpm == "" {
					flags[f.deb] = "d"
				}
			}
			flags["/usr/share/licenses/tierlock/LICENSE"] = "l"
			for _, f := range shipped {
				e := entries[f.rpmPath()]
				sum := sha256.Sum256(f.want(t, arch.goarch))
				wantPerms := "-" + f.mode.String()[1:]
				if e.perms != wantPerms || e.owner != "root:root" || e.flags != flags[f.rpmPath()] || e.digest != "8:"+hex.EncodeToString(sum[:]) {
					t.Errorf("%s: %+v, want %s root:root flags %q and its content", f.rpmPath(), e, wantPerms, flags[f.rpmPath()])
				}
			}
			for _, d := range rpmDirs {
				if e := entries[d]; e.perms != "drwxr-xr-x" || e.owner != "root:root" {
					t.Errorf("%s: %+v, want drwxr-xr-x root:root", d, e)
				}
			}

			scripts := command(t, "rpm", "-qp", "--scripts", rpm)
			for _, src := range []string{"preinstall.sh", "postinstall.sh", "preremove.sh", "postremove.sh"} {
				b, _ := os.ReadFile(filepath.Join(repo, "packaging", "scripts", src))
				if !strings.Contains(scripts, strings.TrimSpace(string(b))) {
					t.Errorf("the .rpm's scriptlets lack packaging/scripts/%s:\n%s", src, scripts)
				}
			}
		})
	}
}

// The binaries are static (CGO_ENABLED=0), for their architecture, built with -trimpath, and
// carry the version, git SHA and build date.
func TestBinaries(t *testing.T) {
	out := command(t, hostBinary(t), "version")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || lines[0] != "tierlock "+version(t) ||
		!strings.HasPrefix(lines[1], "git: ") || strings.Contains(lines[1], "unknown") ||
		!strings.HasPrefix(lines[2], "built: 20") {
		t.Fatalf("tierlock version:\n%s", out)
	}
	commit := strings.TrimPrefix(lines[1], "git: ")
	for _, arch := range arches {
		t.Run(arch.goarch, func(t *testing.T) {
			path := dist(t, "tierlock_"+version(t)+"_linux_"+arch.goarch)
			f, err := elf.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch.goarch]
			if f.Machine != machine {
				t.Errorf("machine %v, want %v", f.Machine, machine)
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
					t.Errorf("dynamically linked (%v): built without CGO_ENABLED=0?", p.Type)
				}
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(b, []byte(repo+"/")) {
				t.Errorf("contains the build path %s: built without -trimpath?", repo)
			}
			if !bytes.Contains(b, []byte(commit)) {
				t.Errorf("lacks the git SHA %s of the other binaries", commit)
			}
		})
	}
}

// SHA256SUMS covers every file at the top of dist/, and they match.
func TestSHA256SUMS(t *testing.T) {
	sums := dist(t, "SHA256SUMS")
	cmd := exec.Command("sha256sum", "--check", "--strict", "SHA256SUMS")
	cmd.Dir = filepath.Dir(sums)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sha256sum --check: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(sums)
	var listed []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		listed = append(listed, strings.Fields(line)[1])
	}
	entries, _ := os.ReadDir(filepath.Dir(sums))
	var files []string
	for _, e := range entries {
		if e.Type().IsRegular() && e.Name() != "SHA256SUMS" {
			files = append(files, e.Name())
		}
	}
	if !slices.Equal(listed, files) {
		t.Errorf("SHA256SUMS lists %q, dist/ has %q", listed, files)
	}
	for _, want := range []string{".deb", ".rpm", "_linux_amd64", "_linux_arm64"} {
		if !slices.ContainsFunc(listed, func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("SHA256SUMS has no *%s*", want)
		}
	}
}
