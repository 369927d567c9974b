#!/usr/bin/env bash
# Patroni's bootstrap.post_bootstrap: run once, on the node that initialises the cluster, with
# a superuser connection URL as its argument. Creates db.env's POSTGRES_USER (a login role,
# not a superuser) and POSTGRES_DB owned by it, which the service migrates and serves as.
set -euo pipefail
url=${1:?usage: boxoffice-ha-post-bootstrap SUPERUSER_URL}
: "${POSTGRES_USER:?POSTGRES_USER unset: the node needs db.env}"
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD unset: the node needs db.env}"
db=${POSTGRES_DB:-$POSTGRES_USER}

# psql's :'var' quotes a value as a literal, format's %I and %L quote names and literals.
/usr/lib/postgresql/15/bin/psql "$url" -v ON_ERROR_STOP=1 -q \
    -v user="$POSTGRES_USER" -v password="$POSTGRES_PASSWORD" -v db="$db" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'user', :'password')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL
echo "boxoffice-ha-post-bootstrap: role $POSTGRES_USER and database $db are in place"
