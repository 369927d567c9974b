"""`boxoffice serve` with no DATABASE_URL: a private PostgreSQL that starts, serves several
workers, and stops with the service — also after an earlier run was killed with -9."""

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.conftest import embedded_data_dir
from tests.support.embedded import serve_embedded

# The system layer (tests/support/system.py). Starts `boxoffice serve` on its own embedded
# PostgreSQL.
pytestmark = pytest.mark.system


def _postmaster_pid(pgdata: Path) -> int | None:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return None
    return int(pid_file.read_text().splitlines()[0])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[1].startswith("Z"))


@pytest.mark.skipif(
    bool(os.environ.get("SKIP_EMBEDDED_TESTS")), reason="SKIP_EMBEDDED_TESTS is set"
)
def test_embedded_database_lives_and_dies_with_the_service() -> None:
    with embedded_data_dir() as folder:
        check_lifecycle(folder / "data", folder / "serve.log")


def check_lifecycle(data_dir: Path, log: Path) -> None:
    pgdata = data_dir / "pgdata"

    # First run: the demo events are seeded and two workers share one server.
    with serve_embedded(data_dir, log) as (process, url):
        events = httpx.get(url + "/events").json()["items"]
        # The original demo's two events (dated in its past) first, then boxoffice's own.
        assert [event["name"] for event in events] == [
            "Event #1",
            "Event #2",
            "Boxoffice Demo Night",
            "Open Air Festival",
        ]
        postgres = _postmaster_pid(pgdata)
        assert postgres is not None and _alive(postgres)
        token = (data_dir / "admin_token").read_text().strip()
        assert len(token) >= 24
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    assert not _alive(postgres), "a clean exit stops the embedded server"
    assert _postmaster_pid(pgdata) is None

    # Second run, killed with -9 (the whole process group, workers included).
    with serve_embedded(data_dir, log) as (process, url):
        assert httpx.get(url + "/readyz").status_code == 200
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    # Third run: comes up on the same data, keeps it, and still stops cleanly.
    with serve_embedded(data_dir, log) as (process, url):
        events = httpx.get(url + "/events").json()["items"]
        assert len(events) == 4, "data survives restarts and is not seeded twice"
        assert (data_dir / "admin_token").read_text().strip() == token
        postgres = _postmaster_pid(pgdata)
        assert postgres is not None
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    assert not _alive(postgres), "the server started by an earlier, killed run is stopped too"
