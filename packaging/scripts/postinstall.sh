#!/bin/sh
# tierlock: after install or upgrade (deb postinst "configure [old-version]", rpm %post with the
# number of versions installed afterwards: 1 on install, 2 on upgrade).
#
# A fresh install never starts chef-client runs behind anyone's back: it enables tierlock.timer
# only on a host booted with systemd whose /etc/default/tierlock already names a tier (put
# there before the install, by configuration management say). An upgrade only reloads the unit
# files: it neither enables nor restarts anything, so an operator's choice stands and a chef run
# that is upgrading this very package through tierlock.service is not killed. An install after
# `dpkg -r` (config kept) counts as fresh: preinst marked it so.
set -e

mark=/var/lib/tierlock/installing
fresh=no
case "$1" in
  configure)
    if [ -z "$2" ] || [ -e "$mark" ]; then fresh=yes; fi
    rm -f "$mark"
    rmdir /var/lib/tierlock 2>/dev/null || true
    ;;
  1) fresh=yes ;;
esac

# The settings file is the operator's (or configuration management's): created from the
# shipped template on an install only when there is none, never changed afterwards. On Debian
# it is not a conffile, so dpkg never stops at a conffile prompt when it was placed first; rpm
# installs it itself as %config(noreplace).
if [ "$fresh" = yes ] && [ ! -e /etc/default/tierlock ] && [ ! -L /etc/default/tierlock ]; then
  mkdir -p /etc/default
  cp /usr/share/tierlock/default /etc/default/tierlock.tierlock-new
  chmod 0644 /etc/default/tierlock.tierlock-new
  mv /etc/default/tierlock.tierlock-new /etc/default/tierlock
fi

# Not booted with systemd (a container, a chroot, a cron host): nothing to tell it.
[ -d /run/systemd/system ] || exit 0
systemctl daemon-reload >/dev/null 2>&1 || true
[ "$fresh" = yes ] || exit 0

# A tier is set when the last TIERLOCK_TIER line (the last wins, as under systemd; blanks
# around the name and after = are dropped; # and ; start comments) gives it a value that can
# start a tier, quoted or not. tierlock itself refuses a bad one, naming it.
tier_set() {
  awk '
    /^[[:space:]]*[#;]/ { next }
    /^[[:space:]]*TIERLOCK_TIER[[:space:]]*=/ {
      v = $0
      sub(/^[[:space:]]*TIERLOCK_TIER[[:space:]]*=[[:space:]]*/, "", v)
      set = (v ~ /^["\047]?[A-Za-z0-9._-]/)
    }
    END { exit !set }' /etc/default/tierlock 2>/dev/null
}

if tier_set; then
  if systemctl enable --now tierlock.timer >/dev/null 2>&1; then
    echo "tierlock: a tier is set in /etc/default/tierlock: tierlock.timer enabled"
  else
    echo "tierlock: a tier is set in /etc/default/tierlock, but tierlock.timer could not be enabled" >&2
  fi
else
  echo "tierlock: set TIERLOCK_TIER in /etc/default/tierlock, then: systemctl enable --now tierlock.timer"
fi
exit 0
