#!/usr/bin/env bash
# Usage: scripts/with-postgres.sh CMD [ARGS...]
# Starts a throwaway PostgreSQL 15 (Debian's, /usr/lib/postgresql/15/bin) in a temp
# dir on a free loopback port, exports PUMICE_TEST_DATABASE=postgresql://… (a superuser
# that may CREATE DATABASE: each test server gets its own), runs CMD, then stops the
# server and removes the directory whatever CMD's exit code (also on Ctrl-C / TERM),
# and exits with CMD's code. PostgreSQL refuses to run as root: as root, the server
# runs as the `postgres` system user (the Debian package creates it) through runuser.
set -uo pipefail
if [ $# -eq 0 ]; then
  echo "usage: $0 CMD [ARGS...]   (runs CMD with PUMICE_TEST_DATABASE set to a fresh PostgreSQL)" >&2
  exit 2
fi
bin="${PUMICE_PG_BIN:-/usr/lib/postgresql/15/bin}"
if [ ! -x "$bin/initdb" ]; then
  echo "with-postgres: $bin/initdb not found: install Debian's postgresql package (scripts/install-deps.sh)" >&2
  exit 1
fi
as_owner=()
if [ "$(id -u)" = 0 ]; then
  if ! id postgres >/dev/null 2>&1; then
    echo "with-postgres: running as root needs the postgres system user (install the postgresql package)" >&2
    exit 1
  fi
  as_owner=(runuser -u postgres --)
fi
dir="$(mktemp -d "${TMPDIR:-/tmp}/pumice-pg.XXXXXX")" || exit 1
chmod 755 "$dir"
data="$dir/data"
password="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
[ "$(id -u)" = 0 ] && chown postgres: "$dir"

cleanup() {
  "${as_owner[@]}" "$bin/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

printf '%s\n' "$password" >"$dir/pwfile"
[ "$(id -u)" = 0 ] && chown postgres: "$dir/pwfile"
# C collation: text sorts by bytes as in SQLite, so listings page the same on both engines.
if ! "${as_owner[@]}" "$bin/initdb" -D "$data" -U pumice --pwfile="$dir/pwfile" -E UTF8 --locale=C \
  --auth-local=scram-sha-256 --auth-host=scram-sha-256 >"$dir/initdb.log" 2>&1; then
  cat "$dir/initdb.log" >&2
  exit 1
fi
rm -f "$dir/pwfile"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# Throwaway cluster: durability off (fsync), small shared memory, sockets in the temp dir.
if ! "${as_owner[@]}" "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 30 start \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >/dev/null; then
  cat "$dir/server.log" >&2
  exit 1
fi
export PUMICE_TEST_DATABASE="postgresql://pumice:$password@127.0.0.1:$port/postgres"
"$@"
exit $?
