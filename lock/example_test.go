package lock_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/lock"
)

// The examples that talk to Consul reach the agent a host would ($CONSUL_HTTP_ADDR, else
// 127.0.0.1:8500). An Example cannot skip, so they carry no "// Output:" and `go test` only
// compiles them; TestExamples runs them against the package's real agent and checks what they
// print.

// A run takes a slot, runs its command, and releases the slot only if the command succeeded.
func ExampleSemaphore_Acquire() {
	ctx := context.Background()
	client, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		panic(err)
	}
	sem, err := lock.New(client.KV(), lock.Options{Prefix: "example", Tier: "logstash/es-indexer", DefaultMax: 2})
	if err != nil {
		panic(err)
	}
	slot, err := sem.Acquire(ctx, lock.Request{
		Record:    lock.Record{Holder: "web-3", RunID: "7f3a9c1e", Command: "chef-client"},
		WaitUntil: time.Now().Add(10 * time.Minute),
	})
	if err != nil {
		panic(err) // ErrDisabled, ErrNoSlot, ErrInvalidConfig, or a Consul error
	}
	fmt.Println(slot.Holder, slot.State, "attempt", slot.Attempts)

	// ... the command fails: the slot stays held.
	if err := sem.MarkFailed(ctx, slot, 1); err != nil {
		panic(err)
	}
	snap, _ := sem.Read(ctx)
	fmt.Println("held", snap.Held(), "of", snap.Max, "-", snap.Holders["web-3"].State)

	// The next run of web-3 re-enters the same slot, succeeds and releases it.
	again, _ := sem.Acquire(ctx, lock.Request{Record: lock.Record{Holder: "web-3", RunID: "0b1d2e3f"}})
	fmt.Println("re-entered", again.Reentered, "attempt", again.Attempts)
	if err := sem.Release(ctx, again); err != nil {
		panic(err)
	}
	snap, _ = sem.Read(ctx)
	fmt.Println("held", snap.Held())
}

// TestExamples runs the examples that need Consul against the package's agent, each on a fresh
// prefix, and checks their output.
func TestExamples(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func()
		want string
	}{
		{"Semaphore_Acquire", ExampleSemaphore_Acquire,
			"web-3 running attempt 1\nheld 1 of 2 - failed\nre-entered true attempt 2\nheld 0\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, c := agent.Get(t)
			if _, err := c.KV().DeleteTree("example/", nil); err != nil {
				t.Fatal(err)
			}
			t.Setenv("CONSUL_HTTP_ADDR", a.Addr)
			t.Setenv("CONSUL_HTTP_TOKEN", "")
			t.Setenv("CONSUL_HTTP_SSL", "false")
			if got := stdoutOf(t, tc.run); got != tc.want {
				t.Errorf("printed %q, want %q", got, tc.want)
			}
		})
	}
}

// stdoutOf returns what f prints, as `go test` captures an Example's output.
func stdoutOf(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	out := make(chan string)
	go func() {
		var b strings.Builder
		_, _ = io.Copy(&b, r)
		out <- b.String()
	}()
	defer func() {
		os.Stdout = saved
	}()
	f()
	os.Stdout = saved
	w.Close()
	return <-out
}
