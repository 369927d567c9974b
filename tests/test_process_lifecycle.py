"""`boxoffice serve` as a process (issue 9 §2): however it is stopped, nothing is left behind.

SIGTERM, SIGHUP and SIGINT stop the workers and the embedded PostgreSQL; a serve killed with -9
takes its workers with it within seconds, and the next serve on the same data folder starts,
adopts the database the dead one left, and has every row; a bad database setting is a short
message, not a traceback. Every serve here is the real command in a session of its own, so
"nothing left" means no process of that session, no postgres on its data folder, no metrics
folder, and the port free for the next serve.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN, ADMIN_TOKEN, embedded_data_dir, free_port, wait_until_ready

# The system layer (tests/support/system.py). Every test runs `boxoffice` as a process (serve,
# migrate) and signals it.
pytestmark = pytest.mark.system

embedded_only = pytest.mark.skipif(
    bool(os.environ.get("SKIP_EMBEDDED_TESTS")), reason="SKIP_EMBEDDED_TESTS is set"
)

# Workers stop within uvicorn's graceful timeout (5 s) after their parent is gone.
WORKERS_GONE_WITHIN = 10.0
STOP_WITHIN = 30.0


def _wait_for(condition: Callable[[], bool], within: float, what: str) -> float:
    """Poll until `condition` holds; the seconds it took. Fails after `within` seconds."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            pytest.fail(f"{what}: still not the case after {within:g} s")
        time.sleep(0.05)
    return time.monotonic() - started


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: state, ppid, pgrp, session, ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _pids() -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def session_processes(session: int) -> list[int]:
    """Live (not zombie) processes of a session: the serve, its workers, their helpers."""
    found = []
    for pid in _pids():
        stat = _proc_stat(pid)
        if stat is not None and stat[0] != "Z" and int(stat[3]) == session:
            found.append(pid)
    return found


def postgres_processes(pgdata: Path) -> list[int]:
    """Postmasters running on this data folder (their command line names it)."""
    found = []
    for pid in _pids():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        stat = _proc_stat(pid)
        if str(pgdata).encode() in command and stat is not None and stat[0] != "Z":
            found.append(pid)
    return found


def ignores_hangup(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


def port_is_free(port: int) -> bool:
    """The next serve could bind it (uvicorn binds with SO_REUSEADDR, as here)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def temp_metrics_folders() -> set[str]:
    return {path.name for path in Path(tempfile.gettempdir()).glob("boxoffice-metrics-*")}


@dataclass
class Serve:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path

    def workers(self) -> list[int]:
        return [pid for pid in session_processes(self.process.pid) if pid != self.process.pid]


def serve_embedded(
    data_dir: Path,
    log: Path,
    *,
    workers: int,
    port: int | None = None,
    prefix: tuple[str, ...] = (),
) -> Serve:
    """`boxoffice serve` on the embedded PostgreSQL in `data_dir`, in a session of its own
    (`prefix`: a command to run it under, e.g. nohup)."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "TEST_DATABASE_URL", "POSTGRES_HOST"}
    }
    environment |= {"DATA_DIR": str(data_dir), "ADMIN_TOKEN": ADMIN_TOKEN}
    environment["SWEEP_INTERVAL_SECONDS"] = "0"
    port = port or free_port()
    command = [*prefix, sys.executable, "-m", "boxoffice.cli", "serve", "--port", str(port)]
    command += ["--workers", str(workers)]
    with log.open("a") as out:
        process = subprocess.Popen(
            command, env=environment, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    served = Serve(process, f"http://127.0.0.1:{port}", port, log)
    try:
        wait_until_ready(served.url, process, log)
    except BaseException:
        kill_session(served)
        raise
    return served


def kill_session(served: Serve) -> None:
    """Last resort for a failed test: nothing of this serve may outlive it."""
    for pid in session_processes(served.process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if served.process.poll() is None:
        served.process.kill()
    served.process.wait()


def stop_postgres(pgdata: Path) -> None:
    """Last resort for a failed test: no postgres of ours may outlive the test."""
    for pid in postgres_processes(pgdata):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown of the postmaster and its children


def clean_up_after_failure(data_dir: Path, *served: Serve | None) -> None:
    """So one failed test does not fail the next ones on the same data folder."""
    for serve in served:
        if serve is not None:
            kill_session(serve)
    stop_postgres((data_dir / "pgdata").resolve())
    for folder in data_dir.glob("metrics-*"):
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    """One data folder for the module: the first serve creates the database (initdb), the
    others start on it, as a user's serves do. Each test leaves no server running on it."""
    with embedded_data_dir() as folder:
        data = folder / "data"
        try:
            yield data
        finally:
            stop_postgres((data / "pgdata").resolve())


def assert_nothing_left(served: Serve, data_dir: Path, temp_before: set[str]) -> None:
    pgdata = (data_dir / "pgdata").resolve()
    log = served.log.read_text()
    _wait_for(
        lambda: not session_processes(served.process.pid),
        within=WORKERS_GONE_WITHIN,
        what=f"processes of the serve's session left\n{log}",
    )
    _wait_for(lambda: port_is_free(served.port), within=5, what="the port is free")
    assert postgres_processes(pgdata) == [], f"the embedded PostgreSQL is still running\n{log}"
    assert not (pgdata / "postmaster.pid").exists(), "postgres did not shut down cleanly"
    assert sorted(path.name for path in data_dir.glob("metrics-*")) == []
    assert temp_metrics_folders() - temp_before == set()


STOPS = [
    pytest.param(signal.SIGTERM, 1, False, id="SIGTERM-1-worker"),
    pytest.param(signal.SIGTERM, 2, False, id="SIGTERM-2-workers"),
    pytest.param(signal.SIGHUP, 1, False, id="SIGHUP-1-worker"),
    pytest.param(signal.SIGHUP, 2, False, id="SIGHUP-2-workers"),
    pytest.param(signal.SIGINT, 1, False, id="SIGINT-1-worker"),
    pytest.param(signal.SIGINT, 2, False, id="SIGINT-2-workers"),
    # What a terminal sends to every process of its foreground job: Ctrl-C, and a closed window.
    pytest.param(signal.SIGINT, 2, True, id="Ctrl-C-to-the-group"),
    pytest.param(signal.SIGHUP, 2, True, id="terminal-closed-group-SIGHUP"),
]


@embedded_only
@pytest.mark.parametrize(("stop_signal", "workers", "to_group"), STOPS)
def test_a_stop_signal_stops_the_workers_and_the_embedded_database(
    data_dir: Path, tmp_path: Path, stop_signal: signal.Signals, workers: int, to_group: bool
) -> None:
    temp_before = temp_metrics_folders()
    pgdata = (data_dir / "pgdata").resolve()
    served = serve_embedded(data_dir, tmp_path / "serve.log", workers=workers)
    try:
        assert len(postgres_processes(pgdata)) == 1
        assert len(list(data_dir.glob("metrics-*"))) == 1, "the workers' metrics folder"
        if workers > 1:
            assert len(served.workers()) >= workers
        if to_group:
            os.killpg(served.process.pid, stop_signal)
        else:
            served.process.send_signal(stop_signal)
        returncode = served.process.wait(timeout=STOP_WITHIN)
        assert returncode == 0, served.log.read_text()
        assert_nothing_left(served, data_dir, temp_before)
    finally:
        clean_up_after_failure(data_dir, served)


@embedded_only
@pytest.mark.skipif(shutil.which("nohup") is None, reason="no nohup command")
def test_a_serve_started_with_nohup_survives_a_hangup(data_dir: Path, tmp_path: Path) -> None:
    temp_before = temp_metrics_folders()
    log = tmp_path / "serve.log"
    served = serve_embedded(data_dir, log, workers=2, prefix=("nohup",))
    try:
        # Every process of it ignores SIGHUP (the supervisor, the workers, their helper), so the
        # kernel drops the signal when it is sent: nothing to wait for afterwards.
        workers = served.workers()
        assert workers, "the workers"
        assert [
            pid for pid in session_processes(served.process.pid) if not ignores_hangup(pid)
        ] == []
        os.killpg(served.process.pid, signal.SIGHUP)  # the terminal closes
        assert served.process.poll() is None
        assert httpx.get(served.url + "/readyz", timeout=10).status_code == 200
        assert served.workers() == workers, "the workers neither stopped nor restarted"
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=STOP_WITHIN) == 0, log.read_text()
        assert_nothing_left(served, data_dir, temp_before)
    finally:
        clean_up_after_failure(data_dir, served)


@embedded_only
def test_workers_of_a_serve_killed_with_9_stop_and_the_next_serve_keeps_the_data(
    data_dir: Path, tmp_path: Path
) -> None:
    temp_before = temp_metrics_folders()
    pgdata = (data_dir / "pgdata").resolve()
    log = tmp_path / "serve.log"
    first = serve_embedded(data_dir, log, workers=2)
    second: Serve | None = None
    try:
        # Rows written through the first serve: an event, and a hold on two of its seats.
        body = {
            "name": "Written before kill -9",
            "starts_at": "2030-01-01T20:00:00Z",
            "general_admission": {"quantity": 5, "price": 1000},
        }
        created = httpx.post(first.url + "/events", json=body, headers=ADMIN, timeout=10)
        assert created.status_code == 201, created.text
        event_id = created.json()["id"]
        held = httpx.post(
            f"{first.url}/events/{event_id}/reservations",
            json={"quantity": 2, "customer": "ada@example.com"},
            timeout=10,
        )
        assert held.status_code == 201, held.text
        reservation = held.json()
        workers = first.workers()
        assert len(workers) >= 2
        [postmaster] = postgres_processes(pgdata)
        [stale_metrics] = data_dir.glob("metrics-*")

        first.process.kill()
        first.process.wait()
        took = _wait_for(
            lambda: not session_processes(first.process.pid),
            within=WORKERS_GONE_WITHIN,
            what=f"workers {workers} of the killed serve still run\n{log.read_text()}",
        )
        assert took < WORKERS_GONE_WITHIN
        _wait_for(lambda: port_is_free(first.port), within=5, what="the port is free")
        # Nothing cleaned up after the killed parent: its postgres runs on, alone.
        assert postgres_processes(pgdata) == [postmaster]
        assert temp_metrics_folders() - temp_before == set()

        # The next serve, on the same port and data folder, starts and has the rows.
        second = serve_embedded(data_dir, log, workers=2, port=first.port)
        running = postgres_processes(pgdata)
        assert len(running) == 1, f"one server on the data folder, adopted or restarted: {running}"
        assert not stale_metrics.exists(), "the dead serve's metrics folder is removed"
        event = httpx.get(f"{second.url}/events/{event_id}", timeout=10)
        assert event.status_code == 200, event.text
        assert event.json()["name"] == "Written before kill -9"
        hold = httpx.get(
            f"{second.url}/reservations/{reservation['id']}",
            headers={"Authorization": f"Bearer {reservation['token']}"},
            timeout=10,
        )
        assert hold.status_code == 200, hold.text
        assert hold.json()["status"] == "active"
        assert sorted(t["id"] for t in hold.json()["tickets"]) == sorted(
            t["id"] for t in reservation["tickets"]
        )

        # And it still stops whole, the adopted server included.
        second.process.send_signal(signal.SIGTERM)
        assert second.process.wait(timeout=STOP_WITHIN) == 0, log.read_text()
        assert_nothing_left(second, data_dir, temp_before)
    finally:
        clean_up_after_failure(data_dir, first, second)


# --- a database setting that cannot work -----------------------------------------------------

SECRET = "s3cret-Pa55word"


def run_cli(command: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("POSTGRES_") and key not in {"DATABASE_URL", "TEST_DATABASE_URL"}
    }
    environment |= {"ADMIN_TOKEN": ADMIN_TOKEN, **env}
    return subprocess.run(
        [sys.executable, "-m", "boxoffice.cli", command, "--port", str(free_port())]
        if command == "serve"
        else [sys.executable, "-m", "boxoffice.cli", command],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_short_message(result: subprocess.CompletedProcess[str], setting: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    lines = result.stderr.strip().splitlines()
    assert 0 < len(lines) <= 15, output
    assert setting in result.stderr, output
    assert SECRET not in output, "the password is never printed"


@pytest.mark.parametrize("command", ["serve", "migrate"])
@pytest.mark.parametrize(
    ("url", "cause"),
    [
        (f"postgresql://u:{SECRET}@127.0.0.1:1/x", "refused"),
        (f"mysql://x:{SECRET}@y/z", "postgresql://"),
    ],
    ids=["unreachable", "not-postgresql"],
)
def test_a_bad_database_url_is_a_short_message(command: str, url: str, cause: str) -> None:
    result = run_cli(command, DATABASE_URL=url)
    assert_short_message(result, "DATABASE_URL")
    assert cause in result.stderr


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_a_missing_database_is_a_short_message(command: str, postgres_server_url: str) -> None:
    from tests.conftest import with_database

    url = with_database(postgres_server_url, "nope_does_not_exist")
    result = run_cli(command, DATABASE_URL=url)
    assert_short_message(result, "DATABASE_URL")
    assert 'database "nope_does_not_exist" does not exist' in result.stderr


def test_the_postgres_variables_are_named_when_they_were_used() -> None:
    result = run_cli(
        "migrate", POSTGRES_HOST="127.0.0.1", POSTGRES_PORT="1", POSTGRES_PASSWORD=SECRET
    )
    assert_short_message(result, "POSTGRES_HOST")
    assert "DATABASE_URL" not in result.stderr.splitlines()[0], result.stderr
