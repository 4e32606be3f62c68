package testkit

import (
	"context"
	"sync/atomic"
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

// named is a test of another name, as go test -count runs the same test again.
type named struct {
	testing.TB
	name string
}

func (n *named) Name() string { return n.name }

// Each run of a test under -count gets keys of its own, and one run always the same prefix.
func TestPrefixOfARepeatedTest(t *testing.T) {
	first, second := &named{t, "TestRepeated"}, &named{t, "TestRepeated"}
	a, b := Prefix(first), Prefix(second)
	if a != "test/TestRepeated" || b != "test/TestRepeated_2" {
		t.Errorf("two runs of one test got %q and %q, want test/TestRepeated and test/TestRepeated_2", a, b)
	}
	if again := Prefix(first); again != a {
		t.Errorf("the first run asked again got %q, want %q", again, a)
	}
}

// A group's goroutines end before their test does: its context is cancelled first, then the
// test waits for them, so one blocked on the context neither outlives the test nor hangs it.
func TestGroupEndsWithItsTest(t *testing.T) {
	var ended atomic.Bool
	t.Run("sub", func(t *testing.T) {
		NewGroup(t).Go(func(ctx context.Context) {
			<-ctx.Done()
			time.Sleep(10 * time.Millisecond)
			ended.Store(true)
		})
	})
	if !ended.Load() {
		t.Error("the group's goroutine outlived its test")
	}
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
