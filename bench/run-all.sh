#!/usr/bin/env bash
# Runs every benchmark in sequence (about 5.5 minutes); each starts and stops its own Pumice.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "## $(date -u +%FT%TZ) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), node $(node --version), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
for b in volume-cycles list-latency tokens image-upload backup-posix; do
  echo "## node --import tsx bench/$b.ts"
  node --import tsx "bench/$b.ts"
done
echo "## bash bench/openstack-load.sh"
bash bench/openstack-load.sh
