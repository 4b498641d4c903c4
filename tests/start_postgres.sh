#!/usr/bin/env bash
# PostgreSQL 15 (Debian's `postgresql` package) for the shared-queue tests: its own initdb'd
# cluster in WAN22CTL_PG_DIR, run as the postgres user on a free loopback port, with a role
# `wan22` (password auth, CREATEDB) that tests create their throw-away databases with.
# Idempotent: a second run finds the running cluster and only prints its URL again.
# Prints one line, the admin URL: postgresql://wan22:PASSWORD@127.0.0.1:PORT/postgres
# Needs root (initdb and the server run as the postgres user).
set -euo pipefail

PG_DIR=${WAN22CTL_PG_DIR:-/opt/wan22ctl-ci/postgres}
DATA=$PG_DIR/data
say() { echo "$@" >&2; }

if [ "$(id -u)" != 0 ]; then
    say "start_postgres.sh: needs root (initdb and postgres run as the postgres user)"
    exit 3
fi
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
    say "== installing postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
as_pg() { runuser -u postgres -- "$@"; }

mkdir -p "$PG_DIR"
chown postgres:postgres "$PG_DIR"
chmod 700 "$PG_DIR"
if [ ! -f "$DATA/PG_VERSION" ]; then
    password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
    printf '%s\n' "$password" > "$PG_DIR/password"
    as_pg "$PG_BIN/initdb" -D "$DATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >> "$DATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_DIR'
max_connections = 300
fsync = on
EOF
fi
password=$(cat "$PG_DIR/password")

if ! as_pg "$PG_BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    # below the ephemeral range, as tests/ports.py explains
    port=$(python3 -c 'import random, socket
for p in random.sample(range(20000, 32768), 200):
    try:
        socket.create_server(("127.0.0.1", p)).close(); print(p); break
    except OSError: pass')
    as_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$PG_DIR/server.log" -w -t 60 -o "-p $port" start >/dev/null \
        || { say "postgres did not start:"; tail -20 "$PG_DIR/server.log" >&2; exit 1; }
    echo "$port" > "$PG_DIR/port"
fi
port=$(cat "$PG_DIR/port")
as_pg "$PG_BIN/psql" -h "$PG_DIR" -p "$port" -U postgres -d postgres -qtA -v ON_ERROR_STOP=1 >/dev/null <<EOF
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'wan22') THEN
    CREATE ROLE wan22 LOGIN CREATEDB PASSWORD '$password';
  END IF;
END \$\$;
EOF
echo "postgresql://wan22:$password@127.0.0.1:$port/postgres"
