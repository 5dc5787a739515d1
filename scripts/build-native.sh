#!/usr/bin/env bash
# Builds the Ceph RBD binding (native/ -> native/build/Release/pumice_rbd.node)
# against Debian's librbd-dev and librados-dev. Without those headers it warns
# and exits 0: the embedded default backend does not need Ceph, and `npm ci`
# never runs this script by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

include_dir="${PUMICE_CEPH_INCLUDE_DIR:-/usr/include}"  # overridable for testing this check
missing=()
for header in "$include_dir/rbd/librbd.h" "$include_dir/rados/librados.h"; do
  [ -f "$header" ] || missing+=("$header")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "build-native: warning: ${missing[*]} not found: the Ceph RBD binding is not built." >&2
  echo "build-native: install librbd-dev librados-dev (apt-get install -y librbd-dev librados-dev), then run: npm run build:native" >&2
  exit 0
fi

for tool in g++ make python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "build-native: $tool is missing: apt-get install -y g++ make python3" >&2
    exit 1
  fi
done

if [ ! -f node_modules/node-addon-api/napi.h ]; then
  echo "build-native: node_modules/node-addon-api is missing: run npm ci first" >&2
  exit 1
fi

# node-gyp: a local copy, the one npm runs scripts with, or npm's bundled one.
gyp=()
if [ -x node_modules/.bin/node-gyp ]; then
  gyp=("$PWD/node_modules/.bin/node-gyp")
elif [ -n "${npm_config_node_gyp:-}" ] && [ -f "${npm_config_node_gyp}" ]; then
  gyp=(node "${npm_config_node_gyp}")
elif npm_root="$(npm root -g 2>/dev/null)" && [ -f "$npm_root/npm/node_modules/node-gyp/bin/node-gyp.js" ]; then
  gyp=(node "$npm_root/npm/node_modules/node-gyp/bin/node-gyp.js")
else
  gyp=(npx --yes node-gyp)
fi

# Use the headers that come with this node (Debian's nodejs ships them under
# /usr/include/node) rather than downloading them.
args=(rebuild --jobs "$(nproc 2>/dev/null || echo 2)")
node_prefix="$(node -p 'require("path").dirname(require("path").dirname(process.execPath))')"
if [ -f "$node_prefix/include/node/node_api.h" ] && [ -f "$node_prefix/include/node/common.gypi" ]; then
  args+=(--nodedir="$node_prefix")
fi

echo "build-native: ${gyp[*]} ${args[*]} (in native/)"
(cd native && "${gyp[@]}" "${args[@]}")
out=native/build/Release/pumice_rbd.node
node -e "const m = require('./$out'); const v = m.versions(); console.log('build-native: built $out (librbd ' + v.librbd + ', librados ' + v.librados + ')')"
