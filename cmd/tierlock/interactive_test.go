package main_test

import (
	"net"
	"strings"
	"testing"
	"time"
)

// A person asking with Consul down hears so within seconds, not after --consul-timeout: a
// refused connection gets 5 s (the run keeps its whole budget).
func TestInteractiveCommandsAnswerPromptlyWhenRefused(t *testing.T) {
	t.Parallel() // it waits out refused connections (see TestMain)
	bin(t)       // built before any clock starts
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now: connections are refused
	for _, args := range [][]string{
		{"status"},
		{"status", "--tier", tier},
		{"disable", "--tier", tier},
		{"release", "--tier", tier, "--holder", "web-1"},
	} {
		start := time.Now()
		r := run(t, cli(t, addr, args...))
		took := time.Since(start)
		wantCode(t, r, 75)
		if took > 7*time.Second {
			t.Errorf("%v took %s with connections refused, want about 5s", args, took.Round(time.Millisecond))
		}
		if !strings.Contains(r.stderr, "connections refused") {
			t.Errorf("%v does not say the connection was refused: %s", args, r.stderr)
		}
		t.Logf("%v: exit 75 after %s", args, took.Round(time.Millisecond))
	}
}
