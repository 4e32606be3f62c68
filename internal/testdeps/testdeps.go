// Package testdeps lets a test require a tool or file from a Debian package. `make test`
// installs those packages (scripts/test-deps.sh), so where it could (as root) a missing one is
// a failure; elsewhere the test skips and says what is missing.
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
	switch {
	case found:
	case os.Geteuid() == 0:
		t.Fatalf("%s missing: install the Debian package %s (make test-deps)", what, pkg)
	default:
		t.Skipf("%s missing and not root: cannot install the Debian package %s", what, pkg)
	}
}
