#!/bin/sh
# The official image's contract, in short: on an empty $PGDATA, create the
# cluster with superuser $POSTGRES_USER (password from $POSTGRES_PASSWORD_FILE,
# read as root, as the official image does) and database $POSTGRES_DB; then run
# the server as postgres, listening on the container's network, password required.
set -eu
if [ "${1:-}" != postgres ]; then
    exec "$@"
fi
shift
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
mkdir -p "$PGDATA"
chown postgres:postgres "$PGDATA"
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    # initdb reads the password from a file: a copy only postgres can read, removed after.
    pwfile="$(mktemp)"
    if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
        cat "$POSTGRES_PASSWORD_FILE" > "$pwfile"
    else
        printf '%s\n' "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD_FILE or POSTGRES_PASSWORD}" > "$pwfile"
    fi
    chown postgres "$pwfile"
    as_postgres initdb -D "$PGDATA" --username="$user" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 > /dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    if [ "$db" != postgres ]; then
        echo "CREATE DATABASE \"$db\" OWNER \"$user\";" | as_postgres postgres --single -D "$PGDATA" postgres > /dev/null
    fi
    echo "PostgreSQL init process complete; ready for start up."
fi
unset POSTGRES_PASSWORD
exec setpriv --reuid=postgres --regid=postgres --init-groups postgres "$@"
