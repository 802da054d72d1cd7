#!/usr/bin/env bash
# Entrypoint of the `postgres-replica` service: a hot standby streaming from `postgres`.
#
# The first time (empty data folder) it clones the primary with pg_basebackup: -X stream
# copies the WAL written meanwhile, -R writes standby.signal and primary_conninfo, -S
# streams through the slot primary-init.sh created, so the primary keeps the WAL the
# replica has not received yet.  Then it hands over to the image's own entrypoint, which
# finds the data folder initialised and starts the server as the postgres user.
set -euo pipefail

: "${PGDATA:=/var/lib/postgresql/data}"
: "${PRIMARY_HOST:?PRIMARY_HOST is not set}"
: "${PRIMARY_PORT:=5432}"
: "${REPLICATION_USER:?REPLICATION_USER is not set}"
: "${REPLICATION_PASSWORD:?REPLICATION_PASSWORD is not set}"
: "${REPLICATION_SLOT:?REPLICATION_SLOT is not set}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "replica: cloning $PRIMARY_HOST:$PRIMARY_PORT into $PGDATA"
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    until pg_isready --quiet --host "$PRIMARY_HOST" --port "$PRIMARY_PORT"; do
        echo "replica: waiting for $PRIMARY_HOST:$PRIMARY_PORT"
        sleep 1
    done
    # The password goes into primary_conninfo with the rest of the connection (-R).
    PGPASSWORD="$REPLICATION_PASSWORD" gosu postgres pg_basebackup \
        --host "$PRIMARY_HOST" --port "$PRIMARY_PORT" --username "$REPLICATION_USER" \
        --pgdata "$PGDATA" --wal-method stream --write-recovery-conf \
        --slot "$REPLICATION_SLOT" --checkpoint fast --no-password --progress
fi

exec docker-entrypoint.sh "$@"
