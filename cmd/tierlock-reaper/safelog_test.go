package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// The Lambda's log lines go through the one sanitiser: a stored string (a key in an error, a
// holder) reaches CloudWatch with no control character, DEL, C1 or bidi override, and every
// line stays one JSON object.
func TestLogLinesAreSanitised(t *testing.T) {
	evil := "k\x1b]0;owned\x07\n| evil=1;2;3\x7f\u009b\u202e"
	var out bytes.Buffer
	f := &Function{Out: &out}
	f.logger().WithField("holder", evil).WithError(errors.New("reap " + evil)).Error("freed " + evil)
	line := strings.TrimSuffix(out.String(), "\n")
	for i, r := range line {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == '\u202e' {
			t.Fatalf("raw %U at byte %d of %q", r, i, line)
		}
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("not one JSON line: %v\n%s", err, line)
	}
	if want := `k\x1b]0;owned\x07\x0a| evil=1;2;3\x7f\u009b\u202e`; m["holder"] != want {
		t.Errorf("holder = %q, want %q", m["holder"], want)
	}
}
