"""`boxoffice simulate` run in this process, as the simulator and metrics tests drive it."""

import asyncio
import json
from typing import Any

import pytest

from boxoffice import cli
from boxoffice.config import Settings
from boxoffice.simulate import runner
from tests.conftest import ADMIN_TOKEN


def simulate(*argv: str, settings: Settings | None = None, keyed: bool = False) -> int:
    """`boxoffice simulate ARGV` with settings from nowhere but the arguments; `keyed`:
    `--idempotency-keys` (a fresh Idempotency-Key on every reservation attempt)."""
    keys = ["--idempotency-keys"] if keyed else []
    args = cli.build_parser().parse_args(["simulate", *argv, *keys])
    return runner.main(args, settings or Settings(_env_file=None))


def against(live_server: str, database_url: str) -> list[str]:
    return ["--url", live_server, "--database-url", database_url, "--admin-token", ADMIN_TOKEN]


async def run_json(
    capsys: pytest.CaptureFixture[str], *argv: str, keyed: bool = False
) -> tuple[int, dict[str, Any]]:
    # In a thread: the simulator runs its own event loop, as it does from the command line.
    code = await asyncio.to_thread(simulate, *argv, "--json", keyed=keyed)
    captured = capsys.readouterr()
    try:
        report: dict[str, Any] = json.loads(captured.out)
    except ValueError:
        pytest.fail(f"no JSON (exit {code}):\n{captured.out}\n{captured.err}")
    return code, report
