// Package monitor judges tiers (slots held too long, failed or interrupted runs, a counter
// out of step with its running/ keys, invalid settings) for the Nagios check and status.
// Its judging is pure: snapshots and a time in, a verdict out.
package monitor
