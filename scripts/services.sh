#!/usr/bin/env bash
# Make sure the local services the tests talk to are up: PostgreSQL on 127.0.0.1:5432
# and Redis on 127.0.0.1:6379.  Starts whichever is down; under CI=true a service that
# cannot be started fails the run.
set -uo pipefail

failed=0

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

wait_for() {  # name, check
  for _ in $(seq 1 50); do "$2" && return 0; sleep 0.2; done
  return 1
}

if command -v pg_isready >/dev/null && ! pg_up; then
  echo "PostgreSQL is down; starting it" >&2
  for version in $(ls /etc/postgresql 2>/dev/null); do
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  done
  wait_for postgresql pg_up || { echo "PostgreSQL did not start" >&2; failed=1; }
elif ! command -v pg_isready >/dev/null; then
  echo "PostgreSQL tools not found" >&2; failed=1
fi

# The read-replica tests stream a replica from this primary: allow replication
# connections from 127.0.0.1 (Debian's default pg_hba.conf has none).
if pg_up; then
  hba=$(psql -h 127.0.0.1 -U postgres -Atc "show hba_file" 2>/dev/null)
  if [ -n "$hba" ] && [ -w "$hba" ] && ! grep -qE '^host\s+replication\s+\S+\s+127\.0\.0\.1/32' "$hba"; then
    echo "allowing replication connections from 127.0.0.1 in $hba" >&2
    printf '%s\n' "host replication postgres 127.0.0.1/32 trust" >> "$hba"
    psql -h 127.0.0.1 -U postgres -qAtc "select pg_reload_conf()" >/dev/null
  fi
fi

if command -v redis-server >/dev/null && ! redis_up; then
  echo "Redis is down; starting it" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  wait_for redis redis_up || { echo "Redis did not start" >&2; failed=1; }
elif ! command -v redis-server >/dev/null; then
  echo "Redis not found" >&2; failed=1
fi

if [ "$failed" -ne 0 ] && [ "${CI:-}" = "true" ]; then
  echo "a service the tests need is missing (CI=true)" >&2
  exit 1
fi
exit 0
