package schema

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseMax(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"-1", -1, true}, {"0", 0, true}, {"1", 1, true}, {"25", 25, true}, {"007", 7, true},
		{"2\n", 2, true}, {" 3 ", 3, true},
		{"abc", 0, false}, {"1.5", 0, false}, {"-2", 0, false}, {"", 0, false}, {" ", 0, false},
		{"12345678901234567890", 0, false}, {"+3", 0, false}, {"0x10", 0, false}, {"1e3", 0, false},
		{"--1", 0, false}, {"-", 0, false}, {"2000000000", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseMax([]byte(tt.in))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseMax(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestParseCurrent(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"0", 0, true}, {"3", 3, true}, {"-1", 0, false}, {"x", 0, false}, {"", 0, false},
		{"99999999999999999999", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseCurrent([]byte(tt.in))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseCurrent(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestParseRecord(t *testing.T) {
	started := time.Date(2026, 11, 21, 9, 15, 2, 0, time.UTC)
	tests := []struct {
		name    string
		in      string
		state   State
		started time.Time
		code    *int
		errHas  string
	}{
		{name: "spec example", in: `{"holder":"web-3","hostname":"web-3.prod","instance_id":"i-0abc123","pid":4242,
 "state":"failed","started_at":"2026-11-21T09:15:02Z","updated_at":"2026-11-21T09:15:02Z",
 "exit_code":2,"attempts":1,"command":"chef-client","run_id":"7f3a9c1e","version":"tierlock 0.3.0"}`,
			state: StateFailed, started: started, code: ptr(2)},
		{name: "holder omitted", in: `{"state":"running","started_at":"2026-11-21T09:15:02Z"}`, state: StateRunning, started: started},
		{name: "unix seconds", in: "1795252502", state: StateRunning, started: time.Unix(1795252502, 0).UTC()},
		{name: "unix seconds newline", in: "1795252502\n", state: StateRunning, started: time.Unix(1795252502, 0).UTC()},
		{name: "rfc3339", in: "2026-11-21T09:15:02Z", state: StateRunning, started: started},
		{name: "rfc3339 offset", in: "2026-11-21T10:15:02+01:00", state: StateRunning, started: started},
		{name: "empty", in: "", errHas: "empty"},
		{name: "words", in: "held by bob", errHas: "neither"},
		{name: "milliseconds", in: "1795252502000", errHas: "plausible"},
		{name: "bad state", in: `{"state":"done","started_at":"2026-11-21T09:15:02Z"}`, errHas: "state"},
		{name: "no state", in: `{"started_at":"2026-11-21T09:15:02Z"}`, errHas: "state"},
		{name: "no start", in: `{"state":"running"}`, errHas: "started_at"},
		{name: "other holder", in: `{"holder":"web-4","state":"running","started_at":"2026-11-21T09:15:02Z"}`, errHas: "web-4"},
		{name: "negative attempts", in: `{"state":"running","started_at":"2026-11-21T09:15:02Z","attempts":-1}`, errHas: "attempts"},
		{name: "trailing", in: `{"state":"running","started_at":"2026-11-21T09:15:02Z"} {}`, errHas: "trailing"},
		{name: "broken json", in: `{"state":`, errHas: "JSON"},
		{name: "invalid utf8", in: "\xff\xfe", errHas: "UTF-8"},
		{name: "oversized", in: strings.Repeat("1", MaxValueLen+1), errHas: "bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, err := ParseRecord("web-3", []byte(tt.in))
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rec.Holder != "web-3" || rec.State != tt.state || !rec.StartedAt.Equal(tt.started) {
				t.Errorf("got %+v", rec)
			}
			if (rec.ExitCode == nil) != (tt.code == nil) || tt.code != nil && *rec.ExitCode != *tt.code {
				t.Errorf("exit code %v, want %v", rec.ExitCode, tt.code)
			}
		})
	}
}

func ptr(i int) *int { return &i }

func TestValidateTier(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"prod/web", true}, {"logstash/es-indexer", true}, {"a.b/c_d-1", true},
		{"prod", false}, {"prod/", false}, {"/web", false}, {"prod/web/x", false}, {"../web", false},
		{"prod/..", false}, {"prod/we b", false}, {"prod/web\x00", false}, {"prod/wéb", false},
		{"prod/" + strings.Repeat("x", 254), false}, {"", false},
	}
	for _, tt := range tests {
		err := ValidateTier(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateTier(%q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateTier(%q) error %v does not wrap ErrInvalidName", tt.in, err)
		}
	}
}
