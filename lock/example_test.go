package lock_test

import (
	"context"
	"fmt"
	"time"

	"github.com/tierlock/tierlock/lock"
)

// A run takes a slot, runs its command, and releases the slot only if the command succeeded.
func ExampleSemaphore_Acquire() {
	ctx := context.Background()
	sem, err := lock.New(consul.KV(), lock.Options{Prefix: "example", Tier: "logstash/es-indexer", DefaultMax: 2})
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
	// Output:
	// web-3 running attempt 1
	// held 1 of 2 - failed
	// re-entered true attempt 2
	// held 0
}
