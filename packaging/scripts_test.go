package packaging_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tierlock/tierlock/internal/testkit/testdeps"
)

const tierSet = "# set by configuration management\nTIERLOCK_TIER=prod/web\n"

// The maintainer scripts (preinst too), run with each argument dpkg and rpm give them, on a host booted with
// systemd or not, with /etc/default/tierlock as shipped or with a tier set. systemctl is a
// fake that records its calls, /run and /etc/default are private to the test (a mount
// namespace), so nothing of this machine is touched or enabled.
func TestMaintainerScripts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a private mount namespace (unshare -m); make test runs as root in CI")
	}
	testdeps.Tool(t, "unshare", "util-linux")
	shipped, err := os.ReadFile(filepath.Join(repo, "packaging/default/tierlock"))
	if err != nil {
		t.Fatal(err)
	}
	enable := []string{"daemon-reload", "enable --now tierlock.timer"}
	stop := []string{"stop tierlock.timer", "disable tierlock.timer"}
	for _, tc := range []struct {
		name, script string
		args         []string
		systemd      bool
		defaults     string // /etc/default/tierlock; "" absent
		calls        []string
		say          string // in the script's output
		stateDirGone bool   // /run/tierlock removed
		marked       bool   // preinst's mark of an install is there before the script runs
		wantMark     bool   // and after it
		wantDefaults string // /etc/default/tierlock afterwards; "" means as before, "-" absent
	}{
		{"deb preinst install", "preinstall.sh", []string{"install"}, true, tierSet, nil, "", false, false, true, ""},
		{"deb preinst install after removal", "preinstall.sh", []string{"install", "0.0.9-1"}, true, tierSet, nil, "", false, false, true, ""},
		{"deb preinst upgrade", "preinstall.sh", []string{"upgrade", "0.0.9-1"}, true, tierSet, nil, "", false, false, false, ""},
		{"rpm pre install", "preinstall.sh", []string{"1"}, true, tierSet, nil, "", false, false, false, ""},
		{"deb reinstall after removal, tier set", "postinstall.sh", []string{"configure", "0.0.9-1"}, true, tierSet, enable, "tierlock.timer enabled", false, true, false, ""},
		{"deb reinstall after removal, config gone", "postinstall.sh", []string{"configure", "0.0.9-1"}, true, "", []string{"daemon-reload"}, "set TIERLOCK_TIER", false, true, false, string(shipped)},
		{"deb upgrade, file deleted by the operator", "postinstall.sh", []string{"configure", "0.0.9-1"}, true, "", []string{"daemon-reload"}, "", false, false, false, "-"},
		{"deb abort-install", "postremove.sh", []string{"abort-install"}, true, "", []string{"daemon-reload"}, "", false, true, false, "-"},
		{"deb purged, file created by postinst", "postremove.sh", []string{"purge"}, false, tierSet, nil, "", true, false, false, "-"},
		{"deb install, tier set", "postinstall.sh", []string{"configure", ""}, true, tierSet, enable, "tierlock.timer enabled", false, false, false, ""},
		{"deb install, no version argument", "postinstall.sh", []string{"configure"}, true, tierSet, enable, "", false, false, false, ""},
		{"deb install, as shipped", "postinstall.sh", []string{"configure", ""}, true, string(shipped), []string{"daemon-reload"}, "set TIERLOCK_TIER", false, false, false, ""},
		{"deb install, tier empty", "postinstall.sh", []string{"configure", ""}, true, "TIERLOCK_TIER=\n", []string{"daemon-reload"}, "set TIERLOCK_TIER", false, false, false, ""},
		{"deb install, tier commented", "postinstall.sh", []string{"configure", ""}, true, "#TIERLOCK_TIER=prod/web\n", []string{"daemon-reload"}, "", false, false, false, ""},
		{"deb install, tier quoted", "postinstall.sh", []string{"configure", ""}, true, `TIERLOCK_TIER="prod/web"` + "\n", enable, "", false, false, false, ""},
		{"deb install, tier with blanks around =", "postinstall.sh", []string{"configure", ""}, true, "  TIERLOCK_TIER = 'prod/web'\n", enable, "tierlock.timer enabled", false, false, false, ""},
		{"deb install, tier set then emptied", "postinstall.sh", []string{"configure", ""}, true, "TIERLOCK_TIER=prod/web\nTIERLOCK_TIER=\n", []string{"daemon-reload"}, "set TIERLOCK_TIER", false, false, false, ""},
		{"deb install, tier emptied then set", "postinstall.sh", []string{"configure", ""}, true, "TIERLOCK_TIER=\nTIERLOCK_TIER=prod/web\n", enable, "tierlock.timer enabled", false, false, false, ""},
		{"deb install, tier behind ;", "postinstall.sh", []string{"configure", ""}, true, "; TIERLOCK_TIER=prod/web\n", []string{"daemon-reload"}, "set TIERLOCK_TIER", false, false, false, ""},
		{"deb install, another name", "postinstall.sh", []string{"configure", ""}, true, "TIERLOCK_TIERS=prod/web\n", []string{"daemon-reload"}, "set TIERLOCK_TIER", false, false, false, ""},
		{"deb install, no file: the template copied", "postinstall.sh", []string{"configure", ""}, true, "", []string{"daemon-reload"}, "set TIERLOCK_TIER", false, false, false, string(shipped)},
		{"deb install, no systemd", "postinstall.sh", []string{"configure", ""}, false, tierSet, nil, "", false, false, false, ""},
		{"deb upgrade, tier set", "postinstall.sh", []string{"configure", "0.0.9-1"}, true, tierSet, []string{"daemon-reload"}, "", false, false, false, ""},
		{"deb abort-upgrade", "postinstall.sh", []string{"abort-upgrade", "0.2.0-1"}, true, tierSet, []string{"daemon-reload"}, "", false, false, false, ""},
		{"rpm install, tier set", "postinstall.sh", []string{"1"}, true, tierSet, enable, "", false, false, false, ""},
		{"rpm install, as shipped", "postinstall.sh", []string{"1"}, true, string(shipped), []string{"daemon-reload"}, "", false, false, false, ""},
		{"rpm upgrade, tier set", "postinstall.sh", []string{"2"}, true, tierSet, []string{"daemon-reload"}, "", false, false, false, ""},
		{"deb remove", "preremove.sh", []string{"remove"}, true, tierSet, stop, "", false, false, false, ""},
		{"deb remove, no systemd", "preremove.sh", []string{"remove"}, false, tierSet, []string{"disable tierlock.timer"}, "", false, false, false, ""},
		{"deb upgrade, prerm", "preremove.sh", []string{"upgrade", "0.2.0-1"}, true, tierSet, nil, "", false, false, false, ""},
		{"rpm erase", "preremove.sh", []string{"0"}, true, tierSet, stop, "", false, false, false, ""},
		{"rpm upgrade, preun", "preremove.sh", []string{"1"}, true, tierSet, nil, "", false, false, false, ""},
		{"deb removed", "postremove.sh", []string{"remove"}, true, tierSet, []string{"daemon-reload"}, "", false, false, false, ""},
		{"deb purged", "postremove.sh", []string{"purge"}, true, "", []string{"daemon-reload"}, "", true, false, false, ""},
		{"deb purged, no systemd", "postremove.sh", []string{"purge"}, false, "", nil, "", true, false, false, ""},
		{"deb upgrade, postrm", "postremove.sh", []string{"upgrade", "0.2.0-1"}, true, tierSet, nil, "", false, false, false, ""},
		{"rpm erased", "postremove.sh", []string{"0"}, true, tierSet, []string{"daemon-reload"}, "", true, false, false, ""},
		{"rpm upgrade, postun", "postremove.sh", []string{"1"}, true, tierSet, nil, "", false, false, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			bin := filepath.Join(dir, "bin")
			log := filepath.Join(dir, "systemctl.log")
			if err := os.Mkdir(bin, 0o755); err != nil {
				t.Fatal(err)
			}
			fake := "#!/bin/sh\necho \"$*\" >> " + log + "\n"
			if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte(fake), 0o755); err != nil {
				t.Fatal(err)
			}
			// /run, /etc/default, /var/lib (preinst's mark) and /usr/share (the template) are
			// private to the script.
			setup := "mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /etc/default && mount -t tmpfs tmpfs /var/lib && " +
				"mount -t tmpfs tmpfs /usr/share && mkdir -p /run/tierlock/tier=prod /usr/share/tierlock && touch /run/tierlock/tier=prod/web.lock && " +
				"cp " + filepath.Join(dir, "template") + " /usr/share/tierlock/default\n"
			if err := os.WriteFile(filepath.Join(dir, "template"), shipped, 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.marked {
				setup += "mkdir -p /var/lib/tierlock && : > /var/lib/tierlock/installing\n"
			}
			if tc.systemd {
				setup += "mkdir -p /run/systemd/system\n"
			}
			if tc.defaults != "" {
				if err := os.WriteFile(filepath.Join(dir, "default"), []byte(tc.defaults), 0o644); err != nil {
					t.Fatal(err)
				}
				setup += "cp " + filepath.Join(dir, "default") + " /etc/default/tierlock\n"
			}
			sh := setup + `PATH=` + bin + `:$PATH sh "$0" "$@" || exit
[ -d /run/tierlock ] && echo "state dir: kept" || echo "state dir: gone"
[ -e /var/lib/tierlock/installing ] && echo "mark: there" || echo "mark: none"
echo "defaults:"; cat /etc/default/tierlock 2>/dev/null || echo "(absent)"`
			cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-ec", sh,
				filepath.Join(repo, "packaging/scripts", tc.script)}, tc.args...)...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s %q: %v\n%s", tc.script, tc.args, err, out)
			}
			b, _ := os.ReadFile(log)
			var calls []string
			if s := strings.TrimSpace(string(b)); s != "" {
				calls = strings.Split(s, "\n")
			}
			if !slices.Equal(calls, tc.calls) {
				t.Errorf("systemctl calls %q, want %q\noutput: %s", calls, tc.calls, out)
			}
			if !strings.Contains(string(out), tc.say) {
				t.Errorf("output %q lacks %q", out, tc.say)
			}
			if gone := strings.Contains(string(out), "state dir: gone"); gone != tc.stateDirGone {
				t.Errorf("/run/tierlock removed: %v, want %v", gone, tc.stateDirGone)
			}
			if mark := strings.Contains(string(out), "mark: there"); mark != tc.wantMark {
				t.Errorf("preinst's mark there afterwards: %v, want %v", mark, tc.wantMark)
			}
			_, defaults, _ := strings.Cut(string(out), "defaults:\n")
			want := tc.wantDefaults
			switch want {
			case "":
				want = tc.defaults
			case "-":
				want = ""
			}
			if want == "" {
				want = "(absent)\n"
			}
			if defaults != want {
				t.Errorf("/etc/default/tierlock afterwards:\n%s\nwant:\n%s", defaults, want)
			}
		})
	}
}
