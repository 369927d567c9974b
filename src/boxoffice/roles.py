"""Least privilege: migrations run as the schema owner, the service as a role that may only
read and write rows.

The service role can SELECT, INSERT, UPDATE and DELETE rows of boxoffice's tables and use
their sequences. It cannot create, alter, drop or truncate anything, move the migration
version, or change roles: an SQL injection or a stolen service password cannot drop the
schema or rewrite the audit trail's table.

The embedded default sets this up by itself (`boxoffice_app`, trusted on the server's own
Unix socket). On an external server a DBA creates the role once (README, "An external
PostgreSQL"); every `boxoffice migrate` run as MIGRATE_DATABASE_URL then grants the service
role its rights on the tables, also on those a new migration added.
"""

from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from boxoffice.config import asyncpg_dsn

APP_ROLE = "boxoffice_app"

# Embedded only: the server is ours, so the owner (a superuser) may create the role.
# NOINHERIT: the role holds exactly what is granted to it, nothing through memberships.
CREATE_APP_ROLE = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
        CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
    END IF;
END
$$;
"""

# Run by the owner after every migration, so new tables get their grants too; idempotent.
# `{role}` is a quoted identifier (GRANT takes no bind parameters).
GRANT_ROW_RIGHTS = """
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role};
-- Which migration the schema is at: the service may read it, never move it.
REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM {role};
"""


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def url_user(url: str) -> str | None:
    """The user a postgresql:// URL connects as, if it names one."""
    userinfo, at, _ = urlsplit(url).netloc.rpartition("@")
    if not at:
        return None
    return unquote(userinfo.partition(":")[0]) or None


def with_user(url: str, user: str) -> str:
    """The same server and database, as another user (no password: the embedded server trusts
    its own Unix socket)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


async def grant_row_rights(owner_url: str, role: str, *, create: bool = False) -> None:
    """As the schema owner: give `role` row rights on every table (creating it first if
    `create`), and no right to change the schema."""
    # asyncpg itself: the statements are several, which a prepared statement cannot be.
    conn = await asyncpg.connect(asyncpg_dsn(owner_url))
    try:
        if create:
            await conn.execute(CREATE_APP_ROLE)
            # PostgreSQL before 15 lets every role create tables in `public`; not ours.
            await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            database = await conn.fetchval("SELECT current_database()")
            await conn.execute(
                f"GRANT CONNECT ON DATABASE {quote_identifier(database)} TO {APP_ROLE}"
            )
        await conn.execute(GRANT_ROW_RIGHTS.format(role=quote_identifier(role)))
    finally:
        await conn.close()
