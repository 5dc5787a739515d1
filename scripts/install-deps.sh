#!/usr/bin/env bash
# Installs everything Pumice's tests need on a fresh Debian 12 machine:
# the OpenStack clients used as real consumers of the API, the NBD/QEMU tools
# that read and write volume bytes, and the npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."

debian_packages=(
  python3-openstackclient python3-cinderclient python3-openstacksdk  # real API clients
  qemu-utils libnbd-bin                                              # qemu-io/qemu-img, nbdcopy/nbdinfo
  g++ make python3                                                   # node-gyp build of better-sqlite3
)
missing=()
for p in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
echo "install-deps: done"
