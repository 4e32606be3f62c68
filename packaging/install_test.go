package packaging_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/testkit/testdeps"
)

// dpkgStatus is the package's status in dpkg's database, "" when dpkg knows nothing of it.
func dpkgStatus() string {
	out, err := exec.Command("dpkg-query", "--show", "--showformat=${Status}", "tierlock").Output()
	if err != nil {
		return ""
	}
	return string(out)
}

// dpkg runs dpkg with args, waiting out another dpkg or apt that holds the lock for a while.
func dpkg(t *testing.T, args ...string) string {
	t.Helper()
	for try := 0; ; try++ {
		out, err := exec.Command("dpkg", args...).CombinedOutput()
		if err == nil {
			return string(out)
		}
		if try == 60 || !strings.Contains(string(out), "lock") {
			t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		time.Sleep(time.Second)
	}
}

// present says which of paths exist.
func present(paths []string) map[string]bool {
	m := map[string]bool{}
	for _, p := range paths {
		_, err := os.Lstat(p)
		m[p] = err == nil
	}
	return m
}

// The real thing, on this machine: dpkg -i installs every file with its mode, the installed
// tierlock runs, the timer is not enabled; dpkg -i again keeps an edited config; dpkg -r
// leaves only the config, dpkg -P nothing. The test refuses to run where tierlock is already
// installed or configured, and purges the package whatever happens.
func TestDebInstallRemovePurge(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("installing the .deb needs root: run make test as root (CI does)")
	}
	skipPackages(t) // before the checks of this machine below
	testdeps.Tool(t, "dpkg", "dpkg")
	if s := dpkgStatus(); s != "" && !strings.Contains(s, "not-installed") {
		t.Fatalf("tierlock is already on this machine (%s): this test installs and purges it, so it leaves it alone; dpkg -P tierlock first", s)
	}
	if _, err := os.Stat("/etc/default/tierlock"); err == nil {
		t.Fatal("/etc/default/tierlock exists: this test would purge it, so it leaves it alone")
	}
	deb := debFile(t, runtimeDeb())

	// Every path of the package (files and directories), and which of them exist before.
	var paths []string
	for _, line := range strings.Split(strings.TrimSpace(command(t, "dpkg-deb", "--contents", deb)), "\n") {
		f := strings.Fields(line)
		paths = append(paths, strings.TrimSuffix(strings.TrimPrefix(f[len(f)-1], "."), "/"))
	}
	wantsLink := "/etc/systemd/system/timers.target.wants/tierlock.timer"
	// /etc/default/tierlock and /var/lib/tierlock are made by the maintainer scripts. The state
	// dir /run/tierlock is not compared with what was there before: any earlier `tierlock run`
	// as root left it, and a purge removes it whatever it held (checked below).
	paths = append(paths, wantsLink, "/etc/default/tierlock", "/var/lib/tierlock")
	before := present(paths)
	if before[wantsLink] {
		t.Fatalf("%s exists before the install", wantsLink)
	}
	leftOver := func(except string) {
		t.Helper()
		for p, was := range present(paths) {
			if p != except && was != before[p] {
				t.Errorf("%s: present %v, before the install %v", p, was, before[p])
			}
		}
	}
	t.Cleanup(func() {
		if s := dpkgStatus(); s != "" && !strings.Contains(s, "not-installed") {
			dpkg(t, "--purge", "tierlock")
		}
	})
	// The purge below removes /run/tierlock: put back what the machine had, the directory
	// (lock files are made again by the next run).
	if fi, err := os.Stat("/run/tierlock"); err == nil {
		t.Cleanup(func() {
			if err := os.MkdirAll("/run/tierlock", fi.Mode().Perm()); err != nil {
				t.Errorf("restoring /run/tierlock: %v", err)
			}
		})
	}

	t.Log(dpkg(t, "--install", deb))
	if s := dpkgStatus(); s != "install ok installed" {
		t.Fatalf("status %q after dpkg -i", s)
	}
	for _, f := range shipped {
		if f.rpmOnly {
			continue
		}
		fi, err := os.Stat(f.deb)
		if err != nil {
			t.Errorf("not installed: %v", err)
			continue
		}
		if fi.Mode().Perm() != f.mode || !fi.Mode().IsRegular() {
			t.Errorf("%s installed with mode %v, want %v", f.deb, fi.Mode(), f.mode)
		}
		if b, _ := os.ReadFile(f.deb); !bytes.Equal(b, f.want(t, runtimeGoarch())) {
			t.Errorf("%s installed differs from what was packaged", f.deb)
		}
	}
	// postinst made the settings file from the template.
	if fi, err := os.Stat("/etc/default/tierlock"); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("/etc/default/tierlock after the install: %v %v, want mode 0644", fi, err)
	}
	if b, _ := os.ReadFile("/etc/default/tierlock"); !bytes.Equal(b, readRepo(t, "packaging/default/tierlock")) {
		t.Error("/etc/default/tierlock after the install is not the template /usr/share/tierlock/default")
	}
	if out := command(t, "/usr/bin/tierlock", "version"); !strings.HasPrefix(out, "tierlock "+version(t)+"\n") {
		t.Errorf("installed tierlock version: %q", out)
	}
	// The install must not have enabled (nor started) the timer.
	if _, err := os.Lstat(wantsLink); err == nil {
		t.Errorf("the install enabled tierlock.timer (%s)", wantsLink)
	}
	if _, err := exec.LookPath("systemctl"); err == nil {
		out, _ := exec.Command("systemctl", "is-enabled", "tierlock.timer").CombinedOutput()
		if got := strings.TrimSpace(string(out)); got != "disabled" {
			t.Errorf("systemctl is-enabled tierlock.timer: %q, want disabled", got)
		}
		if _, err := os.Stat("/run/systemd/system"); err == nil {
			if out, _ := exec.Command("systemctl", "is-active", "tierlock.timer").Output(); strings.TrimSpace(string(out)) != "inactive" {
				t.Errorf("systemctl is-active tierlock.timer: %q, want inactive", out)
			}
		}
	}

	// An edited config survives a reinstall (an upgrade, for dpkg) and a remove.
	edited := "# edited by TestDebInstallRemovePurge\n"
	f, err := os.OpenFile("/etc/default/tierlock", os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(f, edited)
	f.Close()
	t.Log(dpkg(t, "--install", "--force-confdef", "--force-confold", deb))
	if b, _ := os.ReadFile("/etc/default/tierlock"); !strings.HasSuffix(string(b), edited) {
		t.Error("reinstalling replaced the edited /etc/default/tierlock")
	}

	t.Log(dpkg(t, "--remove", "tierlock"))
	if s := dpkgStatus(); s != "deinstall ok config-files" {
		t.Errorf("status %q after dpkg -r, want the config kept", s)
	}
	if b, _ := os.ReadFile("/etc/default/tierlock"); !strings.HasSuffix(string(b), edited) {
		t.Error("dpkg -r did not keep the edited /etc/default/tierlock")
	}
	leftOver("/etc/default/tierlock")

	// What runs left in the state dir goes with the purge.
	if err := os.MkdirAll("/run/tierlock/tier=prod", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/run/tierlock/tier=prod/web.lock", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Log(dpkg(t, "--purge", "tierlock"))
	if s := dpkgStatus(); s != "" && !strings.Contains(s, "not-installed") {
		t.Errorf("status %q after dpkg -P", s)
	}
	leftOver("")
	if _, err := os.Lstat("/run/tierlock"); err == nil {
		t.Error("/run/tierlock is left after dpkg -P")
	}
	if entries, _ := filepath.Glob("/etc/default/tierlock*"); len(entries) > 0 {
		t.Errorf("left after purge: %q", entries)
	}
}

// readRepo reads a file of the repository.
func readRepo(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
