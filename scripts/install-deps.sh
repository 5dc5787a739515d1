#!/usr/bin/env bash
# Installs everything Pumice's tests need on a fresh Debian 12 machine:
# the OpenStack clients used as real consumers of the API, the NBD/QEMU tools
# that read and write volume bytes, and the npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."

# --runtime: only what running the cloud needs (qemu-img for image checks, the
# build tools of better-sqlite3); without it, everything the tests need too.
runtime_only=false
[ "${1:-}" = "--runtime" ] && runtime_only=true

runtime_packages=(qemu-utils g++ make python3 qemu-system-x86 qemu-block-extra)  # qemu-system: the compute role
debian_packages=(
  python3-openstackclient python3-cinderclient python3-openstacksdk  # real API clients
  python3-glanceclient python3-requests                              # glance image-update, 413 test through requests
  python3-tempest python3-jsonschema                                 # tempest/lib/api_schema/response: reference response schemas
  curl procps                                                        # test helpers stream uploads (curl -T) and list QEMU processes (ps)
  strace                                                             # the durability test watches fsync/rename order
  postgresql                                                         # scripts/with-postgres.sh: a throwaway PostgreSQL 15 (test/pg, issue 16)
  qemu-utils libnbd-bin                                              # qemu-io/qemu-img, nbdcopy/nbdinfo
  fio                                                                # bench/nbd-export.ts: fio's nbd engine against qemu-nbd
  g++ make python3                                                   # node-gyp builds (better-sqlite3, native/)
  ceph-mon ceph-osd ceph-mgr ceph-common uuid-runtime                # the lab Ceph cluster tests start
  librbd-dev librados-dev                                            # headers of the native librbd binding
  qemu-block-extra                                                   # qemu-img with rbd: paths; qemu's rbd block driver
  qemu-system-x86                                                    # the compute agent's guests (TCG in tests)
  dosfstools mtools fdisk cpio busybox-static syslinux syslinux-common  # scripts/build-test-guest.sh
  chromium                                                           # test/browser: playwright-core drives Debian's browser (no browser download)
  systemd iproute2 util-linux passwd                                 # journald (journal test), ip netns (test/multihost), unshare, useradd (installer test)
)
$runtime_only && debian_packages=("${runtime_packages[@]}")
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
# The librbd binding (native/): built here because the tests need it; `npm ci`
# alone does not build it, so the embedded default never needs Ceph headers.
$runtime_only || npm run --silent build:native
echo "install-deps: done"
