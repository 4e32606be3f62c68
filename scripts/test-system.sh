#!/usr/bin/env bash
# make test-system: the .deb under a real systemd, in a systemd-nspawn container booted from a
# cached Debian tree (packaging/system). It reuses the package `make package` built.
#
#   scripts/test-system.sh              run it; fail when it cannot run here
#   scripts/test-system.sh --if-able    what `make test` calls: where it cannot run (not root,
#                                       no systemd-nspawn, no namespaces), say why loudly, skip
set -euo pipefail
GO=${GO:-go}
if_able=no
[ "${1:-}" = --if-able ] && if_able=yes

cannot() {
  if [ "$if_able" = yes ]; then
    echo "################################################################################" >&2
    echo "SKIP test-system: $*" >&2
    echo "################################################################################" >&2
    exit 0
  fi
  echo "test-system: cannot run: $*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || cannot "needs root (systemd-nspawn, dpkg inside the container)"
for tool in systemd-nspawn debootstrap nsenter zstd tar; do
  command -v "$tool" >/dev/null || cannot "no $tool (make test-deps installs systemd-container and debootstrap)"
done
unshare --mount --pid --uts --ipc --fork true 2>/dev/null || cannot "this kernel or sandbox refuses new namespaces (unshare failed)"
ls dist/tierlock_*-1_"$(dpkg --print-architecture)".deb >/dev/null 2>&1 ||
  cannot "no dist/tierlock_*.deb: run make package first (make test does)"

exec "$GO" test -tags systemtest -count=1 -v -timeout 30m -run '^TestSystem(EnvironmentFile)?$' ./packaging/system
