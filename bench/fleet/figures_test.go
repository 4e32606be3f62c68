package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"math"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name, method, path, query, body string
		kind                            string
		raft                            bool
	}{
		{"consistent list", "GET", "/v1/kv/chef/a/b/", "recurse=&consistent=", "", "kv list", false},
		{"blocking get", "GET", "/v1/kv/chef/a/b/current", "index=7&wait=60000ms", "", "kv get (blocking)", false},
		{"blocking list", "GET", "/v1/kv/p", "recurse=&index=7", "", "kv list (blocking)", false},
		{"acquire", "PUT", "/v1/kv/p/sess", "acquire=sess", "", "kv acquire", true},
		{"cas", "PUT", "/v1/kv/p/.lock", "cas=9&flags=1", "", "kv cas", true},
		{"delete", "DELETE", "/v1/kv/p/sess", "", "", "kv delete", true},
		{"session create", "PUT", "/v1/session/create", "", "", "session create", true},
		{"session renew", "PUT", "/v1/session/renew/abc", "", "", "session renew", false},
		{"session destroy", "PUT", "/v1/session/destroy/abc", "", "", "session destroy", true},
		{"agent self", "GET", "/v1/agent/self", "", "", "GET /v1/agent/self", false},
		{"join", "PUT", "/v1/txn", "", `[{"KV":{"Verb":"delete","Key":"c/a/b/queue/h"}},{"KV":{"Verb":"lock","Key":"c/a/b/queue/h"}},{"KV":{"Verb":"get-tree","Key":"c/a/b/"}}]`, "txn join queue", true},
		{"take", "PUT", "/v1/txn", "", `[{"KV":{"Verb":"check-index","Key":"c/a/b/max_concurrent"}},{"KV":{"Verb":"cas","Key":"c/a/b/running/h"}},{"KV":{"Verb":"cas","Key":"c/a/b/current"}}]`, "txn take slot", true},
		{"release", "PUT", "/v1/txn", "", `[{"KV":{"Verb":"delete-cas","Key":"c/a/b/running/h"}},{"KV":{"Verb":"cas","Key":"c/a/b/current"}}]`, "txn release slot", true},
		{"release and hand over", "PUT", "/v1/txn", "", `[{"KV":{"Verb":"check-index","Key":"c/a/b/running/h"}},{"KV":{"Verb":"delete-cas","Key":"c/a/b/running/h"}},{"KV":{"Verb":"check-index","Key":"c/a/b/queue/w"}},{"KV":{"Verb":"cas","Key":"c/a/b/queue/w"}},{"KV":{"Verb":"cas","Key":"c/a/b/running/w"}}]`, "txn release and hand over", true},
		{"hand over alone", "PUT", "/v1/txn", "", `[{"KV":{"Verb":"check-index","Key":"c/a/b/queue/w"}},{"KV":{"Verb":"delete-cas","Key":"c/a/b/queue/w"}},{"KV":{"Verb":"cas","Key":"c/a/b/running/w"}},{"KV":{"Verb":"cas","Key":"c/a/b/current"}}]`, "txn hand over", true},
		{"take and hand over", "PUT", "/v1/txn", "", `[{"KV":{"Verb":"cas","Key":"c/a/b/running/h"}},{"KV":{"Verb":"check-index","Key":"c/a/b/queue/w"}},{"KV":{"Verb":"cas","Key":"c/a/b/queue/w"}},{"KV":{"Verb":"cas","Key":"c/a/b/running/w"}},{"KV":{"Verb":"delete","Key":"c/a/b/queue/h"}}]`, "txn take slot and hand over", true},
		{"read-only txn", "PUT", "/v1/txn", "", `[{"KV":{"Verb":"get-tree","Key":"c/a/b/"}}]`, "txn read", false},
		{"line read", "PUT", "/v1/txn", "", `[{"KV":{"Verb":"get-tree","Key":"p/t/max_concurrent"}},{"KV":{"Verb":"get-tree","Key":"p/t/queue/"}}]`, "txn read (line)", false},
		{"release read", "PUT", "/v1/txn", "", `[{"KV":{"Verb":"get-tree","Key":"p/t/line_head"}},{"KV":{"Verb":"get-tree","Key":"p/t/running/"}},{"KV":{"Verb":"get-tree","Key":"p/t/queue/h1"}}]`, "txn read (own keys, head)", false},
		{"first look", "PUT", "/v1/txn", "", `[{"KV":{"Verb":"get-tree","Key":"p/t/running/"}},{"KV":{"Verb":"get-tree","Key":"p/t/queue/h1"}}]`, "txn read (own keys)", false},
		{"index checks", "PUT", "/v1/txn", "", `[{"KV":{"Verb":"check-index","Key":"p/t/queue/h1","Index":4}},{"KV":{"Verb":"check-index","Key":"p/t/queue/h2","Index":5}}]`, "txn read (index checks)", false},
		{"other write txn", "PUT", "/v1/txn", "", `[{"KV":{"Verb":"set","Key":"c/a/b/max_concurrent"}}]`, "txn write", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, _ := url.ParseQuery(tc.query)
			kind, raft := classify(tc.method, tc.path, q, []byte(tc.body))
			if kind != tc.kind || raft != tc.raft {
				t.Errorf("got %q raft=%v, want %q raft=%v", kind, raft, tc.kind, tc.raft)
			}
		})
	}
}

// What the host's own agent answers is counted apart from what reaches the servers.
func TestCountsPlus(t *testing.T) {
	a := counts{"txn read": {Requests: 2, Bytes: 10, Errors: 1}, "txn take slot": {Requests: 1, Raft: true, Refused: 1, Lost: map[string]int64{"current": 1}}}
	b := counts{"txn take slot": {Requests: 3, Raft: true, Refused: 2, Lost: map[string]int64{"current": 1, "running/": 1}}, "GET /v1/agent/self": {Requests: 4, Local: true}}
	got := a.plus(b)
	want := counts{
		"txn read":           {Requests: 2, Bytes: 10, Errors: 1},
		"txn take slot":      {Requests: 4, Raft: true, Refused: 3, Lost: map[string]int64{"current": 2, "running/": 1}},
		"GET /v1/agent/self": {Requests: 4, Local: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("plus = %+v, want %+v", got, want)
	}
	if a["txn take slot"].Lost["current"] != 1 {
		t.Errorf("plus changed its operand: %+v", a)
	}
}

func TestTotalsKeepAgentLocalApart(t *testing.T) {
	c := counts{
		"txn take slot":      {Requests: 10, Bytes: 1000, Raft: true},
		"txn read":           {Requests: 20, Bytes: 4000, Errors: 1},
		"GET /v1/agent/self": {Requests: 10, Bytes: 90000, Errors: 2, Local: true},
	}
	req, raft, bytes, errs, local := c.totals()
	if req != 30 || raft != 10 || bytes != 5000 || errs != 3 || local != 10 {
		t.Errorf("totals = %d requests, %d raft, %d bytes, %d errors, %d agent-local; want 30, 10, 5000, 3, 10", req, raft, bytes, errs, local)
	}
	if !agentLocal("/v1/agent/self") || agentLocal("/v1/agent/metrics") || agentLocal("/v1/kv/agent/self") {
		t.Error("agentLocal")
	}
}

func TestParsers(t *testing.T) {
	status := "Name:\tconsul\nVmPeak:\t 900 kB\nVmHWM:\t  102400 kB\nVmRSS:\t 5120 kB\n"
	mib, err := parseStatusMiB(strings.NewReader(status), "VmHWM")
	if err != nil || mib != 100 {
		t.Errorf("parseStatusMiB VmHWM = %v, %v; want 100", mib, err)
	}
	if mib, err := parseStatusMiB(strings.NewReader(status), "VmRSS"); err != nil || mib != 5 {
		t.Errorf("parseStatusMiB VmRSS = %v, %v; want 5", mib, err)
	}
	prom := "# HELP consul_raft_apply x\n# TYPE consul_raft_apply counter\nconsul_raft_apply 41\nconsul_raft_apply_total 9\nconsul_raft_applied_index 77\n"
	if n, err := parsePromCounter(strings.NewReader(prom), "consul_raft_apply"); err != nil || n != 41 {
		t.Errorf("parsePromCounter = %v, %v; want 41", n, err)
	}
	if _, err := parsePromCounter(strings.NewReader("other 1\n"), "consul_raft_apply"); err == nil {
		t.Error("parsePromCounter found a metric that is not there")
	}
}

func TestTiming(t *testing.T) {
	at := func(ms int) time.Time { return time.Unix(1000, 0).Add(time.Duration(ms) * time.Millisecond) }
	run := func(arrived uint64, start, end int) runRecord {
		return runRecord{arrived: arrived, start: at(start), end: at(end)}
	}
	for _, tc := range []struct {
		name     string
		recs     []runRecord
		maxConc  int
		handoffs int
		p99      float64
		fifo     float64
		span     float64
	}{
		{name: "none ran", recs: []runRecord{{err: errors.New("never ran")}}},
		{
			name:    "one slot, in order, 10ms handoffs",
			recs:    []runRecord{run(0, 0, 100), run(5, 110, 210), run(6, 220, 320)},
			maxConc: 1, handoffs: 2, p99: 10, fifo: 1, span: 0.32,
		},
		{
			name:    "overtaken",
			recs:    []runRecord{run(0, 0, 100), run(6, 110, 210), run(5, 230, 330)},
			maxConc: 1, handoffs: 2, p99: 20, fifo: 0, span: 0.33,
		},
		{
			name:    "two slots, near-simultaneous starts count as in order",
			recs:    []runRecord{run(0, 0, 100), run(0, 0, 100), run(8, 101, 200), run(7, 103, 200)},
			maxConc: 2, handoffs: 2, p99: 3, fifo: 1, span: 0.2,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := timingOf(tc.recs)
			if got.MaxConcurrency != tc.maxConc || got.Handoffs != tc.handoffs || got.HandoffP99Ms != tc.p99 {
				t.Errorf("max %d, handoffs %d, p99 %.1f; want %d, %d, %.1f", got.MaxConcurrency, got.Handoffs, got.HandoffP99Ms, tc.maxConc, tc.handoffs, tc.p99)
			}
			if got.Runs > 0 && (got.FIFO != tc.fifo || abs(got.SpanSeconds-tc.span) > 1e-9) {
				t.Errorf("fifo %.3f, span %.3f; want %.3f, %.3f", got.FIFO, got.SpanSeconds, tc.fifo, tc.span)
			}
		})
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	for p, want := range map[float64]float64{0.5: 3, 0.99: 5, 0.2: 1} {
		if got := percentile(xs, p); got != want {
			t.Errorf("percentile(%v) = %v, want %v", p, got, want)
		}
	}
	if percentile(nil, 0.5) != 0 {
		t.Error("percentile of nothing is not 0")
	}
}

func TestScheduleIdeal(t *testing.T) {
	for _, tc := range []struct {
		m, n int
		want float64 // seconds, with runs of 0.2 s
	}{
		{1, 10, 0.2},    // the canary alone
		{20, 2, 2.2},    // 1, 2, 4, 8, 5: 1+1+2+4+3 waves
		{100, 10, 2.8},  // 1, 2, 4, 8, 16, 32, 37: 1+1+1+1+2+4+4 waves (10 without revisions)
		{500, 10, 11.0}, // ..., 64, 128, 245: 55 waves (50 without revisions)
		{100, 50, 1.4},  // 1, 2, 4, 8, 16, 32, 37: 7 waves (2 without revisions)
	} {
		if got := scheduleIdeal(tc.m, tc.n, 200*time.Millisecond); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("scheduleIdeal(%d, %d) = %.2f, want %.2f", tc.m, tc.n, got, tc.want)
		}
	}
}

func TestSteps(t *testing.T) {
	at := time.Unix(0, 0)
	recs := []runRecord{
		{batch: 0, start: at}, {batch: 1, start: at}, {batch: 1, start: at}, {batch: 2, start: at},
		{batch: -1, start: at},          // no mover
		{batch: 3, err: errors.New("")}, // never ran
	}
	movers, per := steps(recs)
	if movers != 4 || fmt.Sprint(per) != "[1 2 1]" {
		t.Errorf("steps: %d movers, %v per step; want 4, [1 2 1]", movers, per)
	}
}

func TestLostCountsRefusedWritesOnly(t *testing.T) {
	c := counts{
		"txn release slot": {Requests: 10, Raft: true, Refused: 3, Lost: map[string]int64{"rollout": 3, "current": 1}},
		"txn take slot":    {Requests: 5, Raft: true, Refused: 1, Lost: map[string]int64{"rollout": 1}},
		"txn read":         {Requests: 20, Refused: 2, Lost: map[string]int64{"queue/": 2}}, // a fetch of a key gone since listed
	}
	refused, byClass := c.lost()
	if refused != 4 || fmt.Sprint(byClass) != "map[current:1 rollout:4]" {
		t.Errorf("lost = %d, %v; want 4, map[current:1 rollout:4]", refused, byClass)
	}
}

func TestLostClasses(t *testing.T) {
	req := `[{"KV":{"Verb":"check-index","Key":"p/bench/tier/max_concurrent"}},{"KV":{"Verb":"delete-cas","Key":"p/bench/tier/running/h"}},` +
		`{"KV":{"Verb":"cas","Key":"p/bench/tier/rollout"}},{"KV":{"Verb":"cas","Key":"p/bench/tier/queue/w"}},{"KV":{"Verb":"cas","Key":"p/bench/tier/running/w"}}]`
	answer := `{"Results":null,"Errors":[{"OpIndex":2,"What":"failed to set key \"p/bench/tier/rollout\", index is stale"},` +
		`{"OpIndex":3,"What":"failed to set key \"p/bench/tier/queue/w\", index is stale"},{"OpIndex":4,"What":"..."},{"OpIndex":9,"What":"?"}]}`
	if got := fmt.Sprint(lostClasses([]byte(req), []byte(answer))); got != "[rollout queue/ running/ (unknown)]" {
		t.Errorf("lostClasses = %s", got)
	}
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	zw.Write([]byte(answer))
	zw.Close()
	if got := fmt.Sprint(lostClasses([]byte(req), zipped.Bytes())); got != "[rollout queue/ running/ (unknown)]" {
		t.Errorf("lostClasses of a gzipped answer = %s", got)
	}
	if got := fmt.Sprint(lostClasses([]byte(req), []byte("not json"))); got != "[(unreadable)]" {
		t.Errorf("lostClasses of junk = %s", got)
	}
	for key, want := range map[string]string{
		"p/bench/tier/current": "current", "p/bench/tier/converged/h": "converged/", "p/bench/tier/audit/history": "audit/", "x": "x",
	} {
		if got := keyClass(key); got != want {
			t.Errorf("keyClass(%q) = %q, want %q", key, got, want)
		}
	}
}

// TestWithin: two proxies' seconds, started half a second apart, summed by second of a window
// that starts a second after the first; seconds outside the window are left out.
func TestWithin(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 20, 0, 0, 0, time.UTC)
	a := secondsFrom{Start: t0.UnixNano(), Seconds: []second{{Requests: 100}, {Requests: 1}, {Requests: 2, Errors: 1}, {Requests: 3}, {Requests: 4}, {Requests: 500}}}
	b := secondsFrom{Start: t0.Add(500 * time.Millisecond).UnixNano(), Seconds: []second{{Requests: 10}, {Requests: 20, Bytes: 7}, {Requests: 30}}}
	got := within([]secondsFrom{a, b}, t0.Add(time.Second), t0.Add(4*time.Second))
	want := []second{{Requests: 1 + 10 + 20, Bytes: 7}, {Requests: 2 + 30, Errors: 1}, {Requests: 3}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("within = %+v, want %+v", got, want)
	}
	if got := within([]secondsFrom{a}, t0, t0); got != nil {
		t.Errorf("an empty window: %+v", got)
	}
}

// Workloads run by M, then N, each for every tool in turn; with ByTool, every workload of one
// tool before the next tool's.
func TestWorkloadOrder(t *testing.T) {
	c := Config{Tools: []string{toolTierlock, toolPeer}, Ms: []int{100, 2000}, Ns: []int{10}}
	str := func(ws []workload) string { return fmt.Sprint(ws) }
	if got, want := str(c.workloads()), "[{tierlock 100 10} {consul-lock 100 10} {tierlock 2000 10} {consul-lock 2000 10}]"; got != want {
		t.Errorf("in turn: %s, want %s", got, want)
	}
	c.ByTool = true
	if got, want := str(c.workloads()), "[{tierlock 100 10} {tierlock 2000 10} {consul-lock 100 10} {consul-lock 2000 10}]"; got != want {
		t.Errorf("by tool: %s, want %s", got, want)
	}
}
