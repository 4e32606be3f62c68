package prometheus_test

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tierlock/tierlock/internal/testkit"
)

// state is a real tierlock state, as its gauges show it.
type state struct {
	status string    // `tierlock status --format prometheus`
	run    string    // h-1's `run --metrics-file` in prod/healthy
	at     time.Time // just before status read Consul
}

// realState runs one scenario per tier of the test's prefix, with the tierlock binary against
// the real agent, and reads the result back as the cron line of docs/operating.md would:
//
//	prod/healthy      h-1 and h-2 converged (h-1 with --metrics-file); nothing held
//	prod/failed       f-1's run failed (exit 1): its slot is held, failed
//	prod/interrupted  i-1's run timed out: held, interrupted
//	prod/running      max 1: r-1 runs (a long sleep), r-2 waits for the slot
//	prod/drift        d-1 failed, then a foreign tool wrote current 2 (one running/ key)
//	prod/invalid      v-1 converged, then max_concurrent was set to "abc" by hand
//	prod/disabled     x-1 converged, then the tier was disabled with a reason
//	prod/suspect      s-1 converged; a queue entry without a session was written by hand
//	prod/clock        a slot whose record starts 48h in the future (a host's clock is wrong),
//	                  and a waiter whose entry does too
//	prod/halted       k-1, the canary of revision c0ffee1, failed: the revision is halted, k-1's
//	                  slot held, failed
//	prod/canary       a failure limit of 2; n-1, the canary of revision b0b0b0b, failed (one
//	                  failure: not halted) and its slot was released: a canary without a success
//
// Nothing is faked: every gauge is what status makes of what Consul holds.
func realState(t *testing.T) state {
	t.Helper()
	_, client := agents.Get(t)
	kv := client.KV()
	put := func(key, value string) {
		t.Helper()
		if _, err := kv.Put(&api.KVPair{Key: testkit.Prefix(t) + "/" + key, Value: []byte(value)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	run := func(code int, tier, holder string, args ...string) {
		t.Helper()
		full := append([]string{"run", "--tier", tier, "--holder", holder, "--state-dir", t.TempDir()}, args...)
		must(t, code, full...)
	}
	runProm := filepath.Join(t.TempDir(), "tierlock_run.prom")

	run(0, "prod/healthy", "h-1", "--metrics-file", runProm, "--", "true")
	run(0, "prod/healthy", "h-2", "--", "true")
	run(1, "prod/failed", "f-1", "--", "false")
	run(143, "prod/interrupted", "i-1", "--timeout", "1s", "--kill-grace", "1s", "--", "sleep", "30")
	run(1, "prod/drift", "d-1", "--", "false")
	put("prod/drift/current", "2")
	run(0, "prod/invalid", "v-1", "--", "true")
	put("prod/invalid/max_concurrent", "abc")
	run(0, "prod/disabled", "x-1", "--", "true")
	must(t, 0, "disable", "--tier", "prod/disabled", "--reason", "incident 4711")
	run(0, "prod/suspect", "s-1", "--", "true")
	put("prod/suspect/queue/ghost", `{"holder":"ghost"}`)
	ahead := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	put("prod/clock/current", "1")
	put("prod/clock/running/c-1", fmt.Sprintf(`{"holder":"c-1","hostname":"c-1","pid":1,"state":"running","started_at":%q,"updated_at":%q,"exit_code":null,"attempts":1,"command":"chef-client","run_id":"0badc10c","version":"tierlock 0.1.0"}`, ahead, ahead))
	// and a waiter behind it on a host whose clock is as wrong, its entry bound to its session.
	session, _, err := client.Session().Create(&api.SessionEntry{TTL: "10m", Behavior: api.SessionBehaviorDelete}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Session().Destroy(session, nil) })
	if ok, _, err := kv.Acquire(&api.KVPair{Key: testkit.Prefix(t) + "/prod/clock/queue/c-2", Session: session,
		Value: fmt.Appendf(nil, `{"holder":"c-2","run_id":"0badc10d","since":%q}`, ahead)}, nil); err != nil || !ok {
		t.Fatalf("queue/c-2: %v %v", ok, err)
	}

	run(1, "prod/halted", "k-1", "--revision", "c0ffee1", "--", "false")
	must(t, 0, "rollout", "policy", "--tier", "prod/canary", "--failures", "2")
	run(1, "prod/canary", "n-1", "--revision", "b0b0b0b", "--", "false")
	must(t, 0, "release", "--tier", "prod/canary", "--holder", "n-1", "--reason", "looked")

	// A run in progress and one waiting behind it, stopped (SIGTERM, by pid) once read.
	must(t, 0, "set-max", "--tier", "prod/running", "1")
	start := func(holder string, args ...string) {
		t.Helper()
		cmd := tierlock(t, append([]string{"run", "--tier", "prod/running", "--holder", holder, "--state-dir", t.TempDir()}, args...)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		})
	}
	appear := func(key string) {
		t.Helper()
		testkit.Eventually(t, key+" to appear", func() bool {
			p, _, err := kv.Get(testkit.Prefix(t)+"/"+key, nil)
			return err == nil && p != nil
		})
	}
	start("r-1", "--", "sleep", "120")
	appear("prod/running/running/r-1")
	start("r-2", "--wait", "5m", "--", "true")
	appear("prod/running/queue/r-2")

	s := state{at: time.Now()}
	s.status = must(t, 0, "status", "--format", "prometheus").stdout
	var b []byte
	b, err = os.ReadFile(runProm)
	if err != nil {
		t.Fatal(err)
	}
	s.run = string(b)
	return s
}

// series is one input series of a promtool unit test.
type series struct {
	name   string
	labels map[string]string // without __name__
	value  float64           // constant over the test, *_timestamp_seconds relative to its start
}

func (s series) String() string {
	keys := make([]string, 0, len(s.labels))
	for k := range s.labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+"="+strconv.Quote(s.labels[k]))
	}
	return s.name + "{" + strings.Join(parts, ",") + "}"
}

// toSeries turns a textfile into the series Prometheus would hold after scraping it through
// node_exporter at instance, as the state stays: each value constant, except that times are
// moved so that at is the unit test's time 0 (promtool's clock starts at the Unix epoch), which
// keeps every age the rules compute (a 0, "since when is unknown", stays the distant past).
func toSeries(t *testing.T, text, instance string, at time.Time) []series {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse:\n%s\n%v", text, err)
	}
	var out []series
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			s := series{name: name, labels: map[string]string{"instance": instance, "job": "node"}, value: m.GetGauge().GetValue()}
			for _, l := range m.GetLabel() {
				s.labels[l.GetName()] = l.GetValue()
			}
			if strings.HasSuffix(name, "_timestamp_seconds") {
				s.value = math.Round((s.value-float64(at.UnixMilli())/1000)*1000) / 1000
			}
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}
