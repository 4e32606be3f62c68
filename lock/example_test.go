package lock_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
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
		Record:    schema.Record{Holder: "web-3", RunID: "7f3a9c1e", Command: "chef-client"},
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
	again, _ := sem.Acquire(ctx, lock.Request{Record: schema.Record{Holder: "web-3", RunID: "0b1d2e3f"}})
	fmt.Println("re-entered", again.Reentered, "attempt", again.Attempts)
	if err := sem.Release(ctx, again); err != nil {
		panic(err)
	}
	snap, _ = sem.Read(ctx)
	fmt.Println("held", snap.Held())
}

// The plain cycle: take a slot, run, release it.
func Example_acquireRelease() {
	ctx := context.Background()
	client, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		panic(err)
	}
	sem, err := lock.New(client.KV(), lock.Options{Prefix: "example", Tier: "prod/web", DefaultMax: 1})
	if err != nil {
		panic(err)
	}
	slot, err := sem.Acquire(ctx, lock.Request{Record: schema.Record{Holder: "web-1", RunID: "a1", Command: "chef-client"}})
	if err != nil {
		panic(err)
	}
	// ... run chef-client ...
	if err := sem.Release(ctx, slot); err != nil {
		panic(err)
	}
	snap, err := sem.Read(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("web-1 ran; held now", snap.Held(), "of", snap.Max)
}

// With every slot taken and no time to wait, Acquire says so at once.
func ExampleSemaphore_Acquire_noSlot() {
	ctx := context.Background()
	client, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		panic(err)
	}
	sem, err := lock.New(client.KV(), lock.Options{Prefix: "example", Tier: "prod/db", DefaultMax: 1})
	if err != nil {
		panic(err)
	}
	first, err := sem.Acquire(ctx, lock.Request{Record: schema.Record{Holder: "db-1", RunID: "b1"}})
	if err != nil {
		panic(err)
	}
	_, err = sem.Acquire(ctx, lock.Request{Record: schema.Record{Holder: "db-2", RunID: "b2"}})
	fmt.Println("db-2:", errors.Is(err, lock.ErrNoSlot))
	if err := sem.Release(ctx, first); err != nil {
		panic(err)
	}
}

// An operator lets two hosts of a tier run at once, then stops the tier.
func ExampleSemaphore_SetMax() {
	ctx := context.Background()
	client, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		panic(err)
	}
	sem, err := lock.New(client.KV(), lock.Options{Prefix: "example", Tier: "prod/cache"})
	if err != nil {
		panic(err)
	}
	if _, err := sem.SetMax(ctx, 2); err != nil {
		panic(err)
	}
	snap, err := sem.Read(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("max", snap.Max)
	if _, err := sem.Disable(ctx); err != nil {
		panic(err)
	}
	_, err = sem.Acquire(ctx, lock.Request{Record: schema.Record{Holder: "cache-1", RunID: "c1"}})
	fmt.Println("cache-1:", errors.Is(err, lock.ErrDisabled))
}

// New checks names before any request is made, so a bad tier never reaches Consul.
func ExampleNew() {
	_, err := lock.New(nil, lock.Options{Tier: "prod/../web"})
	fmt.Println(errors.Is(err, schema.ErrInvalidName))
	// Output:
	// true
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
		{"acquireRelease", Example_acquireRelease, "web-1 ran; held now 0 of 1\n"},
		{"Semaphore_Acquire_noSlot", ExampleSemaphore_Acquire_noSlot, "db-2: true\n"},
		{"Semaphore_SetMax", ExampleSemaphore_SetMax, "max 2\ncache-1: true\n"},
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
