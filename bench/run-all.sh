#!/usr/bin/env bash
# Runs every benchmark in sequence (about 9 minutes without Ceph); each starts and stops its own Pumice.
# With PUMICE_CEPH_LAB=DIR (a running lab, see README) the Ceph benchmarks run too (about 25 minutes more; the 50 GiB image upload of volume-from-image is most of it).
# A benchmark that fails is reported and the others still run. At the end, bench/summary.ts prints the figures table
# (what, Pumice, baseline, ratio, aim, met?) from the `name: value` lines the benchmarks printed; the whole output stays in a log file.
# Not run here: bench/crash-harness.ts (about 1 h), bench/multihost.ts and bench/evacuate.ts (network namespaces, PostgreSQL).
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp /tmp/pumice-bench-XXXXXX.log)

# The `## COMMAND` line is what bench/summary.ts splits the output on, one section per benchmark.
run() {
  echo "## $*"
  "$@" || echo "## FAILED (exit $?): $*"
}

all() {
  echo "## $(date -u +%FT%TZ) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), node $(node --version), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  for b in volume-cycles list-latency tokens events image-upload backup-posix; do
    run node --import tsx "bench/$b.ts"
  done
  run node --import tsx bench/volume-from-image.ts --skip-rbd
  if command -v fio >/dev/null; then
    run node --import tsx bench/nbd-export.ts --rounds 3 --seconds 5
  else
    echo "## bench/nbd-export.ts skipped: fio is missing (apt-get install fio)"
  fi
  run node --import tsx bench/live-migration.ts
  if command -v qemu-system-x86_64 >/dev/null; then
    run node --import tsx bench/boot.ts
  else
    echo "## bench/boot.ts skipped: qemu-system-x86_64 is missing"
  fi
  run bash bench/openstack-load.sh
  if [ -n "${PUMICE_CEPH_LAB:-}" ]; then
    for b in rbd-cycles rbd-binding image-upload-rbd backup-ceph volume-from-image volume-upload-qcow2; do
      run node --import tsx "bench/$b.ts"
    done
  fi
  echo "## $(date -u +%FT%TZ) done, load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

all 2>&1 | tee "$log"
node --import tsx bench/summary.ts "$log"
echo "## the whole output: $log"
if grep -q '^## FAILED' "$log"; then
  grep '^## FAILED' "$log"
  exit 1
fi
