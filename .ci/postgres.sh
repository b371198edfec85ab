#!/usr/bin/env bash
# Starts a loopback-only PostgreSQL server for the storage tests and prints the export line.
#
# Usage: eval "$(bash .ci/postgres.sh)"
#
# The server lives in $GRISTMILL_PG_DIR (default /var/tmp/gristmill-postgres), listens on
# 127.0.0.1 only, and is owned by the `postgres` system user. A second run reuses the running
# server. Everything except the final `export` line goes to stderr, so `eval` runs only that line.
# Must run as root, because it installs packages and switches to the `postgres` user.
set -euo pipefail

dir=${GRISTMILL_PG_DIR:-/var/tmp/gristmill-postgres}
data="$dir/data"
database=gristmill_test
user=gristmill

log() { echo "postgres.sh: $*" >&2; }

as_postgres() { su postgres -s /bin/sh -c "$1"; }

# Returns success when nothing accepts TCP connections on 127.0.0.1:$1.
port_is_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints 5432 when it is free, else a port the kernel hands out for a bind to port 0.
choose_port() {
    if port_is_free 5432; then
        echo 5432
    else
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    fi
}

find_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

bin=$(find_bin)
if [ -z "$bin" ] || [ ! -x "$bin/pg_ctl" ]; then
    log "installing PostgreSQL from Debian's packages"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    bin=$(find_bin)
fi

mkdir -p "$dir"
chown postgres:postgres "$dir"
chmod 700 "$dir"

if [ ! -f "$data/PG_VERSION" ]; then
    log "creating a cluster in $data"
    # The superuser authenticates by peer over the socket in $dir; TCP clients need a password.
    as_postgres "$bin/initdb -D '$data' -U postgres --auth-local=peer --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 >/dev/null"
    head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$dir/password"
    chown postgres:postgres "$dir/password"
    chmod 600 "$dir/password"
fi
password=$(cat "$dir/password")

if as_postgres "$bin/pg_ctl status -D '$data'" >/dev/null 2>&1; then
    port=$(cat "$dir/port")
    log "reusing the server on 127.0.0.1:$port"
else
    port=$(cat "$dir/port" 2>/dev/null || true)
    if [ -z "$port" ] || ! port_is_free "$port"; then
        port=$(choose_port)
    fi
    echo "$port" >"$dir/port"
    log "starting the server on 127.0.0.1:$port"
    # Only loopback: listen_addresses is fixed here, whatever postgresql.conf sets. The data is
    # throwaway test data, so fsync=off trades crash safety for faster tests.
    as_postgres "$bin/pg_ctl start -D '$data' -l '$dir/server.log' -w -t 30 \
        -o \"-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off\"" >/dev/null
fi

psql_admin() {
    as_postgres "$bin/psql -h '$dir' -p $port -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt -c \"$1\""
}

if [ -z "$(psql_admin "SELECT 1 FROM pg_roles WHERE rolname = '$user'")" ]; then
    psql_admin "CREATE ROLE $user LOGIN PASSWORD '$password'"
fi
if [ -z "$(psql_admin "SELECT 1 FROM pg_database WHERE datname = '$database'")" ]; then
    psql_admin "CREATE DATABASE $database OWNER $user"
fi

echo "export GRISTMILL_TEST_POSTGRES_URL=postgres://$user:$password@127.0.0.1:$port/$database"
