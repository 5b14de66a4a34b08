#!/usr/bin/env bash
# Start (or reuse) a throwaway PostgreSQL server for the test suite and print its URL.
# Installs Debian's postgresql package when no server binaries are present. The cluster
# lives in $SWARMPRESS_PG_DIR (default /tmp/swarmpress-pg), listens on 127.0.0.1 only.
set -euo pipefail
DIR=${SWARMPRESS_PG_DIR:-/tmp/swarmpress-pg}
PORT=${SWARMPRESS_PG_PORT:-54329}
find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
PGBIN=$(find_bin)
if [ -z "$PGBIN" ] || ! id postgres >/dev/null 2>&1; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  PGBIN=$(find_bin)
fi
if ! "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
  rm -rf "$DIR"
  mkdir -p "$DIR"
  chown postgres "$DIR"
  su postgres -s /bin/sh -c "'$PGBIN/initdb' -D '$DIR/data' -A trust -U postgres" >/dev/null
  su postgres -s /bin/sh -c "'$PGBIN/pg_ctl' -D '$DIR/data' -l '$DIR/log' -w \
    -o \"-p $PORT -k '$DIR' -c listen_addresses=127.0.0.1 -c max_connections=200\" start" >/dev/null
fi
echo "postgresql://postgres@127.0.0.1:$PORT/postgres"
