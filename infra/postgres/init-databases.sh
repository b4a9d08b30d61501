#!/bin/bash
# Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d/):
# one database and owner for the Prefect server, one for TiefVision's annotations, so each
# service holds only its own credentials. Passwords come from compose.yaml's environment
# and reach SQL as psql variables (:'name' quotes them), never spliced into the SQL text.
set -euo pipefail

create_database() {  # NAME PASSWORD: a login role NAME owning database NAME
  psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    -v name="$1" -v password="$2" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
SQL
}

create_database prefect "$POSTGRES_PREFECT_PASSWORD"
create_database tiefvision "$POSTGRES_TIEFVISION_PASSWORD"
