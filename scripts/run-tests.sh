#!/usr/bin/env bash
# Runs every test: type check, unit tests, then end-to-end tests against real
# servers and real clients. Two test files at a time keeps this 2-core machine responsive.
set -euo pipefail
cd "$(dirname "$0")/.."
npx tsc --noEmit -p .
shopt -s nullglob
files=(test/unit/*.test.ts test/e2e/*.test.ts)
exec node --import tsx --test --test-concurrency=2 --test-reporter=spec "${files[@]}"
