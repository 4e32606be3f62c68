// Package system tests the .deb under a real systemd: it boots a Debian tree in a
// systemd-nspawn container, installs the package `make package` built, and drives the timer,
// the service and the maintainer scripts against a Consul dev agent on the host's loopback.
// TestSystemEnvironmentFile needs no package: it has the container's systemd read the table of
// settings-file lines tierlock is tested on (internal/envfile/testdata/systemd.json).
// The tests carry the build tag systemtest, so `go test ./...` does not run them; `make
// test-system` does (and `make test`, as root where systemd-nspawn can run).
package system
