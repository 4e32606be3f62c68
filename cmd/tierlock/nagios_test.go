package main_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/testkit"
)

const nagiosBin = "/usr/sbin/nagios4"

// TestNagiosEndToEnd runs the real Nagios core against `tierlock check`: a stale slot turns the
// service CRITICAL (HARD) with its perfdata parsed, and after `tierlock release` it recovers.
func TestNagiosEndToEnd(t *testing.T) {
	if _, err := os.Stat(nagiosBin); err != nil {
		if _, aptErr := exec.LookPath("apt-get"); aptErr != nil || os.Geteuid() != 0 {
			t.Skip("the Nagios core (nagios4-core) is not installed and apt is unavailable here")
		}
		t.Fatal("nagios4-core is missing: run `make test-deps`")
	}
	// A slot held by a run that started an hour ago and never finished.
	put(t, "max_concurrent", "2")
	put(t, "current", "1")
	put(t, "running/web-3", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339))

	dir := t.TempDir()
	cfg := writeNagiosConfig(t, dir, fmt.Sprintf("/usr/bin/env CONSUL_HTTP_ADDR=%s %s check --prefix %s -w 60 -c 120",
		agentAddr(t), bin(t), testkit.Prefix(t)))
	if out, err := exec.Command(nagiosBin, "-v", cfg).CombinedOutput(); err != nil {
		t.Fatalf("nagios -v: %v\n%s", err, out)
	}
	nagios := exec.Command(nagiosBin, cfg)
	var out bytes.Buffer
	nagios.Stdout, nagios.Stderr = &out, &out
	if err := nagios.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = nagios.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = nagios.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = nagios.Process.Kill()
			<-done
		}
	}()

	logPath := filepath.Join(dir, "nagios.log")
	critical := regexp.MustCompile(`SERVICE ALERT: consul;tierlock;CRITICAL;HARD;\d+;TIERLOCK CRITICAL - 1 tiers, 1 slots held`)
	waitLog(t, logPath, critical, &out)
	// Nagios writes the perfdata file on its own schedule, after it has logged the alert: wait
	// for the HARD line rather than read the file at once (which once found only the SOFT one).
	waitLog(t, filepath.Join(dir, "service-perfdata"),
		regexp.MustCompile(`tierlock\tCRITICAL\tHARD\ttiers=1 held=1 failed=0 oldest_age=3\d\d\ds;60;120;0`), &out)

	wantCode(t, tl(t, "release", "--tier", tier, "--holder", "web-3"), 0)
	recovered := regexp.MustCompile(`SERVICE ALERT: consul;tierlock;OK;HARD;\d+;TIERLOCK OK - 1 tiers, 0 slots held`)
	waitLog(t, logPath, recovered, &out)
}

func waitLog(t *testing.T, path string, re *regexp.Regexp, out *bytes.Buffer) {
	t.Helper()
	var b []byte
	if !testkit.Poll(testkit.Wait, func() bool { b, _ = os.ReadFile(path); return re.Match(b) }) {
		t.Fatalf("Nagios never logged %s\nlog:\n%s\noutput:\n%s", re, b, out)
	}
	t.Logf("nagios.log: %s", re.Find(b))
}

// writeNagiosConfig writes a scratch Nagios setup whose one service runs check, every second.
func writeNagiosConfig(t *testing.T, dir, check string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "checkresults"), 0o755); err != nil {
		t.Fatal(err)
	}
	main := strings.ReplaceAll(`log_file=DIR/nagios.log
cfg_file=DIR/objects.cfg
object_cache_file=DIR/objects.cache
precached_object_file=DIR/objects.precache
resource_file=DIR/resource.cfg
status_file=DIR/status.dat
status_update_interval=1
nagios_user=root
nagios_group=root
check_external_commands=0
command_file=DIR/nagios.cmd
lock_file=DIR/nagios.lock
temp_file=DIR/nagios.tmp
temp_path=DIR
check_result_path=DIR/checkresults
retain_state_information=0
state_retention_file=DIR/retention.dat
interval_length=1
service_inter_check_delay_method=n
host_inter_check_delay_method=n
max_service_check_spread=1
max_host_check_spread=1
check_result_reaper_frequency=1
max_check_result_reaper_time=1
execute_service_checks=1
execute_host_checks=1
enable_notifications=0
enable_flap_detection=0
process_performance_data=1
service_perfdata_file=DIR/service-perfdata
service_perfdata_file_template=$SERVICEDESC$	$SERVICESTATE$	$SERVICESTATETYPE$	$SERVICEPERFDATA$
service_perfdata_file_mode=a
log_initial_states=1
use_syslog=0
log_notifications=0
enable_environment_macros=0
`, "DIR", dir)
	objects := `define timeperiod {
  timeperiod_name always
  alias always
  sunday 00:00-24:00
  monday 00:00-24:00
  tuesday 00:00-24:00
  wednesday 00:00-24:00
  thursday 00:00-24:00
  friday 00:00-24:00
  saturday 00:00-24:00
}
define command {
  command_name check_true
  command_line /bin/true
}
define command {
  command_name check_tierlock
  command_line ` + check + `
}
define contact {
  contact_name nobody
  host_notifications_enabled 0
  service_notifications_enabled 0
  host_notification_period always
  service_notification_period always
  host_notification_options n
  service_notification_options n
  host_notification_commands check_true
  service_notification_commands check_true
}
define host {
  host_name consul
  address 127.0.0.1
  check_command check_true
  max_check_attempts 1
  check_interval 60
  check_period always
  notification_period always
  contacts nobody
}
define service {
  host_name consul
  service_description tierlock
  check_command check_tierlock
  max_check_attempts 2
  check_interval 1
  retry_interval 1
  check_period always
  notification_period always
  contacts nobody
}
`
	for name, body := range map[string]string{"nagios.cfg": main, "objects.cfg": objects, "resource.cfg": "$USER1$=/usr/lib/nagios/plugins\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "nagios.cfg")
}
