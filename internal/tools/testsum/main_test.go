package main

import (
	"strings"
	"testing"
)

// The summary is what go test prints without -json: the packages' results, a failed test's
// output (not a passing one's), a crashed binary's words, a failed build; then the slowest
// tests, top-level ones only.
func TestSummarize(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"start","Package":"a"}`,
		`{"Action":"run","Package":"a","Test":"TestQuiet"}`,
		`{"Action":"output","Package":"a","Test":"TestQuiet","Output":"=== RUN   TestQuiet\n"}`,
		`{"Action":"output","Package":"a","Test":"TestQuiet","Output":"    a_test.go:9: all is well\n"}`,
		`{"Action":"pass","Package":"a","Test":"TestQuiet","Elapsed":2.5}`,
		`{"Action":"output","Package":"a","Test":"TestBroken/sub","Output":"    a_test.go:20: want 2, got 3\n"}`,
		`{"Action":"output","Package":"a","Test":"TestBroken/sub","Output":"    --- FAIL: TestBroken/sub (0.10s)\n"}`,
		`{"Action":"fail","Package":"a","Test":"TestBroken/sub","Elapsed":0.1}`,
		`{"Action":"output","Package":"a","Test":"TestBroken","Output":"--- FAIL: TestBroken (7.00s)\n"}`,
		`{"Action":"fail","Package":"a","Test":"TestBroken","Elapsed":7}`,
		`{"Action":"output","Package":"a","Output":"FAIL\n"}`,
		`{"Action":"output","Package":"a","Output":"FAIL\ta\t9.6s\n"}`,
		`{"Action":"fail","Package":"a","Elapsed":9.6}`,
		`{"Action":"output","Package":"b","Test":"TestFine","Output":"=== RUN   TestFine\n"}`,
		`{"Action":"pass","Package":"b","Test":"TestFine","Elapsed":30.25}`,
		`{"Action":"output","Package":"b","Output":"PASS\n"}`,
		`{"Action":"output","Package":"b","Output":"ok  \tb\t30.3s\n"}`,
		`{"Action":"pass","Package":"b","Elapsed":30.3}`,
		`{"Action":"output","Package":"c","Test":"TestHangs","Output":"    c_test.go:5: waiting\n"}`,
		`{"Action":"output","Package":"c","Output":"panic: test timed out after 20m0s\n"}`,
		`{"Action":"fail","Package":"c","Elapsed":1200}`,
		`{"Action":"build-output","ImportPath":"d","Output":"d/d.go:3:1: syntax error\n"}`,
		`# not an event`,
	}, "\n")
	var out strings.Builder
	if err := summarize(strings.NewReader(in), &out, 2); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		"a_test.go:20: want 2, got 3", "--- FAIL: TestBroken (7.00s)", "FAIL\ta\t9.6s", "ok  \tb\t30.3s",
		"panic: test timed out after 20m0s", "c_test.go:5: waiting", "d/d.go:3:1: syntax error", "# not an event",
		"    30.2  b TestFine\n     7.0  a TestBroken\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
	for _, not := range []string{"all is well", "=== RUN", "TestBroken/sub\n", "TestQuiet\n"} {
		if strings.Contains(got, not) {
			t.Errorf("summary has %q:\n%s", not, got)
		}
	}
}
