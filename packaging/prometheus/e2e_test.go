package prometheus_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/testkit"
)

// The whole path, with the real tools on loopback: a real node_exporter whose textfile
// collector reads tierlock's files (status's, as the cron line writes it, and a run's
// --metrics-file), scraped by a real Prometheus server with the shipped rules loaded. A healthy
// tier raises nothing; a failed slot makes TierlockSlotFailed appear in /api/v1/alerts, for its
// tier and holder alone.
func TestAlertsEndToEnd(t *testing.T) {
	t.Parallel()
	tools(t, "prometheus", "prometheus-node-exporter")
	textfiles := t.TempDir()
	refresh := func() {
		t.Helper()
		out := must(t, 0, "status", "--format", "prometheus").stdout
		tmp := filepath.Join(textfiles, ".tierlock_tiers.prom.tmp")
		if err := os.WriteFile(tmp, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(textfiles, "tierlock_tiers.prom")); err != nil {
			t.Fatal(err)
		}
	}
	must(t, 0, "run", "--tier", "prod/ok", "--holder", "o-1", "--state-dir", t.TempDir(),
		"--metrics-file", filepath.Join(textfiles, "tierlock_run.prom"), "--", "true")
	must(t, 0, "run", "--tier", "prod/web", "--holder", "w-1", "--state-dir", t.TempDir(), "--", "true")
	refresh()

	exporter := freeAddr(t)
	daemon(t, "prometheus-node-exporter", "--web.listen-address="+exporter, "--collector.disable-defaults",
		"--collector.textfile", "--collector.textfile.directory="+textfiles)
	server := freeAddr(t)
	config := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(config, fmt.Appendf(nil, `global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: node
    static_configs: [{targets: [%q]}]
`, rules, exporter), 0o644); err != nil {
		t.Fatal(err)
	}
	daemon(t, "prometheus", "--config.file="+config, "--storage.tsdb.path="+t.TempDir(),
		"--web.listen-address="+server, "--log.level=warn")
	api := "http://" + server + "/api/v1/"

	// Healthy: once Prometheus holds both tiers' gauges and has evaluated the rules a few times
	// since, nothing fires or is pending.
	var seen []json.RawMessage
	waitFor(t, "Prometheus to scrape tierlock's gauges", func() bool {
		var r struct {
			Data struct {
				Result []json.RawMessage `json:"result"`
			} `json:"data"`
		}
		ok := get(t, api+"query?query="+url.QueryEscape(`{__name__=~"tierlock_tier_current|tierlock_run_last_timestamp_seconds"}`), &r)
		seen = r.Data.Result
		return ok && len(seen) == 3
	}, func() string { return fmt.Sprintf("%s", seen) })
	evaluated(t, api, time.Now())
	if a := alerts(t, api); len(a) != 0 {
		t.Fatalf("healthy tiers, yet alerts: %+v", a)
	}

	// w-1's next run fails: its slot is held, failed.
	must(t, 1, "run", "--tier", "prod/web", "--holder", "w-1", "--state-dir", t.TempDir(), "--", "false")
	refresh()
	var got []promAlert
	waitFor(t, "TierlockSlotFailed for w-1", func() bool {
		got = alerts(t, api)
		return len(got) > 0
	}, func() string { return fmt.Sprintf("%+v", got) })
	evaluated(t, api, time.Now())
	got = alerts(t, api)
	if len(got) != 1 {
		t.Fatalf("alerts %+v, want TierlockSlotFailed for w-1 alone", got)
	}
	a := got[0]
	if a.Labels["alertname"] != "TierlockSlotFailed" || a.Labels["tier"] != "prod/web" || a.Labels["holder"] != "w-1" ||
		a.Labels["state"] != "failed" || a.Labels["severity"] != "warning" || (a.State != "pending" && a.State != "firing") {
		t.Errorf("alert %+v, want TierlockSlotFailed warning for prod/web w-1, pending or firing", a)
	}
	if s := a.Annotations["summary"]; !strings.Contains(s, "w-1") || !strings.Contains(s, "prod/web") {
		t.Errorf("summary %q names neither the holder nor the tier", s)
	}
	t.Logf("%s %s: %s", a.Labels["alertname"], a.State, a.Annotations["summary"])
}

// promAlert is one alert of /api/v1/alerts.
type promAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
}

func alerts(t *testing.T, api string) []promAlert {
	t.Helper()
	var r struct {
		Data struct {
			Alerts []promAlert `json:"alerts"`
		} `json:"data"`
	}
	if !get(t, api+"alerts", &r) {
		t.Fatal("GET /api/v1/alerts failed")
	}
	return r.Data.Alerts
}

// get decodes the JSON at u into v; false when the server does not answer (yet).
func get(t *testing.T, u string, v any) bool {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return false
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v\n%s", u, err, b)
	}
	return true
}

// waitFor is testkit.Eventually that also says what it saw last when it gives up.
func waitFor(t *testing.T, what string, ok func() bool, seen func() string) {
	t.Helper()
	if !testkit.Poll(testkit.Wait, ok) {
		t.Fatalf("waited %s for %s; last saw %s", testkit.Wait, what, seen())
	}
}

// evaluated waits until Prometheus has evaluated every rule group three times (at 1s
// intervals) since the moment given: an alert that a state raises is pending by then. A fixed
// sleep would pass on a machine too busy to evaluate anything in it.
func evaluated(t *testing.T, api string, since time.Time) {
	t.Helper()
	var last []time.Time
	if !testkit.Poll(testkit.Wait, func() bool {
		var r struct {
			Data struct {
				Groups []struct {
					LastEvaluation time.Time `json:"lastEvaluation"`
				} `json:"groups"`
			} `json:"data"`
		}
		if !get(t, api+"rules", &r) || len(r.Data.Groups) == 0 {
			return false
		}
		last = last[:0]
		for _, g := range r.Data.Groups {
			last = append(last, g.LastEvaluation)
		}
		for _, at := range last {
			if at.Before(since.Add(3 * time.Second)) {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("Prometheus did not evaluate its rules three times since %s: last evaluations %v", since.Format(time.RFC3339Nano), last)
	}
}

// freeAddr is a free port on loopback.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// daemon starts name args, its output in the test's log on failure, and stops it (this process
// alone, by its pid) when the test ends.
func daemon(t *testing.T, name string, args ...string) {
	t.Helper()
	log, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("%s output:\n%s", name, b)
		}
		log.Close()
	})
}
