#!/bin/sh
# tierlock: after removal (deb postrm "remove", "purge" or "abort-install", rpm %postun with 0
# versions left); an upgrade changes nothing. On purge it deletes /etc/default/tierlock, which
# postinst created (it is no conffile, so dpkg would not); rpm keeps it as
# /etc/default/tierlock.rpmsave if it was changed.
set -e

case "$1" in
  remove|purge|abort-install|0) ;;
  *) exit 0 ;;
esac

if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
case "$1" in
  # preinst's mark of an install that did not happen.
  abort-install) rm -rf /var/lib/tierlock ;;
  purge) rm -f /etc/default/tierlock /etc/default/tierlock.tierlock-new
    rm -rf /var/lib/tierlock ;;
esac
# The local run locks (--state-dir): rpm has no purge, so it goes on erase there.
case "$1" in
  purge|0) rm -rf /run/tierlock ;;
esac
exit 0
