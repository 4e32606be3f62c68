#!/bin/sh
# tierlock: before unpacking (deb preinst "install [old-version]" or "upgrade old-version", rpm
# %pre with 1 or 2).
#
# dpkg gives postinst "configure <old-version>" both after an upgrade and when the package is
# installed again after `dpkg -r` (its config file kept): only preinst tells them apart, with
# "upgrade" against "install". An install, fresh or after a removal, leaves a mark that
# postinst reads and deletes, so a reinstall enables the timer as a fresh install does (the
# removal disabled it). The mark lives in /var/lib, not /run, so a reboot between unpacking and
# configuring does not turn the install into an upgrade.
set -e

case "$1" in
  install)
    mkdir -p /var/lib/tierlock
    : > /var/lib/tierlock/installing
    ;;
esac
exit 0
