#!/bin/sh
# tierlock: before removal (deb prerm "remove", rpm %preun with 0 versions left); an upgrade
# ("upgrade", or 1) changes nothing.
#
# Stops and disables the timer, so no new run starts. A run in progress is left to finish and
# release its slot: killing it would leave the slot held as interrupted, and the run may be the
# chef-client run that is removing this package.
set -e

case "$1" in
  remove|0) ;;
  *) exit 0 ;;
esac

if [ -d /run/systemd/system ]; then
  systemctl stop tierlock.timer >/dev/null 2>&1 || true
fi
# Also without a running systemd: an enabled timer is a symlink that would be left dangling.
if command -v systemctl >/dev/null 2>&1; then
  systemctl disable tierlock.timer >/dev/null 2>&1 || true
fi
exit 0
