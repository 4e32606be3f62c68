package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/testkit"
)

// TestMain lets the test binary stand in for bin/bench in the process-level smoke test: the
// hosts it starts run it again as `gate`, `slot` and `record`.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "gate":
			gate(os.Args[2], os.Args[3:])
			return
		case "slot":
			slot(os.Args[2:])
			return
		case "record":
			record(os.Args[2:])
			return
		}
	}
	os.Exit(m.Run())
}

// granted reports whether c has been handed a slot within d.
func granted(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.ReadFull(c, make([]byte, 1))
	return err == nil
}

func TestLocalSemGrantsFirstComeFirstServed(t *testing.T) {
	s, err := newLocalSem(filepath.Join(t.TempDir(), "sem.sock"), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const hosts = 6
	conns := make([]net.Conn, hosts)
	for i := range hosts {
		c, err := net.Dial("unix", s.Path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		name := fmt.Sprintf("host-%d", i)
		fmt.Fprintf(c, "%s\n", name)
		conns[i] = c
		// One at a time, so the order of arrival is the order of the loop.
		testkit.Eventually(t, name+" to be served or queued", func() bool {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.held+len(s.queue) == i+1
		})
	}
	for i := range 2 {
		if !granted(conns[i], time.Second) {
			t.Fatalf("host-%d: no slot while one was free", i)
		}
		if p := s.placeInLine(fmt.Sprintf("host-%d", i)); p != 0 {
			t.Errorf("host-%d: place in line %d, want 0 (it never waited)", i, p)
		}
	}
	if granted(conns[2], 50*time.Millisecond) {
		t.Fatal("host-2: a third slot of two")
	}
	// Host 3 leaves the line before its turn: its turn goes to host 4, not to nobody.
	conns[3].Close()
	testkit.Eventually(t, "host-3 to leave the line", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.queue) == 3
	})
	for _, step := range []struct{ release, next int }{{0, 2}, {1, 4}, {2, 5}} {
		conns[step.release].Close() // one release hands the slot to the head of the line
		if !granted(conns[step.next], time.Second) {
			t.Fatalf("host-%d: no slot after host-%d released", step.next, step.release)
		}
	}
	for i, want := range []int64{0, 0, 1, 2, 3, 4} {
		if got := s.placeInLine(fmt.Sprintf("host-%d", i)); got != want {
			t.Errorf("host-%d: place in line %d, want %d", i, got, want)
		}
	}
	if s.maxHeld != 2 {
		t.Errorf("at most %d slots held at once, want 2", s.maxHeld)
	}
}

func TestNewLocalSemRejectsNoSlots(t *testing.T) {
	if _, err := newLocalSem(filepath.Join(t.TempDir(), "sem.sock"), 0); err == nil {
		t.Fatal("a semaphore of 0 slots was accepted")
	}
}

// TestMeasureLocalSemaphore is the smoke test of the process-level harness: a small workload
// through the local semaphore, one OS process per host behind the gate, measured as `make
// bench` measures the tools. It needs no Consul (the local semaphore makes no request) and
// asserts nothing about speed.
func TestMeasureLocalSemaphore(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The hosts are this race-built binary: without this, each would sleep a second on exit.
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	dir := t.TempDir()
	proxy := newCountingProxy("127.0.0.1:1") // nothing may reach it: requests must stay 0
	defer proxy.Close()
	// Runs long enough to overlap: each host is a race-built process that costs some 160 ms of
	// CPU to start, and with runs of 50 ms a busy 2-core machine (make test runs the packages
	// side by side) once served all 8 one at a time.
	w := workload{M: 8, N: 2, T: 300 * time.Millisecond}
	s, err := newLocalSem(filepath.Join(dir, "sem.sock"), w.N)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f, err := measure(ctx, self, dir, proxy, 0, w, toolLocal,
		func(h string) []string { return []string{self, "slot", s.Path, h} },
		func(h, _ string) int64 { return s.placeInLine(h) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", f)
	if f.Failed != 0 {
		t.Errorf("%d runs failed", f.Failed)
	}
	if f.MaxConcurrency != w.N {
		t.Errorf("max concurrency %d, want %d", f.MaxConcurrency, w.N)
	}
	if f.RequestsPerRun != 0 {
		t.Errorf("%.1f requests per run, want 0", f.RequestsPerRun)
	}
	if f.Efficiency <= 0 || f.Efficiency > 1.05 {
		t.Errorf("efficiency %.2f, want in (0, 1]", f.Efficiency)
	}
	if f.HostCPUMsPerRun <= 0 || f.CPUCeiling <= 0 {
		t.Errorf("host CPU %.1f ms per run, CPU ceiling %.2f: the hosts' CPU was not counted", f.HostCPUMsPerRun, f.CPUCeiling)
	}
	if f.FIFO <= 0 {
		t.Errorf("FIFO %.3f: no waiter was ordered", f.FIFO)
	}
}
