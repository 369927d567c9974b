"""A drill: a fresh cluster, a rush through the load balancer, one fault in the middle of it,
then the verdict read from the database (what the clients were told against what is there)."""

import asyncio
import os
import secrets
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from boxoffice.config import Settings
from boxoffice.db import Database
from boxoffice.drill.cluster import API_URL, LEADER_URL, Cluster, ClusterError
from boxoffice.drill.rush import Ledger, Rush, Stream, join_queue
from boxoffice.invariants import check_invariants
from boxoffice.live.relay import RELAY_LOCK
from boxoffice.simulate.load import client
from boxoffice.simulate.runner import Target, event_ticket_ids
from boxoffice.simulate.scenarios import seated_sections

SEATS = 4000
# Short holds, so holds lapse during the drill and the sweeper (on whichever node leads) must
# release them.
HOLD_SECONDS = 3
WARM_UP_SECONDS = 5.0
# After the fault: the rush goes on until requests have succeeded for this long in a row…
SETTLED_SECONDS = 6.0
# …but at most this long: a cluster that has not recovered by then fails the drill.
RECOVERY_LIMIT_SECONDS = 60.0
QUIET_LIMIT_SECONDS = 20.0
# No answer may take longer: at most POOL_TIMEOUT_SECONDS (2) waiting for a connection, or
# HAProxy's ~1.5 s to notice a dead leader and cut the session a request waits on, plus the
# trip through the load balancer on a machine the rush keeps busy.
HANG_SECONDS = 3.5
# How long the database and HAProxy wait on a client that went silent (deploy/ha's
# tcp_user_timeout and tcp-ut) before ending its session and its transaction.
DEAD_CLIENT_SECONDS = 10.0

Say = Callable[[str], None]


@dataclass(frozen=True)
class Fault:
    """What a phase breaks, and how the verdict judges the errors it causes."""

    name: str
    # failover: only 503s may fail; api-host-loss: connection errors for in-flight requests.
    errors_allowed: str


FAULTS = {
    "kill": Fault("kill", "503"),  # the primary's Patroni and postmaster, SIGKILL
    "postmaster": Fault("postmaster", "503"),  # the primary's postmaster alone, SIGKILL
    "netcut": Fault("netcut", "503"),  # the primary's host link down
    "switchover": Fault("switchover", "503"),  # patronictl switchover
    "api-kill": Fault("api-kill", "in-flight"),  # one API host's serve, SIGKILL
    "api-netcut": Fault("api-netcut", "in-flight"),  # one API host's link down
}


async def create_event(target: Target, **fields: Any) -> str:
    body = {
        "name": "failover drill",
        "venue": "deploy/ha",
        "starts_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        "hold_seconds": HOLD_SECONDS,
        **fields,
    }
    async with client(target.url, connections=1, timeout=30) as http:
        response = await http.post(
            "/events", json=body, headers={"Authorization": f"Bearer {target.admin_token}"}
        )
        if response.status_code != 201:
            raise ClusterError(f"POST /events answered {response.status_code}: {response.text}")
        return str(response.json()["id"])


def inject(cluster: Cluster, fault: str, say: Say, *, api_host: str) -> str:
    """Break the cluster; returns what was broken."""
    if fault.startswith("api-"):
        if fault == "api-kill":
            cluster.kill_api_host(api_host)
        else:
            cluster.cut(api_host)
        say(f"{fault}: {api_host}")
        return api_host
    leader = cluster.wait_for_leader(seconds=10)
    if fault == "kill":
        cluster.kill_node(leader)
    elif fault == "postmaster":
        cluster.kill_node(leader, postmaster_only=True)
    elif fault == "netcut":
        cluster.cut(leader)
    elif fault == "switchover":
        cluster.switchover(leader)
    say(f"{fault}: {leader}")
    return leader


async def admitted_since(queue_event_id: str, since: datetime) -> int:
    """Places the waiting room's admitter admitted since the fault."""
    conn = await asyncpg.connect(LEADER_URL, timeout=10)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM queue_entries WHERE event_id = $1 AND admitted_at > $2",
            uuid.UUID(queue_event_id),
            since,
        )
    finally:
        await conn.close()
    return count


async def relay_host() -> str | None:
    """Which API host's worker holds the relay's lock on the leader (the session's
    application_name carries the worker's pid); `gone` if that process no longer exists."""
    conn = await asyncpg.connect(LEADER_URL, timeout=10)
    try:
        holder = await conn.fetchval(
            """SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)
               WHERE l.locktype = 'advisory' AND l.granted
                 AND l.classid::bigint = $1 AND l.objid::bigint = $2""",
            RELAY_LOCK >> 32,
            RELAY_LOCK & 0xFFFFFFFF,
        )
    finally:
        await conn.close()
    if holder is None:
        return None
    pid = holder.rpartition("/")[2]
    found = await asyncio.create_subprocess_exec(
        "ip",
        "netns",
        "identify",
        pid,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    namespace = (await found.communicate())[0].decode().strip()
    return namespace.removeprefix("bxha-") if namespace else "gone"


async def until_marked_down(cluster: Cluster, host: str) -> float | None:
    """When the load balancer took a lost API host out (None for a database node)."""
    if not host.startswith("api"):
        return None
    # Polled: HAProxy has no way to tell us.
    while (await asyncio.to_thread(cluster.balancer_status, "api", host)) != "DOWN":  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return time.monotonic()


async def run_until_settled(rush: Rush, fault_at: float) -> bool:
    """True once requests have succeeded for SETTLED_SECONDS in a row after the fault."""
    while time.monotonic() - fault_at < RECOVERY_LIMIT_SECONDS:
        await asyncio.sleep(0.25)
        now = time.monotonic()
        answers = rush.ledger.answers
        last_failure = max((a.finished for a in answers if a.failed), default=fault_at)
        recent = [a for a in answers if a.started > max(last_failure, fault_at)]
        if now - max(last_failure, fault_at) >= SETTLED_SECONDS and any(
            not a.failed for a in recent
        ):
            return True
    return False


async def verdict_from_database(
    database_url: str,
    ledger: Ledger,
    stream: Stream,
    event_id: str,
    quiet_since: datetime,
    fault_wall: datetime | None = None,
) -> dict[str, Any]:
    """What the clients were told, against the database on the (new) leader."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        event = uuid.UUID(event_id)
        holds = await conn.fetch(
            """SELECT r.id::text AS id, r.status,
                      array_agg(rt.ticket_id ORDER BY rt.ticket_id) AS tickets
               FROM reservations r JOIN reservation_tickets rt ON rt.reservation_id = r.id
               WHERE r.id = ANY($1::uuid[]) GROUP BY r.id""",
            list(ledger.holds),
        )
        found = {row["id"]: row for row in holds}
        lost_holds = [
            hold
            for hold, tickets in ledger.holds.items()
            if hold not in found or list(found[hold]["tickets"]) != tickets
        ]
        bookings = await conn.fetch(
            """SELECT b.id::text AS id, b.reservation_id::text AS hold,
                      (SELECT count(*) FROM tickets t WHERE t.booking_id = b.id) AS tickets
               FROM bookings b WHERE b.id = ANY($1::uuid[]) AND b.status = 'confirmed'""",
            list(ledger.bookings.values()),
        )
        booked = {row["id"]: row for row in bookings}
        lost_bookings = [
            booking
            for hold, booking in ledger.bookings.items()
            if booking not in booked
            or booked[booking]["hold"] != hold
            or booked[booking]["tickets"] != len(ledger.holds[hold])
        ]
        lost_releases = [
            hold
            for hold in ledger.released
            if hold not in found or found[hold]["status"] != "released"
        ]
        # Oversold: a seat in two confirmed bookings (the database's view), or two bookings a
        # client was told of that share a seat (the clients' view).
        oversold_rows = await conn.fetch(
            """SELECT rt.ticket_id FROM reservation_tickets rt
               JOIN bookings b ON b.reservation_id = rt.reservation_id
               WHERE b.event_id = $1 AND b.status = 'confirmed'
               GROUP BY rt.ticket_id HAVING count(*) > 1""",
            event,
        )
        told: dict[int, int] = {}
        for hold in ledger.bookings:
            for ticket in ledger.holds[hold]:
                told[ticket] = told.get(ticket, 0) + 1
        oversold = len(oversold_rows) + sum(1 for count in told.values() if count > 1)
        statuses = {
            row["id"]: row["status"]
            for row in await conn.fetch("SELECT id, status FROM tickets WHERE event_id = $1", event)
        }
        swept_after = await conn.fetchval(
            """SELECT count(*) FROM reservations
               WHERE event_id = $1 AND status = 'expired' AND ended_at > $2""",
            event,
            quiet_since,
        )
        # E-mail owed by bookings and sent since the fault: the outbox senders work on the new
        # leader. (The database's clock is this machine's.)
        mail_sent_after = await conn.fetchval(
            "SELECT count(*) FROM outbox_messages WHERE sent_at > $1",
            fault_wall or quiet_since,
        )
    finally:
        await conn.close()
    mismatched = sorted(t for t, s in statuses.items() if stream.statuses.get(t) != s)
    announced_not_booked = sorted(t for t in stream.announced_booked if statuses.get(t) != "booked")
    database = Database(Settings(database_url=database_url), url=database_url, size=1)
    try:
        violations = await check_invariants(database, event_id=event)
    finally:
        await database.close()
    return {
        "acknowledged": {
            "holds": len(ledger.holds),
            "bookings": len(ledger.bookings),
            "releases": len(ledger.released),
        },
        "acknowledged_lost": len(lost_holds) + len(lost_bookings) + len(lost_releases),
        "lost": {
            "holds": lost_holds[:5],
            "bookings": lost_bookings[:5],
            "releases": lost_releases[:5],
        },
        "oversold": oversold,
        "invariants": [str(violation) for violation in violations] or "hold",
        "stream_mismatched_tickets": len(mismatched),
        "stream_announced_uncommitted": len(announced_not_booked),
        "swept_after_fault": swept_after,
        "mail_sent_after_fault": mail_sent_after,
    }


async def stream_agrees(stream: Stream, event_id: str, *, seconds: float) -> None:
    """Wait (bounded) until no seat is held any more (every hold lapsed and swept: nothing can
    change after that) and the stream's map equals the database's: the relay on the new
    leader has caught up."""
    deadline = time.monotonic() + seconds
    conn = await asyncpg.connect(LEADER_URL, timeout=10)
    try:
        while time.monotonic() < deadline:
            rows = await conn.fetch(
                "SELECT id, status FROM tickets WHERE event_id = $1", uuid.UUID(event_id)
            )
            if all(row["status"] != "reserved" for row in rows) and all(
                stream.statuses.get(row["id"]) == row["status"] for row in rows
            ):
                return
            await asyncio.sleep(0.25)
    finally:
        await conn.close()


def judge_errors(
    ledger: Ledger, fault: Fault, fault_at: float, out_at: float | None, broken: str
) -> dict[str, Any]:
    failures = ledger.failures()
    kinds = ledger.kinds()
    result: dict[str, Any] = {
        "requests": len(ledger.answers),
        "failed_requests": len(failures),
        "errors": dict(kinds),
        "unavailable_seconds": round(
            max(a.finished for a in failures) - min(a.started for a in failures), 2
        )
        if failures
        else 0.0,
        "slowest_answer_seconds": round(
            max((a.finished - a.started for a in ledger.answers if not a.retry), default=0.0),
            2,
        ),
        "slowest_retry_seconds": round(
            max((a.finished - a.started for a in ledger.answers if a.retry), default=0.0), 2
        ),
        "bookings_after_fault": sum(
            1
            for a in ledger.answers
            if a.action == "confirm" and a.started > fault_at and a.status in (200, 201)
        ),
        "acknowledged_after_fault": sum(
            1
            for a in ledger.answers
            if a.started > fault_at and not a.failed and a.status and a.status < 300
        ),
    }
    result["non_503_errors"] = sum(count for kind, count in kinds.items() if kind != "503")
    result["improper_503s"] = sum(1 for a in failures if not a.proper_503)
    if fault.errors_allowed == "in-flight":
        # A host lost mid-rush: requests it had taken (in flight, or sent to it before the
        # load balancer noticed) may fail; none sent after it was taken out may.
        result["host_out_after_seconds"] = (
            round(out_at - fault_at, 2) if out_at is not None else None
        )
        result["failed_after_host_out"] = (
            sum(1 for a in failures if a.started > out_at) if out_at is not None else None
        )
        result["failed_not_in_flight"] = sum(
            1
            for a in failures
            if a.finished < fault_at
            or (a.status is not None and a.status not in (502, 504))
            or a.served_by not in ("", broken)
        )
        after = [a for a in ledger.answers if out_at is not None and a.started > out_at]
        hosts = sorted({a.served_by for a in after})
        result["served_after_loss"] = {
            host: sum(1 for a in after if a.served_by == host and not a.failed) for host in hosts
        }
    return result


async def phase(
    cluster: Cluster, fault_name: str, *, clients: int, workers: int, seed: int, say: Say
) -> dict[str, Any]:
    fault = FAULTS[fault_name]
    cluster.up(api_hosts=2, workers=workers)
    target = Target(API_URL, LEADER_URL, cluster.env["ADMIN_TOKEN"])
    event_id = await create_event(target, sections=seated_sections(SEATS))
    ticket_ids = await event_ticket_ids(target, event_id, request_timeout=30)
    # A second event sells through a waiting room that admits ten buyers a second.
    queue_event_id = await create_event(
        target,
        general_admission={"quantity": 100, "price": 1000},
        queue_enabled=True,
        queue_admit_per_minute=600,
    )
    say(f"{fault_name}: event {event_id}, {len(ticket_ids)} seats, {clients} clients")
    async with (
        client(API_URL, connections=clients + 2, timeout=15.0) as http,
        client(API_URL, connections=1, timeout=15.0) as stream_http,
    ):
        rush = Rush(http, event_id, ticket_ids, seed)
        stream = Stream(stream_http, event_id)
        follow = asyncio.create_task(stream.follow(rush.stop))
        buyers = [asyncio.create_task(rush.buyer(n)) for n in range(clients)]
        buyers.append(asyncio.create_task(join_queue(rush, queue_event_id)))
        await asyncio.sleep(WARM_UP_SECONDS)
        # An API host is lost with the relay's lock, the harder case: the other host must
        # take the live feed over.
        relay_before = await relay_host()
        api_host = relay_before if relay_before in ("api1", "api2") else "api1"
        fault_wall = datetime.now(UTC)
        broken = await asyncio.to_thread(inject, cluster, fault_name, say, api_host=api_host)
        fault_at = time.monotonic()
        marked_down = asyncio.create_task(until_marked_down(cluster, broken))
        recovered = await run_until_settled(rush, fault_at)
        rush.stop.set()
        await asyncio.gather(*buyers)
        out_at = marked_down.result() if marked_down.done() else None
        marked_down.cancel()
        leader_after = await asyncio.to_thread(cluster.leader)
        conn = await asyncpg.connect(LEADER_URL, timeout=10)
        try:
            quiet_since = await conn.fetchval("SELECT now()")
        finally:
            await conn.close()
        # The rush is over: only the sweeper releases lapsed holds now, and the stream must
        # come to agree with the database.
        await stream_agrees(stream, event_id, seconds=QUIET_LIMIT_SECONDS)
        # Still following while the database is read, so both see the same settled state.
        verdict = await verdict_from_database(
            LEADER_URL, rush.ledger, stream, event_id, quiet_since, fault_wall
        )
        verdict["admitted_after_fault"] = await admitted_since(queue_event_id, fault_wall)
        relay = await relay_host()
        follow.cancel()
        await asyncio.gather(follow, return_exceptions=True)
    result: dict[str, Any] = {"fault": fault_name, "broken": broken, "leader_after": leader_after}
    result["relay_host_before"] = relay_before
    result |= judge_errors(rush.ledger, fault, fault_at, out_at, broken)
    result |= verdict
    result["relay_host"] = relay
    result["recovered"] = recovered
    result["stream_reconnects"] = stream.reconnects
    # Snapshots after the first: the feed resynced the stream (a lost LISTEN, a reconnect).
    result["stream_resyncs"] = len(stream.snapshots) - 1
    result["stream_changes_after_fault"] = sum(1 for t in stream.changes if t > fault_at)
    result["violations"] = violations_of(result, fault)
    return result


def violations_of(result: dict[str, Any], fault: Fault) -> list[str]:
    problems = []
    if result["acknowledged_lost"]:
        problems.append(f"{result['acknowledged_lost']} acknowledged change(s) lost")
    if result["oversold"]:
        problems.append(f"{result['oversold']} seat(s) oversold")
    if result["invariants"] != "hold":
        problems.append("invariants broken")
    if fault.name in ("kill", "netcut", "switchover") and result["leader_after"] in (
        None,
        result["broken"],
    ):
        problems.append(
            f"no other node leads after the {fault.name} (leader: {result['leader_after']})"
        )
    if not result["acknowledged_after_fault"]:
        problems.append("nothing was acknowledged after the fault")
    if not result["recovered"]:
        problems.append(f"no steady service within {RECOVERY_LIMIT_SECONDS:.0f} s of the fault")
    if fault.errors_allowed == "503" and result["non_503_errors"]:
        problems.append(f"{result['non_503_errors']} error(s) other than 503")
    if result["improper_503s"]:
        problems.append(f"{result['improper_503s']} 503(s) without Retry-After or problem+json")
    if result["slowest_answer_seconds"] > HANG_SECONDS:
        problems.append(f"an answer took {result['slowest_answer_seconds']} s")
    # A retry (same Idempotency-Key) of a request lost with its API host waits, by design, for
    # that request's transaction: until the database gives up on the silent client.
    retry_limit = HANG_SECONDS + (DEAD_CLIENT_SECONDS if fault.errors_allowed == "in-flight" else 0)
    if result["slowest_retry_seconds"] > retry_limit:
        problems.append(f"a retry took {result['slowest_retry_seconds']} s")
    if fault.errors_allowed == "in-flight":
        if result["host_out_after_seconds"] is None:
            problems.append("the load balancer never took the lost host out")
        elif result["failed_after_host_out"]:
            problems.append(
                f"{result['failed_after_host_out']} request(s) failed after the lost host "
                "was taken out"
            )
        if result["failed_not_in_flight"]:
            problems.append(
                f"{result['failed_not_in_flight']} failure(s) that were not a request in "
                "flight on the lost host"
            )
        if "503" in result["errors"]:
            problems.append("503s: the surviving host did not serve on")
        if result["served_after_loss"].get(result["broken"]):
            problems.append("the lost host still answered")
        if not any(count for host, count in result["served_after_loss"].items()):
            problems.append("nothing served after the loss")
    if result["stream_mismatched_tickets"]:
        problems.append(
            f"the stream disagrees with the database on "
            f"{result['stream_mismatched_tickets']} ticket(s)"
        )
    if result["stream_announced_uncommitted"]:
        problems.append("the stream announced bookings that are not in the database")
    if result["bookings_after_fault"] and not result["mail_sent_after_fault"]:
        problems.append("bookings made after the fault, and no e-mail sent since")
    if not result["admitted_after_fault"]:
        problems.append("the waiting room admitted nobody after the fault")
    if not result["swept_after_fault"]:
        problems.append("no lapsed hold was swept after the fault")
    if result["relay_host"] in (None, "gone"):
        problems.append(f"no live relay holds its lock on the leader ({result['relay_host']})")
    elif result["relay_host"] == result["broken"]:
        problems.append(f"the relay's lock is still held by the lost {result['broken']}")
    return problems


def unfinished(fault: str, why: str) -> dict[str, Any]:
    """A phase that broke off (no leader came back, the API never answered, …)."""
    return {
        "fault": fault,
        "acknowledged_lost": 0,
        "oversold": 0,
        "invariants": "hold",
        "non_503_errors": 0,
        "unavailable_seconds": None,
        "violations": [f"the drill could not finish: {why}"],
    }


DRILLS = {
    "failover": ("kill", "netcut"),
    "switchover": ("switchover",),
    "api-host-loss": ("api-kill", "api-netcut"),
}


async def drill(
    name: str,
    *,
    phases: list[str] | None,
    repeat: int,
    clients: int,
    workers: int,
    directory: Path,
    say: Say,
) -> dict[str, Any]:
    env = {
        **os.environ,
        "BOXOFFICE_HA_DIR": str(directory),
        "ADMIN_TOKEN": secrets.token_urlsafe(24),
        "SERVER_SECRET": secrets.token_urlsafe(32),
        # Every client comes from this machine; the rush is what is drilled, not the limits.
        "RATE_LIMIT_RESERVATIONS_PER_MINUTE": "0",
        "RATE_LIMIT_QUEUE_PER_MINUTE": "0",
        "SWEEP_INTERVAL_SECONDS": "1",
        "LOG_FORMAT": "json",
    }
    cluster = Cluster(directory, env)
    if cluster.network_exists():
        raise ClusterError("a deploy/ha cluster is up: run deploy/ha/down first")
    results = []
    started = time.monotonic()
    try:
        for round_ in range(repeat):
            for fault in phases or DRILLS[name]:
                try:
                    result = await phase(
                        cluster, fault, clients=clients, workers=workers, seed=round_, say=say
                    )
                except Exception as error:  # a drill that cannot finish is a failed drill
                    result = unfinished(fault, f"{type(error).__name__}: {error}")
                say(
                    f"{fault}: {result['requests']} requests, unavailable "
                    f"{result['unavailable_seconds']} s, errors {result['errors']}, "
                    f"violations {result['violations'] or 'none'}"
                )
                results.append(result)
    finally:
        await asyncio.to_thread(cluster.down)
    unavailable = [
        r["unavailable_seconds"] for r in results if r["unavailable_seconds"] is not None
    ]
    return {
        "drill": name,
        "ok": not any(r["violations"] for r in results),
        "acknowledged_lost": sum(r["acknowledged_lost"] for r in results),
        "oversold": sum(r["oversold"] for r in results),
        "invariants": "hold"
        if all(r["invariants"] == "hold" for r in results)
        else [v for r in results if r["invariants"] != "hold" for v in r["invariants"]],
        "non_503_errors": sum(r["non_503_errors"] for r in results),
        "unavailable_seconds": {
            "min": min(unavailable),
            "median": round(statistics.median(unavailable), 2),
            "max": max(unavailable),
        }
        if unavailable
        else None,
        "violations": [f"{r['fault']}: {v}" for r in results for v in r["violations"]],
        "seconds": round(time.monotonic() - started, 1),
        "phases": results,
    }
