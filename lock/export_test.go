package lock

import "time"

// SetNetLeast shortens the safety net's least period of s (minNet), for tests that cannot
// wait a minute for a waiter's own look.
func SetNetLeast(s *Semaphore, d time.Duration) { s.netLeast = d }

// SetSettle makes the waiters of s settle for d, not a random moment up to settleSpan.
func SetSettle(s *Semaphore, d time.Duration) { s.settleFor = func() time.Duration { return d } }
