//go:build systemtest

package system

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/internal/testkit/consulagent"
)

const (
	tier   = "sys/web"
	holder = "sys-host"
	keys   = "chef/" + tier + "/"
	// consulTimeout is TIERLOCK_CONSUL_TIMEOUT in the Consul-unreachable scenario; the run
	// must end within 1.5 times it.
	consulTimeout = 8 * time.Second
)

// fakechef stands in for chef-client. /srv/chef/mode says what it does: ok, fail (exit 3),
// block (until /srv/chef/go exists), upgrade (dpkg -i the package from inside the run). Every
// run is a line in /srv/chef/runs.
const fakechef = `#!/bin/sh
echo "fakechef: start $$"
echo run >> /srv/chef/runs
echo $$ > /srv/chef/pid
: > /srv/chef/started
case "$(cat /srv/chef/mode)" in
  fail) echo "fakechef: failing"; exit 3 ;;
  block) while [ ! -e /srv/chef/go ]; do sleep 0.1; done ;;
  upgrade) dpkg -i /root/tierlock.deb </dev/null || exit 9 ;;
esac
echo "fakechef: done"
`

// The package under a real systemd: one container booted from a cached Debian tree, one
// Consul dev agent on the host, and the scenarios in order, each asserted from the journal,
// systemctl and Consul KV. Each phase prints its time, each scenario a PASS line.
func TestSystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (systemd-nspawn, dpkg in the container): run make test-system as root")
	}
	ctx := context.Background()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	deb := findDeb(t, repo)
	phase := func(name string, start time.Time) { t.Logf("phase %-28s %s", name+":", since(start)) }
	all := time.Now()

	start := time.Now()
	tarball, made, err := treeTarball(ctx, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if made {
		phase("tree (debootstrap, cached)", start)
	} else {
		phase("tree (from the cache)", start)
	}
	start = time.Now()
	work := t.TempDir()
	root := filepath.Join(work, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unpack(ctx, tarball, root); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	rpm, err := os.ReadFile(strings.NewReplacer("tierlock_", "tierlock-", ".deb", ".rpm", "_amd64", ".x86_64", "_arm64", ".aarch64").Replace(deb))
	if err != nil {
		t.Fatalf("the .rpm beside %s: %v", deb, err)
	}
	for name, f := range map[string]struct {
		data []byte
		mode os.FileMode
	}{
		"root/tierlock.deb":         {b, 0o644},
		"root/tierlock.rpm":         {rpm, 0o644},
		"usr/local/bin/fakechef":    {[]byte(fakechef), 0o755},
		"srv/chef/mode":             {[]byte("ok\n"), 0o644},
		"srv/chef/runs":             {nil, 0o644},
		"etc/systemd/journald.conf": {[]byte("[Journal]\nStorage=volatile\n"), 0o644},
	} {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	phase("unpack", start)

	start = time.Now()
	bin, err := consulagent.Binary()
	if err != nil {
		t.Fatal(err)
	}
	agent, err := consulagent.Start(ctx, bin, filepath.Join(work, "consul.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(agent.Stop)
	client, err := agent.Client()
	if err != nil {
		t.Fatal(err)
	}
	phase("consul dev agent", start)

	start = time.Now()
	c, err := boot(ctx, root, filepath.Join(work, "nspawn.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		start := time.Now()
		if err := c.stop(); err != nil {
			t.Error(err)
		}
		phase("container stop", start)
		t.Logf("phase %-28s %s", "whole test:", since(all))
	})
	phase("container boot", start)
	s := &sys{t: t, ctx: ctx, c: c, kv: client.KV()}

	config := fmt.Sprintf("TIERLOCK_TIER=%s\nTIERLOCK_HOLDER=%s\nTIERLOCK_COMMAND=/usr/local/bin/fakechef\nCONSUL_HTTP_ADDR=%s\n",
		tier, holder, agent.Addr)
	template, err := os.ReadFile(filepath.Join(repo, "packaging/default/tierlock"))
	if err != nil {
		t.Fatal(err)
	}

	scenario := func(name string, f func(s *sys)) bool {
		start := time.Now()
		ok := t.Run(name, func(t *testing.T) { f(&sys{t: t, ctx: ctx, c: c, kv: s.kv}) })
		if ok {
			t.Logf("PASS scenario %q (%s)", name, since(start))
		}
		return ok
	}

	ok := scenario("fresh install without a tier", func(s *sys) {
		out := s.must("dpkg -i /root/tierlock.deb </dev/null")
		if !strings.Contains(out, "set TIERLOCK_TIER in /etc/default/tierlock, then: systemctl enable --now tierlock.timer") {
			s.t.Errorf("no hint in the install's output:\n%s", out)
		}
		s.want("systemctl is-enabled tierlock.timer", "disabled")
		s.want("systemctl is-active tierlock.timer", "inactive")
		if got := s.must("cat /etc/default/tierlock"); got != strings.TrimSpace(string(template)) {
			s.t.Errorf("/etc/default/tierlock is not the template:\n%s", got)
		}
		s.must("dpkg -P tierlock </dev/null")
		s.want("test -e /etc/default/tierlock && echo there || echo gone", "gone")
	}) &&
		scenario("config placed first, non-interactive install", func(s *sys) {
			s.must("mkdir -p /etc/default && cat > /etc/default/tierlock <<'EOF'\n" + config + "EOF")
			out := s.must("dpkg -i /root/tierlock.deb </dev/null")
			if !strings.Contains(out, "tierlock.timer enabled") {
				s.t.Errorf("install output:\n%s", out)
			}
			s.want("dpkg-query -W -f='${Status}' tierlock", "install ok installed")
			s.want("systemctl is-enabled tierlock.timer", "enabled")
			s.want("systemctl is-active tierlock.timer", "active")
			if got := s.must("cat /etc/default/tierlock"); got != strings.TrimSpace(config) {
				s.t.Errorf("/etc/default/tierlock changed by the install:\n%s", got)
			}
		}) &&
		scenario("packaged schedule", func(s *sys) {
			// The next elapse is a quarter hour plus this host's fixed offset (under 10
			// minutes), and a daemon-reload keeps it.
			next := s.nextElapse()
			quarter := next.Truncate(15 * time.Minute)
			if off := next.Sub(quarter); off < 0 || off >= 10*time.Minute {
				s.t.Errorf("next elapse %s is %s after the quarter hour, want under 10m", next, off)
			}
			s.must("systemctl daemon-reload")
			if again := s.nextElapse(); !again.Equal(next) {
				s.t.Errorf("next elapse %s before daemon-reload, %s after", next, again)
			}
			s.t.Logf("next elapse %s: offset %s after the quarter hour", next.Format(time.RFC3339), next.Sub(quarter))
		}) &&
		scenario("timer-driven run", func(s *sys) {
			runs := s.runs()
			s.must("mkdir -p /etc/systemd/system/tierlock.timer.d && printf '[Timer]\\nOnCalendar=\\nOnCalendar=*:*:0/30\\nRandomizedDelaySec=0\\n' > /etc/systemd/system/tierlock.timer.d/test.conf && systemctl daemon-reload")
			since := s.now()
			if !testkit.Poll(75*time.Second, func() bool { return s.runs() != runs && !s.active() }) {
				s.t.Fatal("the timer started no run within 75s (drop-in: every 30s)")
			}
			// From now on the timer stays enabled and active but fires only in 2099, so it
			// does not run beside the scenarios below.
			s.must("printf '[Timer]\\nOnCalendar=\\nOnCalendar=2099-01-01\\n' > /etc/systemd/system/tierlock.timer.d/test.conf && systemctl daemon-reload")
			s.want("systemctl show -p Result --value tierlock.service", "success")
			s.journal(since, "fakechef: done")
			s.released()
		}) &&
		scenario("failing command", func(s *sys) {
			s.must("echo fail > /srv/chef/mode")
			since := s.now()
			if out, err := s.c.run(s.ctx, "systemctl start tierlock.service"); err == nil {
				s.t.Errorf("systemctl start succeeded for a failing command:\n%s", out)
			}
			s.want("systemctl show -p Result --value tierlock.service", "exit-code")
			s.want("systemctl show -p ExecMainStatus --value tierlock.service", "3")
			s.journal(since, "fakechef: failing")
			if r := s.record(); r.State != "failed" || r.ExitCode == nil || *r.ExitCode != 3 {
				s.t.Errorf("slot %+v, want held as failed with exit code 3", r)
			}
			// The next run re-enters the slot and frees it.
			s.must("echo ok > /srv/chef/mode && systemctl start tierlock.service")
			s.released()
		}) &&
		scenario("systemctl stop mid-run", func(s *sys) {
			s.block()
			pid := strings.TrimSpace(s.must("cat /srv/chef/pid"))
			s.must("systemctl stop tierlock.service")
			if r := s.record(); r.State != "interrupted" {
				s.t.Errorf("slot %+v, want held as interrupted", r)
			}
			s.want("test -e /proc/"+pid+" && echo alive || echo gone", "gone")
			s.want("systemctl show -p MainPID --value tierlock.service", "0")
			// Nothing left in the unit's cgroup (minbase has no pgrep).
			s.want("cat /sys/fs/cgroup/system.slice/tierlock.service/cgroup.procs 2>/dev/null | wc -l", "0")
			s.must("echo ok > /srv/chef/mode && systemctl start tierlock.service")
			s.released()
		}) &&
		scenario("upgrade from inside the run", func(s *sys) {
			s.must("echo upgrade > /srv/chef/mode")
			since := s.now()
			s.must("systemctl start tierlock.service")
			s.want("systemctl show -p Result --value tierlock.service", "success")
			s.journal(since, "fakechef: done")
			s.want("systemctl is-enabled tierlock.timer", "enabled")
			s.want("systemctl is-active tierlock.timer", "active")
			s.released()
		}) &&
		scenario("upgrade from outside during a run", func(s *sys) {
			s.block()
			main := s.must("systemctl show -p MainPID --value tierlock.service")
			s.must("dpkg -i /root/tierlock.deb </dev/null")
			s.want("systemctl is-active tierlock.service", "activating")
			if got := s.must("systemctl show -p MainPID --value tierlock.service"); got != main {
				s.t.Errorf("MainPID %s before the upgrade, %s after", main, got)
			}
			s.finish()
			s.want("systemctl show -p Result --value tierlock.service", "success")
			s.want("systemctl is-enabled tierlock.timer", "enabled")
			s.want("systemctl is-active tierlock.timer", "active")
			s.released()
		}) &&
		scenario("dpkg -r during a run", func(s *sys) {
			s.block()
			s.must("dpkg -r tierlock </dev/null")
			s.want("systemctl is-active tierlock.timer", "inactive")
			s.want("systemctl is-active tierlock.service", "activating")
			s.finish()
			s.released()
			// Disabled: no enablement link is left (the unit file itself is gone).
			s.want("test -L /etc/systemd/system/timers.target.wants/tierlock.timer && echo linked || echo none", "none")
		}) &&
		scenario("reinstall after removal", func(s *sys) {
			s.want("dpkg-query -W -f='${Status}' tierlock", "deinstall ok config-files")
			out := s.must("dpkg -i /root/tierlock.deb </dev/null")
			if !strings.Contains(out, "tierlock.timer enabled") {
				s.t.Errorf("install output:\n%s", out)
			}
			s.want("systemctl is-enabled tierlock.timer", "enabled")
			s.want("systemctl is-active tierlock.timer", "active")
		})
	if !ok {
		t.Fatal("a scenario failed; the ones after it did not run")
	}
	// The last two do not depend on each other: both run whatever the other's outcome.
	scenario("consul unreachable", func(s *sys) {
		closed := closedPort(s.t)
		s.must(fmt.Sprintf("sed -i 's|^CONSUL_HTTP_ADDR=.*|CONSUL_HTTP_ADDR=%s|' /etc/default/tierlock && echo TIERLOCK_CONSUL_TIMEOUT=%s >> /etc/default/tierlock",
			closed, consulTimeout))
		runs := s.runs()
		since := s.now()
		s.must("systemctl start tierlock.service")
		s.want("systemctl show -p Result --value tierlock.service", "success")
		s.want("systemctl show -p ExecMainStatus --value tierlock.service", "75")
		took := s.usec("ExecMainExitTimestampMonotonic") - s.usec("ExecMainStartTimestampMonotonic")
		d := time.Duration(took) * time.Microsecond
		s.t.Logf("Consul unreachable, TIERLOCK_CONSUL_TIMEOUT=%s: the unit took %s (bound %s)", consulTimeout, d, consulTimeout*3/2)
		if d > consulTimeout*3/2 {
			s.t.Errorf("the run took %s, over 1.5 x TIERLOCK_CONSUL_TIMEOUT = %s", d, consulTimeout*3/2)
		}
		if s.runs() != runs {
			s.t.Error("the command ran although Consul was unreachable")
		}
		s.journal(since, "")
	})
	scenario("rpm install and erase", func(s *sys) {
		// The .rpm's scriptlets under the same systemd, installed by Debian's rpm (its
		// database knows nothing of the Debian packages, hence --nodeps). The config is
		// there first, as configuration management puts it.
		s.must("dpkg -P tierlock </dev/null && mkdir -p /etc/default && cat > /etc/default/tierlock <<'EOF'\n" + config + "EOF")
		s.must("rpm -i --nodeps --force-debian /root/tierlock.rpm </dev/null")
		s.want("rpm -q --qf '%{NAME}' tierlock", "tierlock")
		s.want("systemctl is-enabled tierlock.timer", "enabled")
		s.want("systemctl is-active tierlock.timer", "active")
		if got := s.must("cat /etc/default/tierlock"); got != strings.TrimSpace(config) {
			s.t.Errorf("/etc/default/tierlock replaced by rpm -i:\n%s", got)
		}
		s.want("test -e /etc/default/tierlock.rpmnew && echo yes", "yes")
		s.must("systemctl start tierlock.service")
		s.released()
		s.must("rpm -e --nodeps --force-debian tierlock </dev/null")
		s.want("systemctl is-active tierlock.timer", "inactive")
		s.want("test -e /usr/bin/tierlock || echo gone", "gone")
		if got := s.must("cat /etc/default/tierlock /etc/default/tierlock.rpmsave 2>/dev/null || true"); got != strings.TrimSpace(config) {
			s.t.Errorf("after rpm -e, the operator's settings: %q, want them kept", got)
		}
	})
}

// sys is what a scenario works with.
type sys struct {
	t   *testing.T
	ctx context.Context
	c   *container
	kv  *api.KV
}

// must runs script in the container and fails the scenario on an error.
func (s *sys) must(script string) string {
	s.t.Helper()
	out, err := s.c.run(s.ctx, script)
	if err != nil {
		s.t.Fatalf("in the container: %s: %v\n%s", script, err, out)
	}
	return strings.TrimSpace(out)
}

// want runs script and checks its trimmed output.
func (s *sys) want(script, want string) {
	s.t.Helper()
	out, _ := s.c.run(s.ctx, script)
	if got := strings.TrimSpace(out); got != want {
		s.t.Errorf("%s: %q, want %q", script, got, want)
	}
}

// now is the container's clock, for journalctl --since.
func (s *sys) now() string { return s.must("date +@%s") }

// journal checks that tierlock.service logged text since then (any line when text is empty),
// waiting a little for journald.
func (s *sys) journal(since, text string) {
	s.t.Helper()
	var out string
	if !testkit.Poll(5*time.Second, func() bool {
		out = s.must("journalctl -u tierlock.service --since " + since + " -o cat --no-pager")
		return text == "" && out != "" && out != "-- No entries --" || text != "" && strings.Contains(out, text)
	}) {
		s.t.Errorf("journal of tierlock.service since %s lacks %q:\n%s", since, text, out)
	}
}

func (s *sys) runs() int { return len(strings.Fields(s.must("cat /srv/chef/runs"))) }

func (s *sys) active() bool {
	out, _ := s.c.run(s.ctx, "systemctl is-active tierlock.service")
	return strings.TrimSpace(out) == "activating"
}

// block starts a run whose command waits for finish.
func (s *sys) block() {
	s.t.Helper()
	s.must("rm -f /srv/chef/started /srv/chef/go && echo block > /srv/chef/mode && systemctl start --no-block tierlock.service")
	if !testkit.Poll(30*time.Second, func() bool {
		out, _ := s.c.run(s.ctx, "test -e /srv/chef/started && echo yes")
		return strings.TrimSpace(out) == "yes"
	}) {
		s.t.Fatalf("the command did not start within 30s:\n%s", s.must("journalctl -u tierlock.service -n 30 -o cat --no-pager"))
	}
}

// finish lets a blocked command end and waits for the unit.
func (s *sys) finish() {
	s.t.Helper()
	s.must("echo ok > /srv/chef/mode && : > /srv/chef/go")
	if !testkit.Poll(30*time.Second, func() bool { return !s.active() }) {
		s.t.Fatal("the run did not end within 30s of its command's end")
	}
}

// nextElapse is when the timer fires next (systemctl prints the container's local time, UTC).
func (s *sys) nextElapse() time.Time {
	s.t.Helper()
	v := s.must("TZ=UTC systemctl show -p NextElapseUSecRealtime --value tierlock.timer")
	next, err := time.Parse("Mon 2006-01-02 15:04:05 MST", v)
	if err != nil {
		s.t.Fatalf("NextElapseUSecRealtime %q: %v", v, err)
	}
	return next
}

func (s *sys) usec(prop string) int64 {
	s.t.Helper()
	n, err := strconv.ParseInt(s.must("systemctl show -p "+prop+" --value tierlock.service"), 10, 64)
	if err != nil {
		s.t.Fatalf("%s: %v", prop, err)
	}
	return n
}

// record is the slot's value in Consul; zero when the slot is free.
type record struct {
	State    string `json:"state"`
	ExitCode *int   `json:"exit_code"`
	RunID    string `json:"run_id"`
}

func (s *sys) record() record {
	s.t.Helper()
	p, _, err := s.kv.Get(keys+"running/"+holder, &api.QueryOptions{RequireConsistent: true})
	if err != nil {
		s.t.Fatal(err)
	}
	var r record
	if p != nil {
		if err := json.Unmarshal(p.Value, &r); err != nil {
			s.t.Fatalf("running/%s: %v: %q", holder, err, p.Value)
		}
	}
	return r
}

// released checks that the slot is free and current 0.
func (s *sys) released() {
	s.t.Helper()
	if r := s.record(); r.State != "" {
		s.t.Errorf("slot still held: %+v", r)
	}
	if p, _, err := s.kv.Get(keys+"current", &api.QueryOptions{RequireConsistent: true}); err != nil || p != nil && string(p.Value) != "0" {
		s.t.Errorf("current %v %v, want 0", p, err)
	}
}

// findDeb is the .deb `make package` built for this machine.
func findDeb(t *testing.T, repo string) string {
	arch := map[string]string{"amd64": "amd64", "arm64": "arm64"}[runtime.GOARCH]
	debs, _ := filepath.Glob(filepath.Join(repo, "dist", "tierlock_*-1_"+arch+".deb"))
	if len(debs) != 1 || !regexp.MustCompile(`tierlock_[0-9][^_]*-1_`).MatchString(debs[0]) {
		t.Fatalf("want one dist/tierlock_VERSION-1_%s.deb, found %q: run `make package` first (make test does)", arch, debs)
	}
	return debs[0]
}

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
