package consulagent

import (
	"os"
	"path/filepath"
	"testing"
)

// fakeTB records how Need ended a test; Skipf and Fatalf stop Need as the real ones would.
type fakeTB struct {
	testing.TB
	ended string
}

type stop struct{}

func (f *fakeTB) Helper()               {}
func (f *fakeTB) Skipf(string, ...any)  { f.ended = "skip"; panic(stop{}) }
func (f *fakeTB) Fatalf(string, ...any) { f.ended = "fail"; panic(stop{}) }

// need calls Need; bin is "" when Need ended the test.
func (f *fakeTB) need() (bin string) {
	defer func() {
		if r := recover(); r != nil && r != (stop{}) {
			panic(r)
		}
	}()
	return Need(f)
}

// $TIERLOCK_SKIP_CONSUL=1 (make check) skips whatever $TIERLOCK_CONSUL says; without it a
// $TIERLOCK_CONSUL that names no file fails, as under make test, and one that does is used.
func TestNeed(t *testing.T) {
	there := filepath.Join(t.TempDir(), "consul")
	if err := os.WriteFile(there, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "consul")
	for _, tc := range []struct {
		name, skip, consul string
		want               string // "skip", "fail", or "" for the binary returned
	}{
		{"make check, no binary", "1", missing, "skip"},
		{"make check, a binary", "1", there, "skip"},
		{"make test, no binary", "", missing, "fail"},
		{"make test, a binary", "", there, ""},
		{"not 1, no binary", "0", missing, "fail"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(SkipEnv, tc.skip)
			t.Setenv("TIERLOCK_CONSUL", tc.consul)
			f := &fakeTB{TB: t}
			bin := f.need()
			if f.ended != tc.want {
				t.Fatalf("Need ended the test with %q, want %q", f.ended, tc.want)
			}
			if tc.want == "" && bin != tc.consul {
				t.Errorf("Need = %q, want %q", bin, tc.consul)
			}
		})
	}
}
