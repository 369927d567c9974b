"""pgbench with the service's own reservation SQL (imported from boxoffice, not copied): the
raw limit of the database for the same work. bench/README.md lists where the script differs.

The service reserves with one statement (boxoffice.reservations.reserve: RESERVE_CHOSEN for
chosen seats, RESERVE_BEST for best available; a keyed hold claims its key in the same
statement): each script runs exactly that statement, its `$n` parameters bound to pgbench
variables, so pgbench pays for the same SQL and the same single round trip."""

import asyncio
import hashlib
import math
import os
import re
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

from boxoffice.config import Settings
from boxoffice.db import server_settings
from boxoffice.reservations.reserve import RESERVE_BEST, RESERVE_CHOSEN

from .cpu import CpuUsage, cpu_snapshot
from .load import CpuSince, lanes_for

# `$n`, the statements' positional parameters.
_PARAMETER = re.compile(r"\$(\d+)\b")
# NULL passed as a parameter, as the service passes it (not a constant the planner could fold).
_NULL = "NULLIF(:nothing, 'nothing')"
# Each transaction's own key, from the run's salt, the client and its transaction counter;
# stored as the service stores one (64 hex digits; the service's is an HMAC of the key).
_KEY_HASH = (
    "encode(sha256(convert_to(CAST(:key_salt AS text) || '/' || CAST(:client_id AS text)"
    " || '/' || CAST(:tx AS text), 'UTF8')), 'hex')"
)


def keyed_available() -> bool:
    return True


def _bound(statement: str, tickets: str, *, keyed: bool) -> str:
    """A reservation statement with its parameters bound: $1 event, $2 chosen tickets (NULL,
    no section, for best available), $3 how many, $4 customer, $5 token hash, $6-$8 the
    key's scope, hash and request hash (NULL without a key), $9 the queue pass and $10 the
    waiting-list offer (NULL: the bench's events have neither a waiting room nor a list)."""
    values = {
        1: ":event_id",
        2: tickets,
        3: ":n",
        4: ":customer",
        5: ":token_hash",
        6: ":scope" if keyed else _NULL,
        7: f"({_KEY_HASH})" if keyed else _NULL,
        8: ":request_hash" if keyed else _NULL,
        9: _NULL,
        10: _NULL,
    }
    return _PARAMETER.sub(lambda match: values[int(match.group(1))], statement).strip() + ";"


def _source(kind: str, keyed: bool) -> str:
    key = " (with an Idempotency-Key)" if keyed else ""
    return f"-- written by bench/run.py: boxoffice.reservations.reserve.{kind}{key}"


def pgbench_chosen_script(*, keyed: bool = False) -> str:
    """One reservation of a chosen ticket; each client walks its own ticket range."""
    lines = [
        _source("RESERVE_CHOSEN", keyed),
        r"\set bench_ticket :first_ticket + :client_id * :per_client + (:tx % :per_client)",
        r"\set tx :tx + 1",
        _bound(RESERVE_CHOSEN, "ARRAY[:bench_ticket]", keyed=keyed),
    ]
    return "\n".join(lines) + "\n"


def pgbench_best_script(*, keyed: bool = False) -> str:
    """One best-available reservation."""
    lines = [
        _source("RESERVE_BEST", keyed),
        r"\set tx :tx + 1",
        _bound(RESERVE_BEST, _NULL, keyed=keyed),
    ]
    return "\n".join(lines) + "\n"


def key_variables(event_id: uuid.UUID) -> dict[str, str]:
    """The -D values of a keyed script: the service's scope for this event's reservations, a
    fixed request hash and answer, and a salt that makes this run's keys its own."""
    return {
        "scope": f"POST /events/{{event_id}}/reservations {event_id}",
        "request_hash": "\\x" + hashlib.sha256(b"bench-pgbench request").hexdigest(),
        "key_salt": secrets.token_hex(8),
        "tx": "0",
    }


@dataclass(frozen=True)
class PgbenchResult:
    tps: float
    transactions: int
    failed: int
    statements_ms: list[tuple[str, float]]
    cpu: CpuUsage | None
    capacity: int | None

    @property
    def wrapped(self) -> bool:
        return self.capacity is not None and self.transactions > self.capacity


def _statement_label(text: str) -> str:
    """BEGIN, COMMIT, or the statement's first words (pgbench prints its first line)."""
    words = text.strip().rstrip(";").split()
    label = " ".join(words[:3])
    return label if len(words) <= 3 else label + " …"


def parse_pgbench(output: str) -> tuple[float, int, int, list[tuple[str, float]]]:
    def number(pattern: str, default: str = "0") -> str:
        match = re.search(pattern, output)
        return match.group(1) if match else default

    tps = float(number(r"tps = ([\d.]+) \(without initial connection time\)", "nan"))
    if math.isnan(tps):
        tps = float(number(r"tps = ([\d.]+)", "0"))
    transactions = int(number(r"number of transactions actually processed: (\d+)"))
    failed = int(number(r"number of failed transactions: (\d+)"))
    statements: list[tuple[str, float]] = []
    _, _, per_statement = output.partition("statement latencies in milliseconds")
    for line in per_statement.splitlines()[1:]:
        match = re.match(r"^\s+([\d.]+)\s+(?:\d+\s+)?(.*)$", line)
        if not match:
            break
        text = match.group(2)
        if text.startswith("\\"):
            continue
        statements.append((_statement_label(text), float(match.group(1))))
    return tps, transactions, failed, statements


def pgbench_env(settings: Settings) -> dict[str, str]:
    """pgbench's environment: the service's session settings (boxoffice.db.server_settings),
    so its statements wait for locks and run as long as the service's may."""
    session = server_settings(settings)
    return {
        **os.environ,
        "PGOPTIONS": f"-c lock_timeout={session['lock_timeout']} "
        f"-c statement_timeout={session['statement_timeout']}",
        "PGAPPNAME": "boxoffice-pgbench",
    }


async def run_pgbench(
    pgbench: Path,
    workdir: Path,
    database_url: str,
    settings: Settings,
    script_text: str,
    clients: int,
    duration: float,
    variables: dict[str, str],
    capacity: int | None,
    cpu_since: CpuSince,
    rate: float | None = None,
) -> tuple[PgbenchResult, str | None]:
    """pgbench -M prepared at `clients` (throttled to `rate` transactions a second, if given);
    the result, and why some clients aborted (if so)."""
    script = workdir / f"pgbench-{uuid.uuid4().hex[:8]}.sql"
    script.write_text(script_text)
    token_hash = hashlib.sha256(b"bench-pgbench").hexdigest()
    fixed = {
        "customer": "bench-pgbench",
        "token_hash": "\\x" + token_hash,
        "n": "1",
        "nothing": "nothing",
        "tx": "0",
        **variables,
    }
    command = [str(pgbench), "-n", "-M", "prepared", "-r"]
    command += ["-c", str(clients), "-j", str(lanes_for(clients))]
    command += ["-T", str(max(1, round(duration))), "-f", str(script)]
    if rate is not None:
        command += ["-R", f"{rate:.0f}"]
    for name, value in fixed.items():
        command += ["-D", f"{name}={value}"]
    command.append(database_url)
    env = pgbench_env(settings)
    before = cpu_snapshot()
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await process.communicate()
    after = cpu_snapshot()
    output = out.decode(errors="replace") + err.decode(errors="replace")
    # Status 2: some clients aborted on an error, the others ran to the end and pgbench
    # still reports what they did; anything else is a failure to run at all.
    aborted = None
    if process.returncode == 2 and "tps = " in output:
        errors = [ln for ln in output.splitlines() if "error:" in ln and "aborted" in ln]
        context = [ln.strip() for ln in output.splitlines() if ln.startswith("CONTEXT:")]
        aborted = "; ".join(errors[:2] + context[:1]) or "some clients aborted"
    elif process.returncode != 0:
        raise RuntimeError(f"pgbench failed ({process.returncode}):\n{output[-3000:]}")
    tps, transactions, failed, statements = parse_pgbench(output)
    cpu = await cpu_since(before, after)
    return PgbenchResult(tps, transactions, failed, statements, cpu, capacity), aborted
