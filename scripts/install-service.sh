#!/usr/bin/env bash
# Installs Pumice as a systemd service that runs as the unprivileged user
# 'pumice': the code in PREFIX (default /opt/pumice, a copy of this checkout
# with its node_modules), /etc/pumice/pumice.conf (a commented sample if
# missing), the unit /etc/systemd/system/pumice.service, and starts it.
# The state directory /var/lib/pumice is made by systemd (StateDirectory=).
#
# usage: sudo scripts/install-service.sh [--prefix DIR] [--destdir DIR] [--no-start]
#   --prefix DIR   where the code goes (default /opt/pumice)
#   --destdir DIR  install under DIR instead of / (packaging, tests): no user, no systemctl
#   --no-start     install and enable, do not start
# Run it again to upgrade: the code and unit are replaced, pumice.conf is kept.
set -euo pipefail

prefix=/opt/pumice
destdir=
start=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
    --no-start) start=no; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-service.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$prefix" in /*) ;; *) echo "install-service.sh: --prefix must be absolute" >&2; exit 2 ;; esac

src=$(cd "$(dirname "$0")/.." && pwd)
node=$(command -v node || true)
[ -n "$node" ] || { echo "install-service.sh: node not found: install Node.js 20 (scripts/install-deps.sh)" >&2; exit 1; }
[ -d "$src/node_modules" ] || { echo "install-service.sh: $src/node_modules is missing: run npm ci first" >&2; exit 1; }

if [ -z "$destdir" ]; then
  [ "$(id -u)" = 0 ] || { echo "install-service.sh: run as root (sudo): it creates a user and a systemd unit" >&2; exit 1; }
  if ! getent passwd pumice >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/pumice --no-create-home --shell /usr/sbin/nologin --comment 'Pumice control plane' pumice
  fi
  # /dev/kvm for the compute role's guests.
  if getent group kvm >/dev/null; then usermod -a -G kvm pumice; fi
  # Ceph keyrings the configuration names must be readable by pumice (e.g. chgrp pumice /etc/ceph/ceph.client.cinder.keyring).
fi

root=${destdir%/}
install -d -m 0755 "$root$prefix" "$root/etc/systemd/system"
# The code: a copy without the checkout's data, git metadata and test output.
tar -C "$src" --exclude=./.git --exclude=./data --exclude=./test-output --exclude=./build -cf - . | tar -C "$root$prefix" -xf -
# The bundled entry point (bin/bundle.mjs), built now: the service may not write its own directory.
"$node" "$root$prefix/bin/bundle.mjs" >/dev/null
chmod -R go-w "$root$prefix"
sed -e "s|/opt/pumice|$prefix|g" -e "s|/usr/bin/node|$node|g" "$src/packaging/systemd/pumice.service" > "$root/etc/systemd/system/pumice.service"
chmod 0644 "$root/etc/systemd/system/pumice.service"

install -d -m 0750 "$root/etc/pumice"
if [ ! -e "$root/etc/pumice/pumice.conf" ]; then
  "$node" "$src/bin/pumice.mjs" config sample > "$root/etc/pumice/pumice.conf"
  chmod 0640 "$root/etc/pumice/pumice.conf"
fi
if [ -z "$destdir" ]; then
  chgrp pumice /etc/pumice /etc/pumice/pumice.conf
  "$node" "$prefix/bin/pumice.mjs" check-config --config /etc/pumice/pumice.conf
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable pumice.service
    if [ "$start" = yes ]; then
      systemctl restart pumice.service
      echo "pumice is running: systemctl status pumice; credentials: sudo cat /var/lib/pumice/admin-openrc (mode 0600)"
    fi
  else
    # No running systemd (a container, a chroot, an image being built): enabling is a symlink and
    # works offline; reloading and starting need systemd, so they wait for the next boot.
    systemctl enable pumice.service
    echo "systemd is not running here: pumice.service is installed and enabled, and starts at the next boot"
  fi
fi
echo "installed: $root$prefix, $root/etc/systemd/system/pumice.service, $root/etc/pumice/pumice.conf"
