// Package reliability holds tierlock's tests that try hardest to break its promise (never
// more than max_concurrent runs, never a run without a slot, never a slot lost or leaked,
// current always equal to the number of running/ keys, nobody without the right token
// changing a tier), each against real Consul agents it starts for itself: crashes of
// tierlock and of a Consul server with its data directory, a three-server cluster losing its
// leader, ACLs with default deny, TLS, hostile stored values, and a soak of many hosts with
// random faults. `make soak` runs the soak long and prints its figures.
package reliability
