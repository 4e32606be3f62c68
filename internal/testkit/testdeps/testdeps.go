// Package testdeps lets a test require a tool or file from a Debian package. `make test`
// installs those packages (scripts/test-deps.sh), so where it could (root, with apt-get) a
// missing one is a failure; elsewhere the test skips and says what is missing.
package testdeps

import (
	"os"
	"os/exec"
	"testing"
)

// Tool requires the command name on $PATH, from the Debian package pkg.
func Tool(t testing.TB, name, pkg string) {
	t.Helper()
	_, err := exec.LookPath(name)
	need(t, err == nil, name, pkg)
}

// File requires the file path, from the Debian package pkg.
func File(t testing.TB, path, pkg string) {
	t.Helper()
	_, err := os.Stat(path)
	need(t, err == nil, path, pkg)
}

func need(t testing.TB, found bool, what, pkg string) {
	t.Helper()
	if found {
		return
	}
	if _, err := exec.LookPath("apt-get"); err != nil || os.Geteuid() != 0 {
		t.Skipf("%s missing, and the Debian package %s cannot be installed here (needs root and apt-get)", what, pkg)
	}
	t.Fatalf("%s missing: run `make test-deps` (installs the Debian package %s)", what, pkg)
}
