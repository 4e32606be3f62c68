package lock_test

import (
	"fmt"
	"testing"

	"github.com/tierlock/tierlock/internal/testkit"
)

func TestSetMaxDisableEnable(t *testing.T) {
	s := newSem(t, 1)
	n := func(i int) *int { return &i }
	steps := []struct {
		name string
		do   func() error
		want map[string]string
	}{
		{"set-max 3", func() error { _, err := s.SetMax(testkit.Ctx(t), 3); return err }, map[string]string{"current": "0", "max_concurrent": "3"}},
		{"set-max 3 again", func() error { _, err := s.SetMax(testkit.Ctx(t), 3); return err }, map[string]string{"current": "0", "max_concurrent": "3"}},
		{"disable", func() error { _, err := s.Disable(testkit.Ctx(t)); return err }, map[string]string{"current": "0", "max_concurrent": "0", "max_saved": "3"}},
		{"disable again keeps the saved value", func() error { _, err := s.Disable(testkit.Ctx(t)); return err }, map[string]string{"current": "0", "max_concurrent": "0", "max_saved": "3"}},
		{"enable restores", func() error { _, err := s.Enable(testkit.Ctx(t), nil); return err }, map[string]string{"current": "0", "max_concurrent": "3"}},
		{"enable when enabled", func() error { _, err := s.Enable(testkit.Ctx(t), nil); return err }, map[string]string{"current": "0", "max_concurrent": "3"}},
		{"disable then enable 5", func() error {
			if _, err := s.Disable(testkit.Ctx(t)); err != nil {
				return err
			}
			_, err := s.Enable(testkit.Ctx(t), n(5))
			return err
		}, map[string]string{"current": "0", "max_concurrent": "5"}},
		{"set-max -1", func() error { _, err := s.SetMax(testkit.Ctx(t), -1); return err }, map[string]string{"current": "0", "max_concurrent": "-1"}},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := values(t); fmt.Sprint(got) != fmt.Sprint(st.want) {
			t.Errorf("%s: keys %v, want %v", st.name, got, st.want)
		}
	}
}

func TestDisableWithoutStoredMax(t *testing.T) {
	s := newSem(t, 1)
	if _, err := s.Disable(testkit.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	if got := values(t); fmt.Sprint(got) != "map[current:0 max_concurrent:0]" {
		t.Errorf("after disable: %v", got)
	}
	if _, err := s.Enable(testkit.Ctx(t), nil); err != nil {
		t.Fatal(err)
	}
	if got := values(t); fmt.Sprint(got) != "map[current:0]" {
		t.Errorf("enable should return to the default (no max_concurrent): %v", got)
	}
}

func TestSetMaxRefusesBadValues(t *testing.T) {
	s := newSem(t, 1)
	for _, n := range []int{-2, -3, 1 << 31} {
		if _, err := s.SetMax(testkit.Ctx(t), n); err == nil {
			t.Errorf("SetMax(%d) accepted", n)
		}
	}
	zero := 0
	if _, err := s.Enable(testkit.Ctx(t), &zero); err == nil {
		t.Error("Enable(0) accepted")
	}
	if got := values(t); len(got) != 0 {
		t.Errorf("refused values wrote %v", got)
	}
}

func TestSetMaxFixesInvalidValue(t *testing.T) {
	s := newSem(t, 1)
	put(t, "max_concurrent", "abc")
	if _, err := s.SetMax(testkit.Ctx(t), 2); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Read(testkit.Ctx(t))
	if err != nil || snap.Err() != nil || snap.Max != 2 {
		t.Errorf("after set-max over garbage: %+v %v", snap, err)
	}
}
