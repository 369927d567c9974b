"""Least privilege: migrations run as the schema owner, the service as a role that may only
read and write rows.

The service role can SELECT, INSERT, UPDATE and DELETE rows of boxoffice's tables and use
their sequences. It cannot create, alter, drop or truncate anything, read another database,
or change roles: an SQL injection or a stolen service password cannot drop the schema or
rewrite the audit trail's table. The embedded default sets this up by itself; for an external
server the README shows the same statements for a DBA to run once.
"""

from urllib.parse import urlsplit, urlunsplit

import asyncpg

APP_ROLE = "boxoffice_app"

# Run by the owner after every migration (new tables get their grants too); idempotent.
# NOINHERIT and no CREATE on the schema: the role holds exactly what is granted here.
GRANT_APP_ROLE = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
        CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
    END IF;
END
$$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO {APP_ROLE};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE};
-- Which migration the schema is at: the service may read it, never move it.
REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM {APP_ROLE};
"""


def with_user(url: str, user: str) -> str:
    """The same server and database, as another user (no password: the embedded server trusts
    its own Unix socket)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


async def grant_app_role(owner_url: str) -> None:
    conn = await asyncpg.connect(owner_url)
    try:
        database = await conn.fetchval("SELECT current_database()")
        await conn.execute(GRANT_APP_ROLE)
        # An identifier, not a parameter: GRANT takes no $1. The name comes from the server.
        await conn.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {APP_ROLE}')
    finally:
        await conn.close()
