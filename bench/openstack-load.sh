#!/usr/bin/env bash
# Starts Pumice (temporary data directory, free port), lifts the admin
# project's volume quotas, and runs the shared OpenStack load probe
# (shared/bench/openstack-load.py, standard-library Python, OpenStack APIs
# only) against it as the admin user; stops Pumice and removes the data
# directory afterwards.
#
#   bash bench/openstack-load.sh                 # bounded defaults, ~1-2 min
#   bash bench/openstack-load.sh --poll 0.005 throughput   # any openstack-load.py arguments
#
# Defaults: --type '' (Pumice has no 'ceph' volume type; '' = the default
# type), 10 s per throughput concurrency (1,8,32) instead of 60, tokens for
# 10 s instead of 20, the script's own 0.1 s polling, tests 'all'.
# Uses Debian's /usr/bin/python3 (not a pyenv python).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
script=${OPENSTACK_LOAD:-}
if [ -z "$script" ]; then
  for candidate in "$repo/../shared/bench/openstack-load.py" /work/shared/bench/openstack-load.py; do
    if [ -f "$candidate" ]; then script=$candidate; break; fi
  done
fi
[ -n "$script" ] && [ -f "$script" ] || { echo "openstack-load.sh: openstack-load.py not found (set OPENSTACK_LOAD=PATH)" >&2; exit 2; }
python=/usr/bin/python3

data_dir=$(mktemp -d /tmp/pumice-osload-XXXXXX)
log="$data_dir/pumice.out"
password=bench-admin-password
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -rf "$data_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PUMICE_ADMIN_PASSWORD=$password node bin/pumice.mjs serve --data-dir "$data_dir" --listen 127.0.0.1:0 >"$log" 2>&1 &
pid=$!
url=
for _ in $(seq 1 300); do
  url=$(sed -n 's/.*ready at \(http:[^ ]*\).*/\1/p' "$log" | head -1)
  [ -n "$url" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "pumice did not start:" >&2; cat "$log" >&2; exit 1; }
echo "# pumice pid $pid at $url (data dir $data_dir)"

# Admin token and project id, then unlimited volume quotas for the admin project.
auth='{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"name":"Default"},"password":"'$password'"}}},"scope":{"project":{"name":"admin","domain":{"name":"Default"}}}}}'
curl -sS -D "$data_dir/h" -o "$data_dir/b" -H 'Content-Type: application/json' -d "$auth" "$url/identity/v3/auth/tokens"
token=$(sed -n 's/^[Xx]-[Ss]ubject-[Tt]oken: *\([^[:space:]]*\).*/\1/p' "$data_dir/h")
project=$($python -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"]["project"]["id"])' "$data_dir/b")
curl -sS -f -o /dev/null -X PUT -H "X-Auth-Token: $token" -H 'Content-Type: application/json' \
  -d '{"quota_set":{"volumes":-1,"gigabytes":-1,"snapshots":-1}}' "$url/volume/v3/$project/os-quota-sets/$project"
echo "# quota volumes/gigabytes/snapshots = -1 for project $project"

if [ $# -eq 0 ]; then
  set -- --type '' --duration 10 --token-duration 10 all
fi
echo "# $python $script $*"
started=$(date +%s)
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME="${HOME:-/root}" LANG=C.UTF-8 \
  OS_AUTH_URL="$url/identity/v3" OS_USERNAME=admin OS_PASSWORD="$password" OS_PROJECT_NAME=admin \
  OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default OS_INTERFACE=public \
  "$python" "$script" "$@"
echo "# pumice VmRSS at end: $(sed -n 's/^VmRSS:[[:space:]]*//p' /proc/$pid/status)"
echo "# wall: $(( $(date +%s) - started )) s"
