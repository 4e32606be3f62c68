#!/bin/sh
# tierlock: after removal (deb postrm "remove" or "purge", rpm %postun with 0 versions left);
# an upgrade changes nothing. dpkg itself deletes /etc/default/tierlock on purge; rpm keeps it
# as /etc/default/tierlock.rpmsave if it was changed.
set -e

case "$1" in
  remove|purge|0) ;;
  *) exit 0 ;;
esac

if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
# The local run locks (--state-dir): rpm has no purge, so it goes on erase there.
case "$1" in
  purge|0) rm -rf /run/tierlock ;;
esac
exit 0
