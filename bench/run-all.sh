#!/usr/bin/env bash
# Runs every benchmark in sequence (about 7 minutes without Ceph); each starts and stops its own Pumice.
# With PUMICE_CEPH_LAB=DIR (a running lab, see README) the Ceph benchmarks run too (about 25 minutes more; the 50 GiB image upload of volume-from-image is most of it).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "## $(date -u +%FT%TZ) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), node $(node --version), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
for b in volume-cycles list-latency tokens image-upload backup-posix; do
  echo "## node --import tsx bench/$b.ts"
  node --import tsx "bench/$b.ts"
done
echo "## node --import tsx bench/volume-from-image.ts --skip-rbd"
node --import tsx bench/volume-from-image.ts --skip-rbd
if command -v fio >/dev/null; then
  echo "## node --import tsx bench/nbd-export.ts"
  node --import tsx bench/nbd-export.ts
else
  echo "## bench/nbd-export.ts skipped: fio is missing (apt-get install fio)"
fi
echo "## node --import tsx bench/live-migration.ts"
node --import tsx bench/live-migration.ts
echo "## bash bench/openstack-load.sh"
bash bench/openstack-load.sh
if [ -n "${PUMICE_CEPH_LAB:-}" ]; then
  for b in rbd-cycles rbd-binding image-upload-rbd backup-ceph volume-from-image; do
    echo "## PUMICE_CEPH_LAB=$PUMICE_CEPH_LAB node --import tsx bench/$b.ts"
    node --import tsx "bench/$b.ts"
  done
fi
