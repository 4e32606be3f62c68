package testkit

import (
	"testing"
	"time"
)

func TestPrefix(t *testing.T) {
	t.Run("a b/c:d", func(t *testing.T) {
		if got, want := Prefix(t), "test/TestPrefix_a_b_c_d"; got != want {
			t.Errorf("Prefix = %q, want %q", got, want)
		}
	})
}

func TestPoll(t *testing.T) {
	n := 0
	if !Poll(time.Minute, func() bool { n++; return n == 3 }) || n != 3 {
		t.Errorf("Poll stopped after %d calls, want 3", n)
	}
	start := time.Now()
	if Poll(50*time.Millisecond, func() bool { return false }) {
		t.Error("Poll reported a condition that never held")
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > 5*time.Second {
		t.Errorf("Poll gave up after %s, want about 50ms", d)
	}
}
