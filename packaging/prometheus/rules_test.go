package prometheus_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// rule is one alerting rule of the shipped file.
type rule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func loadRules(t *testing.T) []rule {
	t.Helper()
	b, err := os.ReadFile(rules)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []rule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	var out []rule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

// promtool check rules accepts the file.
func TestRulesCheck(t *testing.T) {
	tools(t, "promtool")
	out, err := exec.Command("promtool", "check", "rules", rules).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// Every rule has a severity of check's (warning or critical) and a tier label (from its series,
// or its own when it concerns no one tier), and a summary and description that name the tier.
// A rollout's alerts also name the revision.
func TestRulesLabels(t *testing.T) {
	rs := loadRules(t)
	if len(rs) == 0 {
		t.Fatal("no rules")
	}
	for _, r := range rs {
		if s := r.Labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
		}
		for _, a := range []string{"summary", "description"} {
			text := r.Annotations[a]
			if !strings.Contains(text, "$labels.tier") && !strings.Contains(text, "$labels.instance") {
				t.Errorf("%s: its %s names no tier (nor, for a rule of no one tier, the instance): %q", r.Alert, a, text)
			}
			if r.Labels["tier"] == "" && !strings.Contains(text, "$labels.tier") {
				t.Errorf("%s: no tier label of its own, and its %s does not name its series' tier", r.Alert, a)
			}
		}
	}
	for _, r := range rs {
		if !strings.Contains(r.Expr, "tierlock_rollout_") {
			continue
		}
		for _, a := range []string{"summary", "description"} {
			if !strings.Contains(r.Annotations[a], "$labels.revision") {
				t.Errorf("%s: its %s does not name the revision", r.Alert, a)
			}
		}
	}
}

// Each alert fires, and does not, in promtool's unit tests over a real tierlock state held
// still for 26 hours: at every evaluation time, the firing alerts of every rule are exactly the
// expected ones, annotations included. node_exporter refreshes the textfile every minute in
// the first test; in the second it stops (status can no longer write it).
func TestRulesUnit(t *testing.T) {
	t.Parallel()
	tools(t, "promtool")
	st := realState(t)
	in := toSeries(t, st.status, "monitor:9100", st.at)
	in = append(in, toSeries(t, st.run, "h-1:9100", st.at)...)
	// The gauges the rules read pass Prometheus' own linter.
	for _, text := range []string{st.status, st.run} {
		lint := exec.Command("promtool", "check", "metrics")
		lint.Stdin = strings.NewReader(text)
		if out, err := lint.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}
	const samples = 26 * 60
	mtime := series{name: "node_textfile_mtime_seconds", labels: map[string]string{"file": "tierlock_tiers.prom", "instance": "monitor:9100", "job": "node"}}

	rs := loadRules(t)
	var names []string
	seen := map[string]bool{}
	for _, r := range rs {
		if !seen[r.Alert] {
			seen[r.Alert] = true
			names = append(names, r.Alert)
		}
	}
	find := func(name string, match map[string]string) series {
		t.Helper()
		for _, s := range in {
			if s.name != name {
				continue
			}
			ok := true
			for k, v := range match {
				ok = ok && s.labels[k] == v
			}
			if ok {
				return s
			}
		}
		t.Fatalf("no series %s%v in the state", name, match)
		return series{}
	}
	// holders lists a tier's holders as the rules' query does.
	holders := func(tier string) string {
		var hs []string
		for _, s := range in {
			if s.name == "tierlock_holder_started_timestamp_seconds" && s.labels["tier"] == tier {
				hs = append(hs, s.labels["holder"]+" ("+s.labels["state"]+")")
			}
		}
		sort.Strings(hs)
		if len(hs) == 0 {
			return "none"
		}
		return strings.Join(hs, ", ")
	}
	labelRe := regexp.MustCompile(`\{\{ \$labels\.(\w+) \}\}`)
	// alert is what one firing alert must look like: its series' labels, the rule's, and the
	// rule's annotations expanded for them.
	alert := func(name, severity string, s series, value float64) expAlert {
		t.Helper()
		var r *rule
		for i := range rs {
			if rs[i].Alert == name && rs[i].Labels["severity"] == severity {
				r = &rs[i]
			}
		}
		if r == nil {
			t.Fatalf("no rule %s with severity %s", name, severity)
		}
		labels := map[string]string{}
		for k, v := range s.labels {
			labels[k] = v
		}
		for k, v := range r.Labels {
			labels[k] = v
		}
		ann := map[string]string{}
		for k, text := range r.Annotations {
			text = strings.ReplaceAll(text, `{{ with query (printf "tierlock_holder_started_timestamp_seconds{tier=%q}" $labels.tier) }}{{ range $i, $h := sortByLabel "holder" . }}{{ if $i }}, {{ end }}{{ $h.Labels.holder }} ({{ $h.Labels.state }}){{ end }}{{ else }}none{{ end }}`, holders(labels["tier"]))
			if strings.Contains(text, "tierlock_tier_running_keys") {
				keys := find("tierlock_tier_running_keys", map[string]string{"tier": labels["tier"]})
				text = strings.ReplaceAll(text, `{{ with query (printf "tierlock_tier_running_keys{tier=%q}" $labels.tier) }}{{ . | first | value }}{{ end }}`, strconv.FormatFloat(keys.value, 'g', -1, 64))
			}
			text = strings.ReplaceAll(text, "{{ $value }}", strconv.FormatFloat(value, 'g', -1, 64))
			text = labelRe.ReplaceAllStringFunc(text, func(m string) string {
				l := labelRe.FindStringSubmatch(m)[1]
				v, ok := labels[l]
				if !ok {
					t.Errorf("%s: annotation %s names label %s, which its alerts lack", name, k, l)
				}
				return v
			})
			if strings.Contains(text, "{{") {
				t.Fatalf("%s: annotation %s has a template this test cannot expand: %q", name, k, text)
			}
			ann[k] = text
		}
		return expAlert{Labels: labels, Annotations: ann}
	}
	holder := func(name, severity, h string) expAlert {
		return alert(name, severity, find("tierlock_holder_started_timestamp_seconds", map[string]string{"holder": h}), 0)
	}
	tierAlert := func(name, severity, metric, tier string) expAlert {
		s := find(metric, map[string]string{"tier": tier})
		return alert(name, severity, s, s.value)
	}
	converged := func(severity, h string) expAlert {
		return alert("TierlockHostNotConverged", severity, find("tierlock_host_last_converged_timestamp_seconds", map[string]string{"holder": h}), 0)
	}

	// What fires at time at of the state held still: check's thresholds and the rules' for.
	expected := func(at time.Duration) map[string][]expAlert {
		want := map[string][]expAlert{}
		add := func(name string, a ...expAlert) { want[name] = append(want[name], a...) }
		if at > time.Hour {
			add("TierlockSlotStale", holder("TierlockSlotStale", "warning", "r-1"))
		}
		if at > 2*time.Hour {
			add("TierlockSlotStale", holder("TierlockSlotStale", "critical", "r-1"))
		}
		for _, h := range []string{"f-1", "i-1", "d-1", "k-1"} {
			add("TierlockSlotFailed", holder("TierlockSlotFailed", "warning", h))
			if at > 2*time.Hour {
				add("TierlockSlotFailed", holder("TierlockSlotFailed", "critical", h))
			}
		}
		if at >= 5*time.Minute {
			add("TierlockCurrentDrift", tierAlert("TierlockCurrentDrift", "critical", "tierlock_tier_current", "prod/drift"))
			add("TierlockTierInvalid", tierAlert("TierlockTierInvalid", "critical", "tierlock_tier_invalid", "prod/invalid"))
			add("TierlockSuspectKeys", tierAlert("TierlockSuspectKeys", "warning", "tierlock_tier_suspect_keys", "prod/suspect"))
			add("TierlockClockAhead", holder("TierlockClockAhead", "critical", "c-1"))
			add("TierlockClockAhead", alert("TierlockClockAhead", "warning", find("tierlock_tier_queue_head_since_timestamp_seconds", map[string]string{"holder": "c-2"}), 0))
		}
		if at > 15*time.Minute {
			add("TierlockQueueStuck", alert("TierlockQueueStuck", "warning", find("tierlock_tier_queue_head_since_timestamp_seconds", map[string]string{"holder": "r-2"}), 0))
		}
		if at > 3*time.Hour {
			add("TierlockTimerStopped", alert("TierlockTimerStopped", "warning", find("tierlock_run_last_timestamp_seconds", map[string]string{"instance": "h-1:9100"}), 0))
		}
		// x-1 converged too, but its tier is disabled: exempt, as in check.
		for _, h := range []string{"h-1", "h-2", "v-1", "s-1"} {
			if at > 4*time.Hour {
				add("TierlockHostNotConverged", converged("warning", h))
			}
			if at > 24*time.Hour {
				add("TierlockHostNotConverged", converged("critical", h))
			}
		}
		// k-1's canary failed: its revision is halted at once. n-1's failed too, below the
		// limit, and its slot was released: a canary without a success, which warns past 2h.
		add("TierlockRolloutHalted", alert("TierlockRolloutHalted", "critical",
			find("tierlock_rollout_state", map[string]string{"tier": "prod/halted", "state": "halted"}), 1))
		if at > 2*time.Hour {
			add("TierlockRolloutCanaryStuck", alert("TierlockRolloutCanaryStuck", "warning",
				find("tierlock_rollout_since_timestamp_seconds", map[string]string{"tier": "prod/canary"}), 0))
		}
		if at > 24*time.Hour {
			add("TierlockTierDisabledLong", tierAlert("TierlockTierDisabledLong", "warning", "tierlock_tier_disabled_timestamp_seconds", "prod/disabled"))
		}
		return want
	}
	// No evaluation time lies within a minute of a threshold, so that the seconds the scenario
	// took cannot move an alert across one.
	times := []time.Duration{3 * time.Minute, 10 * time.Minute, 59 * time.Minute, 70 * time.Minute, 110 * time.Minute,
		130 * time.Minute, 170 * time.Minute, 190 * time.Minute, 230 * time.Minute, 250 * time.Minute, 1400 * time.Minute, 1450 * time.Minute}
	fired := map[string]bool{}
	live := unitTest{Interval: "1m", Name: "tierlock state held still, textfile refreshed"}
	for _, s := range append(in, mtime) {
		values := fmt.Sprintf("%s+0x%d", strconv.FormatFloat(s.value, 'f', -1, 64), samples)
		if s.name == mtime.name {
			values = fmt.Sprintf("0+60x%d", samples) // rewritten every minute
		}
		live.InputSeries = append(live.InputSeries, inputSeries{Series: s.String(), Values: values})
	}
	for _, at := range times {
		want := expected(at)
		for _, name := range names {
			exp := want[name]
			if exp == nil {
				exp = []expAlert{}
			}
			for _, a := range exp {
				fired[name+" "+a.Labels["severity"]] = true
			}
			live.Alerts = append(live.Alerts, alertTest{EvalTime: promDuration(at), Alertname: name, ExpAlerts: exp})
		}
	}
	// The textfile no longer refreshed: status stale past 10 minutes.
	stale := unitTest{Interval: "1m", Name: "textfile no longer refreshed",
		InputSeries: []inputSeries{{Series: mtime.String(), Values: "0x30"}}}
	stale.Alerts = append(stale.Alerts,
		alertTest{EvalTime: "9m", Alertname: "TierlockStatusStale", ExpAlerts: []expAlert{}},
		alertTest{EvalTime: "11m", Alertname: "TierlockStatusStale", ExpAlerts: []expAlert{alert("TierlockStatusStale", "warning", mtime, 0)}})
	fired["TierlockStatusStale warning"] = true
	for _, r := range rs {
		if !fired[r.Alert+" "+r.Labels["severity"]] {
			t.Errorf("%s (%s) never fires in these tests", r.Alert, r.Labels["severity"])
		}
	}

	doc, err := json.MarshalIndent(unitFile{RuleFiles: []string{rules}, EvaluationInterval: "1m", Tests: []unitTest{live, stale}}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tierlock-rules.test.yml")
	if err := os.WriteFile(path, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("promtool", "test", "rules", path).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s\nthe state, from status --format prometheus:\n%s", err, out, st.status)
	}
	t.Logf("promtool test rules: %d series, %d alert checks: %s", len(live.InputSeries), len(live.Alerts)+len(stale.Alerts), strings.TrimSpace(string(out)))
}

// The unit test file of promtool (JSON is YAML).
type unitFile struct {
	RuleFiles          []string   `json:"rule_files"`
	EvaluationInterval string     `json:"evaluation_interval"`
	Tests              []unitTest `json:"tests"`
}

type unitTest struct {
	Name        string        `json:"name"`
	Interval    string        `json:"interval"`
	InputSeries []inputSeries `json:"input_series"`
	Alerts      []alertTest   `json:"alert_rule_test"`
}

type inputSeries struct {
	Series string `json:"series"`
	Values string `json:"values"`
}

type alertTest struct {
	EvalTime  string     `json:"eval_time"`
	Alertname string     `json:"alertname"`
	ExpAlerts []expAlert `json:"exp_alerts"`
}

type expAlert struct {
	Labels      map[string]string `json:"exp_labels"`
	Annotations map[string]string `json:"exp_annotations"`
}

func promDuration(d time.Duration) string { return fmt.Sprintf("%dm", int(d.Minutes())) }
