#!/usr/bin/env bash
# Runs every test: type check, unit tests, end-to-end tests against real
# servers and real clients, and the Ceph tests against one throwaway lab
# cluster that scripts/with-ceph-lab.sh starts and purges around the run.
# One test file at a time: the Ceph tests stop and start the shared monitor,
# and this 2-core machine stays responsive.
set -euo pipefail
cd "$(dirname "$0")/.."
npx tsc --noEmit -p .
shopt -s nullglob
# test/multihost: real processes in network namespaces on one PostgreSQL (needs root; skips itself otherwise).
files=(test/unit/*.test.ts test/e2e/*.test.ts test/security/*.test.ts test/browser/*.test.ts test/multihost/*.test.ts)
runner=(node --import tsx --test --test-concurrency=1 --test-reporter=spec)
# A subset on PostgreSQL (issue 16; about 2 minutes): the same servers on a throwaway PostgreSQL 15.
pg_status=0
if [ -x /usr/lib/postgresql/15/bin/initdb ]; then
  bash scripts/with-postgres.sh "${runner[@]}" test/pg/*.test.ts test/e2e/task-api.test.ts || pg_status=$?
else
  echo "run-tests: PostgreSQL 15 is missing (run scripts/install-deps.sh): PostgreSQL tests not run" >&2
fi
if command -v ceph-mon >/dev/null && [ -f native/build/Release/pumice_rbd.node ]; then
  bash scripts/with-ceph-lab.sh "${runner[@]}" "${files[@]}" test/ceph/*.test.ts && exit "$pg_status"
  exit $?
fi
echo "run-tests: Ceph packages or the native binding are missing (run scripts/install-deps.sh): Ceph tests not run" >&2
"${runner[@]}" "${files[@]}" && exit "$pg_status"
