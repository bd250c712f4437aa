#!/usr/bin/env bash
# A second local PostgreSQL cluster whose every COMMIT waits for a synchronous standby that never connects
# (synchronous_standby_names = 'never_answers'): the logical relay's tests of the visibility gap need commits that
# are in the WAL, and so streamed, but not yet visible. Idempotent: reuses a cluster that answers, initialises one
# when its directory is missing, starts it, and waits for its port.
# Environment: SYNC_STANDBY_PG_PORT (5433), SYNC_STANDBY_PG_DIR (/var/tmp/txoutbox-sync-standby-pg),
# PG_BIN (the newest /usr/lib/postgresql/*/bin).
set -euo pipefail

port=${SYNC_STANDBY_PG_PORT:-5433}
dir=${SYNC_STANDBY_PG_DIR:-/var/tmp/txoutbox-sync-standby-pg}
bin=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}

answers() { "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -d postgres; }
if answers; then echo "sync-standby-pg: answers on 127.0.0.1:$port"; exit 0; fi
# Test files may call this at the same moment: one at a time (the server must not inherit the lock: 9>&-).
exec 9>"$dir.lock"
flock 9
if answers; then echo "sync-standby-pg: answers on 127.0.0.1:$port"; exit 0; fi

# PostgreSQL refuses to run as root: as root, run it as the postgres OS user.
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ ! -s "$dir/PG_VERSION" ]; then
  echo "sync-standby-pg: initialising $dir"
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  chmod 700 "$dir"
  # The tests connect as root over TCP without a password, like the main cluster's.
  as_owner "$bin/initdb" -D "$dir" -U root --auth=trust --no-sync >/dev/null 9>&-
  cat >>"$dir/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
wal_level = logical
max_wal_senders = 20
max_replication_slots = 20
synchronous_standby_names = 'never_answers'
shared_buffers = 32MB
fsync = off
full_page_writes = off
CONF
fi

echo "sync-standby-pg: starting on 127.0.0.1:$port"
as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 start >/dev/null 9>&- ||
  echo "sync-standby-pg: pg_ctl start failed (see $dir/server.log); waiting for the port anyway"
for _ in $(seq 1 60); do
  if answers; then
    # Its own commits would wait for the standby too: this one says it does not.
    PGOPTIONS='-c synchronous_commit=local' "$bin/psql" -h 127.0.0.1 -p "$port" -U root -d postgres -XqtAc \
      "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 ||
      PGOPTIONS='-c synchronous_commit=local' "$bin/psql" -h 127.0.0.1 -p "$port" -U root -d postgres -Xqc 'CREATE DATABASE test'
    echo "sync-standby-pg: up"
    exit 0
  fi
  sleep 1
done
echo "sync-standby-pg: did not come up on 127.0.0.1:$port (see $dir/server.log)" >&2
exit 1
