#!/usr/bin/env bash
# Usage: scripts/with-ceph-lab.sh CMD [ARGS...]
# Brings a throwaway Ceph lab up in a temp dir, exports PUMICE_CEPH_LAB=DIR,
# runs CMD (so every Ceph test of the run shares one cluster), then purges the
# lab whatever CMD's exit code (also on Ctrl-C / TERM), and exits with CMD's code.
# Only one lab can run at a time (the monitor binds 127.0.0.1:3300 and :6789).
set -uo pipefail
if [ $# -eq 0 ]; then
  echo "usage: $0 CMD [ARGS...]   (runs CMD with PUMICE_CEPH_LAB set to a fresh Ceph lab)" >&2
  exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
pumice=(node "$root/bin/pumice.mjs")
lab="$(mktemp -d "${TMPDIR:-/tmp}/pumice-ceph-lab.XXXXXX")" || exit 1

cleanup() {
  if ! "${pumice[@]}" ceph-lab purge "$lab" >/dev/null; then
    echo "with-ceph-lab: purging $lab failed; stop it with: ${pumice[*]} ceph-lab purge $lab" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! "${pumice[@]}" ceph-lab up "$lab" >&2; then
  cp -r "$lab/log" "$lab.log" 2>/dev/null && echo "with-ceph-lab: the Ceph lab did not come up; its logs are kept in $lab.log" >&2
  exit 1
fi
export PUMICE_CEPH_LAB="$lab"
"$@"
exit $?
