package lock

import "time"

// SetNetLeast shortens the safety net's least period of s (minNet), for tests that cannot
// wait a minute for a waiter's own look.
func SetNetLeast(s *Semaphore, d time.Duration) { s.netLeast = d }
