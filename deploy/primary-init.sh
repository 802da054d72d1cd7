#!/usr/bin/env bash
# Runs once, when the `postgres` service initialises an empty data folder (the image runs
# every executable file in /docker-entrypoint-initdb.d/ as the postgres user): create the
# role and the physical replication slot the `postgres-replica` service streams through,
# and let that role connect for replication.
set -euo pipefail

: "${REPLICATION_USER:?REPLICATION_USER is not set}"
: "${REPLICATION_PASSWORD:?REPLICATION_PASSWORD is not set}"
: "${REPLICATION_SLOT:?REPLICATION_SLOT is not set}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set user="$REPLICATION_USER" --set password="$REPLICATION_PASSWORD" \
    --set slot="$REPLICATION_SLOT" <<'SQL'
CREATE ROLE :"user" WITH REPLICATION LOGIN PASSWORD :'password';
SELECT pg_create_physical_replication_slot(:'slot');
SQL

# The image's own line (`host all all all scram-sha-256`) does not cover replication
# connections: the database column `all` never matches `replication`.
echo "host replication $REPLICATION_USER all scram-sha-256" >>"$PGDATA/pg_hba.conf"
