#!/bin/sh
# Creates or upgrades Temporal's two PostgreSQL databases with temporal-sql-tool, as every
# deployment of the billing topology does before its server processes start: `npm run cluster`
# (src/embedded/temporal-cluster.ts) and docker-compose.yml's temporal-schema one-shot.
# Idempotent: an existing database is kept, and update-schema applies only the versions
# it lacks, so it runs on every start (and is how a server upgrade migrates the schema).
#
# Environment (the names deploy/temporal/server.yaml reads):
#   POSTGRES_SEEDS, DB_PORT, POSTGRES_USER, POSTGRES_PWD, DBNAME, VISIBILITY_DBNAME
#   SCHEMA_DIR         schema/postgresql/v12 of the server's release (the admin-tools image has it)
#   TEMPORAL_SQL_TOOL  the tool (default: temporal-sql-tool on PATH)
set -eu

tool="${TEMPORAL_SQL_TOOL:-temporal-sql-tool}"
schema_dir="${SCHEMA_DIR:-/etc/temporal/schema/postgresql/v12}"

# sql DATABASE COMMAND [ARGS...]
sql() {
  database="$1"
  shift
  "$tool" --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "${DB_PORT:-5432}" \
    -u "$POSTGRES_USER" --pw "${POSTGRES_PWD:-}" --db "$database" "$@"
}

# The tool logs every statement: show its output only when it fails.
quietly() {
  if ! out="$("$@" 2>&1)"; then
    printf '%s\n' "$out" >&2
    exit 1
  fi
}

for pair in "${DBNAME:-temporal}:temporal" "${VISIBILITY_DBNAME:-temporal_visibility}:visibility"; do
  db="${pair%%:*}"
  schema="${pair##*:}"
  # A second start finds the database: only that error is acceptable.
  if ! out="$(sql "$db" create-database 2>&1)"; then
    case "$out" in
      *"already exists"*) ;;
      *) printf '%s\n' "$out" >&2; exit 1 ;;
    esac
  fi
  # Version 0.0 creates only the schema_version tables (a no-op when they exist); then
  # update-schema brings the database to the newest version under versioned/.
  quietly sql "$db" setup-schema -v 0.0
  quietly sql "$db" update-schema -d "$schema_dir/$schema/versioned"
  echo "temporal schema: $db at the newest $schema version"
done
