#!/usr/bin/env bash
# Installs the Debian packages the tests run for real: the Nagios core (the check end to end),
# Monitoring::Plugin (the oracle for threshold ranges), and for the packaging and completion
# tests systemd (systemd-analyze verify), rpm (rpm -qlp on the .rpm), bash-completion, zsh and
# tmux (status --watch), and for make test-system systemd-container (systemd-nspawn),
# debootstrap and zstd (the cached tree), and for the alerting rules prometheus (the server and
# promtool) and prometheus-node-exporter. Always without
# recommends: systemd-container recommends libnss-mymachines, which edits the host's
# /etc/nsswitch.conf.
# Without root or apt it says so and leaves the tests that need them to skip with the same
# message.
set -euo pipefail
need=()
[ -x /usr/sbin/nagios4 ] || need+=(nagios4-core)
perl -MMonitoring::Plugin::Range -e1 2>/dev/null || need+=(libmonitoring-plugin-perl)
for p in prometheus prometheus-node-exporter systemd rpm bash-completion zsh tmux systemd-container debootstrap zstd; do
  # What dpkg -l shows as "ii", without its column truncation.
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || need+=("$p")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "test-deps: cannot install ${need[*]} (needs root and apt-get); the tests that need them will skip" >&2
  exit 0
fi
echo "test-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# The prometheus packages start their daemons on install where they can: a policy-rc.d that
# refuses every start keeps this machine quiet (the tests start their own, on loopback). Ours is
# removed afterwards; one already there (as in most containers) is left alone.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# test-deps: no daemon starts while it installs\nexit 101\n' > "$policy"
  chmod 0755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
