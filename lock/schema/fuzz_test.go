package schema

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// Stored values and names come from anyone with write access to the prefix, or from older
// tooling: whatever they hold, parsing must not panic, what is accepted must be sane, and what
// is refused gets a short, printable error (it ends up in logs and in Nagios output). The seed
// corpus is in testdata/fuzz; `make fuzz` runs each target longer.

// maxErrLen bounds an error message about a stored value or a name.
const maxErrLen = 1024

func checkErr(t *testing.T, err error) {
	t.Helper()
	if msg := err.Error(); len(msg) > maxErrLen || !utf8.ValidString(msg) || msg == "" {
		t.Fatalf("error of %d bytes (valid UTF-8: %v): %.200q", len(msg), utf8.ValidString(msg), msg)
	}
}

func fuzzCount(t *testing.T, parse func([]byte) (int, error), min int, value []byte) {
	n, err := parse(value)
	if err != nil {
		checkErr(t, err)
		return
	}
	if n < min || n > MaxLimit {
		t.Fatalf("%q parsed as %d, outside [%d, %d]", value, n, min, MaxLimit)
	}
	if s := strings.TrimSpace(string(value)); strings.TrimLeft(strings.TrimPrefix(s, "-"), "0123456789") != "" {
		t.Fatalf("%q accepted as %d though it is not an integer", value, n)
	}
	if again, err := parse([]byte(strconv.Itoa(n))); err != nil || again != n {
		t.Fatalf("%d written back parses as %d, %v", n, again, err)
	}
}

func FuzzParseMax(f *testing.F) {
	for _, s := range []string{"-1", "0", "3", " 7\n", "abc", "1.5", "-2", "", "12345678901234567890", "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, value []byte) { fuzzCount(t, ParseMax, -1, value) })
}

func FuzzParseCurrent(f *testing.F) {
	for _, s := range []string{"0", "2", "-1", "x", "+3", "0x10"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, value []byte) { fuzzCount(t, ParseCurrent, 0, value) })
}

func FuzzParseRecord(f *testing.F) {
	f.Add("web-3", []byte(`{"holder":"web-3","state":"failed","started_at":"2026-11-21T09:15:02Z","exit_code":2,"attempts":1,"run_id":"7f3a9c1e"}`))
	f.Add("web-3", []byte(`2026-11-21T09:15:02Z`))
	f.Add("web-3", []byte(`1700000000`))
	f.Add("web-3", []byte(`{"state":"zombie","started_at":"2026-11-21T09:15:02Z"}`))
	f.Add("web-3", []byte(`{"holder":"web-8","state":"running","started_at":"2026-11-21T09:15:02Z"}`))
	f.Add("web-3", []byte(`{} {}`))
	f.Fuzz(func(t *testing.T, holder string, value []byte) {
		if ValidateName("holder", holder) != nil {
			return // a key of a bad name is refused before its value is read (newSnapshot)
		}
		rec, err := ParseRecord(holder, value)
		if err != nil {
			checkErr(t, err)
			return
		}
		if rec.Holder != holder || !rec.State.valid() || rec.StartedAt.IsZero() || rec.UpdatedAt.IsZero() || rec.Attempts < 0 {
			t.Fatalf("%q accepted as %+v", value, rec)
		}
		// What tierlock writes back of it reads the same.
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatalf("accepted %q, cannot write it back: %v", value, err)
		}
		again, err := ParseRecord(holder, b)
		if err != nil {
			t.Fatalf("written back as %s: %v", b, err)
		}
		if !again.StartedAt.Equal(rec.StartedAt) || again.State != rec.State || again.RunID != rec.RunID || again.Attempts != rec.Attempts {
			t.Fatalf("%+v written back reads as %+v", rec, again)
		}
	})
}

// A name becomes part of a Consul key: an accepted one can neither climb out of its place
// (.., /) nor smuggle anything (NUL, control bytes, other UTF-8).
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"web-3", "i-0abc.eu-west-1.compute.internal", "..", ".", "a/b", "a\x00b", "", "web 3", "wéb", strings.Repeat("a", 254)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if err := ValidateName("holder", name); err != nil {
			checkErr(t, err)
			return
		}
		if name == "" || len(name) > MaxNameLen || name == "." || name == ".." {
			t.Fatalf("%q accepted", name)
		}
		for i := 0; i < len(name); i++ {
			if !nameByte(name[i]) {
				t.Fatalf("%q accepted with byte %q", name, name[i])
			}
		}
	})
}

func FuzzValidateTier(f *testing.F) {
	for _, s := range []string{"prod/web", "logstash/es-indexer", "prod/../web", "../web", "prod/web/x", "prod//web", "/web", "prod/", "prod/w\x00b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tier string) {
		if err := ValidateTier(tier); err != nil {
			checkErr(t, err)
			return
		}
		parts := strings.Split(tier, "/")
		if len(parts) != 2 {
			t.Fatalf("%q accepted with %d parts", tier, len(parts))
		}
		for _, p := range parts {
			if ValidateName("tier", p) != nil {
				t.Fatalf("%q accepted with part %q", tier, p)
			}
		}
	})
}

// FuzzParseSchedule: an operator's schedule parses to steps that Validate accepts and that
// write back to the same schedule, or to a short error.
func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{"", "double", "1", "1,2,5,max", "max", "0", "1,max,2", " 3 , 4 ", "1,,2", "+1", "99999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sched, err := ParseSchedule(s)
		if err != nil {
			checkErr(t, err)
			return
		}
		p := Policy{Schedule: sched, Failures: 1}
		if err := p.Validate(); err != nil {
			t.Fatalf("%q parsed as %v, which Validate refuses: %v", s, sched, err)
		}
		for step := range len(sched) + 2 {
			if n := p.Size(step); n == 0 || n < -1 {
				t.Fatalf("%q: step %d has size %d", s, step, n)
			}
		}
		again, err := ParseSchedule(FormatSchedule(sched))
		if err != nil || FormatSchedule(again) != FormatSchedule(sched) {
			t.Fatalf("%q written back as %q parses as %v, %v", s, FormatSchedule(sched), again, err)
		}
	})
}

// FuzzPolicyAndRollout: a stored rollout_policy or rollout record, whatever it holds, is read
// as a valid one or refused with a short error; a policy read writes back to itself.
func FuzzPolicyAndRollout(f *testing.F) {
	for _, s := range []string{
		`{"schedule":"1,2,max","bake":"15m0s","failures":1,"after":"staging/web"}`, `{"schedule":"x"}`, `{}`, `[]`,
		`{"revision":"abc","state":"rolling","step":2,"admitted":1}`, `{"revision":"a b","state":"rolling"}`,
		`{"revision":"abc","state":"halted","failed":[{"holder":"h","exit_code":3}]}`, `{"state":"gone"}`, `{"step":-1,"state":"rolling"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		var p Policy
		if err := json.Unmarshal(value, &p); err != nil {
			checkErr(t, err)
		} else {
			if err := p.Validate(); err != nil {
				t.Fatalf("%q read as %+v, which Validate refuses: %v", value, p, err)
			}
			b, err := json.Marshal(p)
			var back Policy
			if err != nil || json.Unmarshal(b, &back) != nil || FormatSchedule(back.Schedule) != FormatSchedule(p.Schedule) || back.Bake != p.Bake {
				t.Fatalf("%q: policy %+v does not write back (%s)", value, p, b)
			}
		}
		r, err := ParseRollout(value)
		if err != nil {
			checkErr(t, err)
			return
		}
		if r.State != RolloutRolling && r.State != RolloutHalted || r.Step < 0 || r.Failures < 0 {
			t.Fatalf("%q read as %+v", value, r)
		}
		if r.Revision != "" && ValidateRevision(r.Revision) != nil {
			t.Fatalf("%q: revision %q accepted", value, r.Revision)
		}
	})
}
