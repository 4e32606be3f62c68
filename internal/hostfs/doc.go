// Package hostfs holds the files tierlock keeps on the host, as root: the per-tier lock in
// the state dir (LockTier) and files written whole for other programs to read
// (WriteFileAtomic). Both live in directories someone else might be able to write, so
// nothing is ever opened through a link.
package hostfs
