// Package monitor judges tiers and frees the slots of hosts that no longer exist. Its judging
// is pure: snapshots (or the catalog) and a time in, a verdict out.
//
// Judging tiers (check.go): slots held too long, failed or interrupted runs, a counter out of
// step with its running/ keys, invalid settings, for the Nagios check and status.
//
// Reaping (reap.go): a host that dies holding a slot (after a failed run, or mid-run) would
// block its tier for good. Reaper finds every slot and queue entry that belongs to a dead host,
// across all tiers under a prefix, and frees each tier's in one transaction
// (lock.Semaphore.Evict); doing it again frees nothing, so repeated and late termination
// events are harmless. Who is dead is decided by pure functions (Match, JudgeNodes).
//
// The catalog reaper remembers when it first saw each slot holder's node missing from the
// catalog or critical (both wait out --grace) under PREFIX/_reaper/critical_since (JSON, node
// name to RFC 3339 time); the key is two levels under the prefix, so it is never taken for a
// tier's key.
package monitor
