"""The service connects as a role that may only read and write rows: embedded by default, and
on an external server with the README's statements and MIGRATE_DATABASE_URL. Checked the way
an attacker with the service's connection would try: DDL, TRUNCATE, moving the migration."""

import asyncio
import os
import re
import signal
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from boxoffice.roles import with_user
from boxoffice.seed import ORIGINAL_DEMO_TICKET
from tests.conftest import Databases, embedded_data_dir, execute_sql, serving, with_database
from tests.support.embedded import serve_embedded

# The system layer (tests/support/system.py). Each test starts `boxoffice serve` (on an embedded
# PostgreSQL of its own, or an external one).
pytestmark = pytest.mark.system

README = Path(__file__).resolve().parent.parent / "README.md"

# What a stolen service connection would try; each must be refused by the server itself.
FORBIDDEN = [
    "DROP TABLE tickets",
    "TRUNCATE ticket_audit",
    "ALTER TABLE tickets DROP CONSTRAINT tickets_pkey",
    "CREATE TABLE stash (x int)",
    "UPDATE alembic_version SET version_num = 'x'",
    "DELETE FROM alembic_version",
]


async def service_users(owner_url: str) -> set[str]:
    """Who the service's workers are connected as, seen from the server."""
    conn = await asyncpg.connect(owner_url)
    try:
        rows = await conn.fetch(
            "SELECT DISTINCT usename FROM pg_stat_activity"
            " WHERE datname = current_database() AND backend_type = 'client backend'"
            " AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return {row["usename"] for row in rows}


async def refused_statements(service_url: str) -> dict[str, str]:
    """Each forbidden statement, run as the service, with the error it got ("" if it ran)."""
    conn = await asyncpg.connect(service_url)
    outcomes = {}
    try:
        for statement in FORBIDDEN:
            try:
                async with conn.transaction():
                    await conn.execute(statement)
                outcomes[statement] = ""
            except asyncpg.PostgresError as error:
                outcomes[statement] = error.sqlstate
        # It can still do its job: read the rows.
        assert await conn.fetchval("SELECT count(*) FROM tickets") > 0
    finally:
        await conn.close()
    return outcomes


def reserve_demo_ticket(base_url: str) -> None:
    response = httpx.patch(
        base_url + "/tickets/reserve",
        json={"user_id": 1, "ticket_id": str(ORIGINAL_DEMO_TICKET)},
        timeout=10,
    )
    assert response.status_code in (200, 409), response.text


def assert_least_privilege(owner_url: str, service_url: str, role: str) -> None:
    users = asyncio.run(service_users(owner_url))
    assert users == {role}, f"the workers connect as {users}, not only as {role}"
    outcomes = asyncio.run(refused_statements(service_url))
    # 42501 insufficient_privilege; 42501 also for CREATE in a schema without the right.
    assert all(code == "42501" for code in outcomes.values()), outcomes


@pytest.mark.skipif(
    bool(os.environ.get("SKIP_EMBEDDED_TESTS")), reason="SKIP_EMBEDDED_TESTS is set"
)
def test_the_embedded_service_runs_as_a_row_only_role() -> None:
    with embedded_data_dir() as folder:
        data_dir = folder / "data"
        with serve_embedded(data_dir, folder / "serve.log") as (process, base_url):
            reserve_demo_ticket(base_url)
            owner_url = (data_dir / "database_url").read_text().strip()
            assert_least_privilege(
                owner_url, with_user(owner_url, "boxoffice_app"), "boxoffice_app"
            )
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0


def readme_role_sql() -> str:
    """The README's statements for a DBA, as written there."""
    section = README.read_text().split("### An external PostgreSQL", 1)[1]
    return re.search(r"```sql\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_an_external_server_set_up_as_the_readme_says(
    databases: Databases, postgres_server_url: str, tmp_path: Path
) -> None:
    # Roles are the whole server's: a name of this run's own, dropped at the end.
    role = f"boxoffice_app_{uuid.uuid4().hex[:8]}"
    owner_url = databases.create("boxoffice_privilege")
    database = urlsplit(owner_url).path.lstrip("/")
    sql = (
        readme_role_sql()
        .replace("boxoffice_app", role)
        .replace("DATABASE boxoffice", f'DATABASE "{database}"')
    )
    asyncio.run(execute_sql(owner_url, sql))
    service_url = with_user(owner_url, role)
    try:
        # A rate limit on, so the reservation also writes its client's bucket as the role.
        with serving(
            service_url,
            tmp_path / "serve.log",
            MIGRATE_DATABASE_URL=owner_url,
            RATE_LIMIT_RESERVATIONS_PER_MINUTE="30",
        ) as served:
            # `serve` migrated as the owner (the role could not have) and seeded the demo.
            reserve_demo_ticket(served.url)
            assert_least_privilege(owner_url, service_url, role)
    finally:
        server = with_database(postgres_server_url, "postgres")
        asyncio.run(execute_sql(owner_url, f"DROP OWNED BY {role}"))
        asyncio.run(execute_sql(server, f'DROP DATABASE "{database}" WITH (FORCE)'))
        asyncio.run(execute_sql(server, f"DROP ROLE {role}"))
