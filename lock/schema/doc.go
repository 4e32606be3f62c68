// Package schema is what lock stores in Consul, and the names it stores it under: the values
// of a tier's keys (a slot's Record, a holder's Convergence, a waiter's queue entry, an
// operator's Note, the rollout's Policy and Rollout record), their JSON, and the rules that
// names, reasons and revisions must follow. It is plain data: reading, writing and the
// invariant are lock's (start with lock's package comment for the key layout).
//
// monitor, the CLI and the reapers read these values through lock's Snapshot; what they may
// change, they change through lock's Semaphore.
package schema
