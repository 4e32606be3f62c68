package packaging_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/testkit/testdeps"
)

// stageDeb unpacks the host's .deb into a fresh root, beside a copy of this machine's own
// units (sysinit.target and the others the tierlock units pull in), as the package lands.
func stageDeb(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	command(t, "dpkg-deb", "--extract", debFile(t, runtimeDeb()), root)
	units := filepath.Join(root, "usr/lib/systemd/system")
	for _, dir := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if _, err := os.Stat(dir); err == nil {
			command(t, "cp", "-a", "--no-clobber", dir+"/.", units)
		}
	}
	return root
}

func runtimeDeb() string {
	for _, a := range arches {
		if a.goarch == runtimeGoarch() {
			return a.deb
		}
	}
	return runtime.GOARCH
}

// verify runs systemd-analyze verify on units of root, with root's man pages, and returns
// everything it printed.
func verify(t *testing.T, root string, units ...string) (string, error) {
	t.Helper()
	args := []string{"verify", "--root=" + root}
	for _, u := range units {
		args = append(args, filepath.Join(root, "usr/lib/systemd/system", u))
	}
	cmd := exec.Command("systemd-analyze", args...)
	// Documentation=man:tierlock(8) is checked by running man: it must find the staged page.
	cmd.Env = append(os.Environ(), "MANPATH="+filepath.Join(root, "usr/share/man"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// systemd-analyze verify accepts both units, as packaged, with the packaged binary and man
// page in place, without a word: it only warns about a mistyped key, so any output fails.
func TestSystemdAnalyzeVerify(t *testing.T) {
	testdeps.Tool(t, "systemd-analyze", "systemd")
	root := stageDeb(t)
	if out, err := verify(t, root, "tierlock.service", "tierlock.timer"); err != nil || out != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}

	// The check would see the mistakes it is here for.
	unit := filepath.Join(root, "usr/lib/systemd/system/tierlock.service")
	orig, _ := os.ReadFile(unit)
	typo := strings.Replace(string(orig), "KillMode=", "KilMode=", 1)
	if err := os.WriteFile(filepath.Join(root, "usr/lib/systemd/system/typo.service"), []byte(typo), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _ := verify(t, root, "typo.service"); !strings.Contains(out, "KilMode") {
		t.Errorf("a mistyped key went unnoticed: %q", out)
	}
	if err := os.Rename(filepath.Join(root, "usr/bin/tierlock"), filepath.Join(root, "tierlock")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, "usr/share/man/man8/tierlock.8.gz")); err != nil {
		t.Fatal(err)
	}
	out, _ := verify(t, root, "tierlock.service")
	if !strings.Contains(out, "/usr/bin/tierlock") || !strings.Contains(out, "man tierlock(8)") {
		t.Errorf("a missing binary or man page went unnoticed: %q", out)
	}
}

// unit parses a unit file into section -> key -> values.
func unit(t *testing.T, name string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(filepath.Join(repo, "systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: bad line %q", name, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// timespan is systemd's reading of a time span.
func timespan(t *testing.T, s string) time.Duration {
	t.Helper()
	out := command(t, "systemd-analyze", "timespan", s)
	m := regexp.MustCompile(`μs: (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze timespan %s: %s", s, out)
	}
	us, _ := strconv.ParseInt(m[1], 10, 64)
	return time.Duration(us) * time.Microsecond
}

// runDefault is the default of a `tierlock run` flag, from its --help.
func runDefault(t *testing.T, flag string) time.Duration {
	t.Helper()
	help := command(t, hostBinary(t), "run", "--help")
	m := regexp.MustCompile(`--` + flag + ` value .*\(default: (\S+)\)`).FindStringSubmatch(help)
	if m == nil {
		t.Fatalf("no default of --%s in tierlock run --help", flag)
	}
	d, err := time.ParseDuration(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// The settings the issue asks for, and the timeouts above what tierlock itself allows.
func TestSystemdUnitSettings(t *testing.T) {
	testdeps.Tool(t, "systemd-analyze", "systemd")
	svc := unit(t, "tierlock.service")["Service"]
	for k, want := range map[string]string{
		"Type": "oneshot", "EnvironmentFile": "-/etc/default/tierlock", "ExecStart": "/usr/bin/tierlock run",
		"SuccessExitStatus": "75", "KillMode": "mixed",
	} {
		if got := strings.Join(svc[k], " "); got != want {
			t.Errorf("tierlock.service %s=%q, want %q", k, got, want)
		}
	}
	// Started: up to --wait for a slot, --timeout for the command, --kill-grace to stop it,
	// --consul-timeout to record the outcome. Stopped: the last two.
	wait, timeout, grace, consul := runDefault(t, "wait"), runDefault(t, "timeout"), runDefault(t, "kill-grace"), runDefault(t, "consul-timeout")
	if start, least := timespan(t, svc["TimeoutStartSec"][0]), wait+timeout+grace+consul; start < least || start > least+30*time.Minute {
		t.Errorf("TimeoutStartSec %s: want a little above %s", start, least)
	}
	if stop, least := timespan(t, svc["TimeoutStopSec"][0]), grace+consul; stop <= least {
		t.Errorf("TimeoutStopSec %s: want above %s", stop, least)
	}
	// chef-client manages the whole host: nothing may fence it in.
	sandbox := regexp.MustCompile(`^(Protect|Private|Restrict|ReadOnly|ReadWrite|Inaccessible|NoNewPrivileges|SystemCall|CapabilityBoundingSet|AmbientCapabilities|DynamicUser|User|Group|MemoryDenyWriteExecute|LockPersonality|RootDirectory|RootImage|TemporaryFileSystem|BindPaths|BindReadOnlyPaths|IPAddressDeny)`)
	for k := range svc {
		if sandbox.MatchString(k) {
			t.Errorf("tierlock.service sets %s: no sandboxing, chef-client must manage the host", k)
		}
	}

	timer := unit(t, "tierlock.timer")
	for k, want := range map[string]string{
		"OnCalendar": "*:0/15", "Persistent": "true", "AccuracySec": "1s", "FixedRandomDelay": "true",
	} {
		if got := strings.Join(timer["Timer"][k], " "); got != want {
			t.Errorf("tierlock.timer %s=%q, want %q", k, got, want)
		}
	}
	if d := timespan(t, timer["Timer"]["RandomizedDelaySec"][0]); d <= 0 || d >= 15*time.Minute {
		t.Errorf("RandomizedDelaySec %s: want within the 15 minutes between runs", d)
	}
	if got := timer["Install"]["WantedBy"]; len(got) != 1 || got[0] != "timers.target" {
		t.Errorf("tierlock.timer WantedBy=%q, want timers.target", got)
	}
	b, _ := os.ReadFile(filepath.Join(repo, "systemd", "tierlock.timer"))
	if !strings.Contains(string(b), "older than 247") {
		t.Error("tierlock.timer lacks its note for systemd older than 247 (no FixedRandomDelay)")
	}
}

func runtimeGoarch() string { return runtime.GOARCH }
