// Package packaging_test tests what `make package` ships, as built: the .deb and .rpm files,
// the systemd units, the cron and environment files, the maintainer scripts and the Consul
// policy. `make test` builds the packages first; the tests read them from dist/.
package packaging_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
)

// managementToken is the ACL agent's management token, also its default token, so that the
// agent helper's readiness probe (which sends none) works. Every tierlock process in these
// tests is given its own token.
const managementToken = "8f5a6a34-2d2c-4c4e-9d6f-tierlock-test"

var (
	repo string // the repository root
	// agents is the ACL agent, started by the first test that needs it.
	agents = consulagent.Lazy{Args: []string{"-hcl", fmt.Sprintf(
		`acl { enabled = true, default_policy = "deny", tokens { initial_management = %q, default = %q } }`,
		managementToken, managementToken)}}
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	var err error
	if repo, err = filepath.Abs(".."); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "tierlock-packaging-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// ACLs on, deny by default: the shipped policy is tested for what it allows.
	agents.LogPath = filepath.Join(dir, "consul.log")
	defer agents.Stop()
	return m.Run()
}

// version is the version of the packages in dist/, from the one host binary there.
// $TIERLOCK_SKIP_PACKAGES=1 (make check, which builds no packages) skips the tests that read
// them; otherwise a missing dist/ fails them, so that `make test` never passes by skipping.
func version(t *testing.T) string {
	t.Helper()
	skipPackages(t)
	bins, _ := filepath.Glob(filepath.Join(repo, "dist", "tierlock_*_linux_amd64"))
	if len(bins) != 1 {
		t.Fatalf("want one dist/tierlock_VERSION_linux_amd64, found %q: run `make package` first (make test does)", bins)
	}
	v := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(bins[0]), "tierlock_"), "_linux_amd64")
	return v
}

// dist returns dist/NAME, failing when `make package` did not make it.
func dist(t *testing.T, name string) string {
	t.Helper()
	skipPackages(t)
	p := filepath.Join(repo, "dist", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%v: run `make package` first (make test does)", err)
	}
	return p
}

func skipPackages(t *testing.T) {
	t.Helper()
	if os.Getenv("TIERLOCK_SKIP_PACKAGES") == "1" {
		t.Skip("TIERLOCK_SKIP_PACKAGES=1 (make check): skipping a test of the built packages; make test runs it")
	}
}

// arches are the packaged architectures, in Go's, Debian's and RPM's names.
var arches = []struct{ goarch, deb, rpm string }{
	{"amd64", "amd64", "x86_64"},
	{"arm64", "arm64", "aarch64"},
}

func debFile(t *testing.T, arch string) string {
	return dist(t, fmt.Sprintf("tierlock_%s-1_%s.deb", version(t), arch))
}

func rpmFile(t *testing.T, arch string) string {
	return dist(t, fmt.Sprintf("tierlock-%s-1.%s.rpm", version(t), arch))
}

// hostBinary is the dist/ binary this machine runs.
func hostBinary(t *testing.T) string {
	t.Helper()
	return dist(t, fmt.Sprintf("tierlock_%s_linux_%s", version(t), runtime.GOARCH))
}

// shippedFile is one file of the packages.
type shippedFile struct {
	deb, rpm string      // its path in each package
	mode     os.FileMode // permission bits
	src      string      // the repository file it is a copy of; {version} and {arch} filled in
	gen      []string    // or: the tierlock arguments that print it (gzipped if .gz)
	rpmOnly  bool        // in the .rpm only
}

var shipped = []shippedFile{
	{deb: "/usr/bin/tierlock", mode: 0o755, src: "dist/tierlock_{version}_linux_{arch}"},
	{deb: "/usr/lib/systemd/system/tierlock.service", mode: 0o644, src: "systemd/tierlock.service"},
	{deb: "/usr/lib/systemd/system/tierlock.timer", mode: 0o644, src: "systemd/tierlock.timer"},
	// The template postinst copies to /etc/default/tierlock when there is none; rpm ships that
	// file itself, as %config(noreplace).
	{deb: "/usr/share/tierlock/default", mode: 0o644, src: "packaging/default/tierlock"},
	{deb: "/etc/default/tierlock", mode: 0o644, src: "packaging/default/tierlock", rpmOnly: true},
	// Alerting rules for Prometheus, loaded from here (docs/operating.md).
	{deb: "/usr/share/tierlock/tierlock-rules.yml", mode: 0o644, src: "packaging/prometheus/tierlock-rules.yml"},
	{deb: "/usr/share/man/man8/tierlock.8.gz", mode: 0o644, gen: []string{"man"}},
	{deb: "/usr/share/bash-completion/completions/tierlock", mode: 0o644, gen: []string{"completion", "bash"}},
	{deb: "/usr/share/zsh/vendor-completions/_tierlock", rpm: "/usr/share/zsh/site-functions/_tierlock", mode: 0o644, gen: []string{"completion", "zsh"}},
	{deb: "/usr/share/doc/tierlock/README.md", mode: 0o644, src: "README.md"},
	{deb: "/usr/share/doc/tierlock/examples/cron.d/tierlock", mode: 0o644, src: "packaging/cron/tierlock"},
	{deb: "/usr/share/doc/tierlock/examples/tierlock-policy.hcl", mode: 0o644, src: "packaging/consul/tierlock-policy.hcl"},
	{deb: "/usr/share/doc/tierlock/examples/tierlock-reaper-policy.hcl", mode: 0o644, src: "packaging/consul/tierlock-reaper-policy.hcl"},
	{deb: "/usr/share/doc/tierlock/examples/tierlock-check-policy.hcl", mode: 0o644, src: "packaging/consul/tierlock-check-policy.hcl"},
	{deb: "/usr/share/doc/tierlock/examples/tierlock-operator-policy.hcl", mode: 0o644, src: "packaging/consul/tierlock-operator-policy.hcl"},
	{deb: "/usr/share/doc/tierlock/copyright", rpm: "/usr/share/licenses/tierlock/LICENSE", mode: 0o644, src: "LICENSE"},
}

// rpmPath is the file's path in the .rpm: the .deb's unless the families differ.
func (f shippedFile) rpmPath() string {
	if f.rpm != "" {
		return f.rpm
	}
	return f.deb
}

// rpmDirs are the directories the .rpm owns, so that erasing it leaves none behind (the .deb
// lists every parent directory anyway).
var rpmDirs = []string{"/usr/share/tierlock", "/usr/share/doc/tierlock", "/usr/share/doc/tierlock/examples",
	"/usr/share/doc/tierlock/examples/cron.d", "/usr/share/licenses/tierlock"}

// want is what the file must contain for arch.
func (f shippedFile) want(t *testing.T, goarch string) []byte {
	t.Helper()
	if f.src != "" {
		src := strings.NewReplacer("{version}", version(t), "{arch}", goarch).Replace(f.src)
		b, err := os.ReadFile(filepath.Join(repo, src))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	out, err := exec.Command(hostBinary(t), f.gen...).Output()
	if err != nil {
		t.Fatalf("tierlock %s: %v", strings.Join(f.gen, " "), err)
	}
	if strings.HasSuffix(f.deb, ".gz") {
		var gz bytes.Buffer
		cmd := exec.Command("gzip", "-9n")
		cmd.Stdin, cmd.Stdout = bytes.NewReader(out), &gz
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		return gz.Bytes()
	}
	return out
}

// command runs name args and returns its combined output, failing the test on an error.
func command(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// cleanEnv is the environment without tierlock, Consul or AWS settings, plus extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !regexp.MustCompile(`^(TIERLOCK_|CONSUL_|AWS_)`).MatchString(kv) {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// The shipped ACL policies are what `tierlock acl-policy` prints for the example each names
// in its first line; a change to the command shows here until they are printed again.
func TestShippedPoliciesArePrinted(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(repo, "packaging", "consul", "*.hcl"))
	if len(files) != 4 {
		t.Fatalf("policies %q, want the host's, the operator's, the monitoring's and the reaper's", files)
	}
	roles := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		first, _, _ := strings.Cut(string(b), "\n")
		args, ok := strings.CutPrefix(first, "# Printed by: tierlock ")
		if !ok {
			t.Errorf("%s: first line %q does not say which command printed it", f, first)
			continue
		}
		fields := strings.Fields(args)
		out, err := exec.Command(hostBinary(t), fields...).Output()
		if err != nil {
			t.Errorf("tierlock %s: %v", args, err)
			continue
		}
		if !bytes.Equal(out, b) {
			t.Errorf("%s is not what `tierlock %s` prints: print it again", f, args)
		}
		for i, a := range fields {
			if a == "--role" && i+1 < len(fields) {
				roles[fields[i+1]] = filepath.Base(f)
			}
		}
	}
	for _, r := range []string{"host", "operator", "monitor", "reaper"} {
		if roles[r] == "" {
			t.Errorf("no shipped policy for --role %s", r)
		}
	}
}
