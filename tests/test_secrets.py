"""Secrets and least exposure: the admin token is shown once and never logged, one per data
folder; /docs runs only the package's own script under a CSP; every answer says nosniff;
/metrics can want a token."""

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from boxoffice.migrate import upgrade
from tests.conftest import (
    Databases,
    embedded_data_dir,
    free_port,
    running_server,
    wait_until_ready,
)

# The system layer (tests/support/system.py). Every test talks to a server process (`boxoffice
# serve`, or uvicorn itself).
pytestmark = pytest.mark.system

EVENT = {
    "name": "Secret test",
    "starts_at": "2030-01-01T20:00:00Z",
    "general_admission": {"quantity": 1, "price": 100},
}


def without_secrets(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ADMIN_TOKEN", "SERVER_SECRET", "METRICS_TOKEN", "DATABASE_URL")
    }
    return {**env, "DATA_DIR": str(data_dir), "SWEEP_INTERVAL_SECONDS": "0", **extra}


@contextmanager
def uvicorn_workers(env: dict[str, str], log: Path) -> Iterator[str]:
    """The app started the way a deployment may start it: uvicorn itself, two workers, no
    `boxoffice serve` to hand them a token."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "boxoffice.main:create_app", "--factory"]
    command += ["--workers", "2", "--port", str(port), "--log-level", "info"]
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, log)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_workers_without_serve_share_the_data_folders_token_and_never_log_it(
    databases: Databases,
) -> None:
    url = databases.create("boxoffice_secrets")
    upgrade(url)  # uvicorn alone does not migrate; `boxoffice serve` and `migrate` do
    with embedded_data_dir() as data_dir:
        log = data_dir / "server.log"
        env = without_secrets(data_dir, DATABASE_URL=url, LOG_FORMAT="json")
        with uvicorn_workers(env, log) as base:
            token = (data_dir / "admin_token").read_text().strip()
            # Many requests, so both workers answer some: every one accepts the same token.
            with httpx.Client(base_url=base, timeout=30) as client:
                for _ in range(40):
                    response = client.post(
                        "/events", json=EVENT, headers={"Authorization": f"Bearer {token}"}
                    )
                    assert response.status_code == 201, response.text
                    # A fresh connection each time, so the kernel spreads them over workers.
                    client.close()
                    client = httpx.Client(base_url=base, timeout=30)
        output = log.read_text()
        assert (data_dir / "admin_token").stat().st_mode & 0o077 == 0
        assert (data_dir / "server_secret").stat().st_mode & 0o077 == 0
        # Shown once, on the terminal, by the worker that made it; no log record holds it.
        assert output.count(token) == 1, output
        for line in output.splitlines():
            if line.startswith("{"):
                assert token not in json.loads(line)["message"]
        assert (data_dir / "server_secret").read_text().strip() not in output


def test_serve_shows_a_generated_token_once_and_not_on_the_next_start(
    tmp_path: Path,
) -> None:
    with embedded_data_dir() as data_dir:
        env = without_secrets(data_dir)
        outputs = []
        for run in range(2):
            log = tmp_path / f"serve-{run}.log"
            port = free_port()
            command = [sys.executable, "-m", "boxoffice.cli", "serve", "--port", str(port)]
            with log.open("w") as out:
                process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            try:
                wait_until_ready(f"http://127.0.0.1:{port}", process, log)
            finally:
                process.terminate()
                process.wait(timeout=30)
            outputs.append(log.read_text())
        token = (data_dir / "admin_token").read_text().strip()
        assert outputs[0].count(token) == 1
        assert token not in outputs[1]
        assert "admin token is in" in outputs[1]


def test_docs_run_only_the_packages_own_script(live_server: str) -> None:
    page = httpx.get(live_server + "/docs", timeout=10)
    assert page.status_code == 200
    # Nothing fetched from another origin: every src/href is a path on this server.
    for link in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert link.startswith("/"), link
    assert "cdn" not in page.text.lower()
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    script_src = next(part for part in policy.split(";") if "script-src" in part)
    assert "'unsafe-inline'" not in script_src and "http" not in script_src
    assert "frame-ancestors 'none'" in policy
    for asset in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', page.text):
        response = httpx.get(live_server + asset, timeout=10)
        assert response.status_code == 200 and len(response.content) > 1000, asset
    assert httpx.get(live_server + "/openapi.json", timeout=10).status_code == 200


@pytest.mark.parametrize(
    "path", ["/healthz", "/docs", "/events/not-a-uuid", "/no/such/page", "/docs/assets/x"]
)
def test_every_answer_says_nosniff(live_server: str, path: str) -> None:
    response = httpx.get(live_server + path, timeout=10)
    assert response.headers["x-content-type-options"] == "nosniff", response.status_code


def test_metrics_are_open_by_default(live_server: str) -> None:
    assert httpx.get(live_server + "/metrics", timeout=10).status_code == 200


def test_metrics_can_want_a_token(database_url: str, tmp_path: Path) -> None:
    secret = "metrics-" + "x" * 24
    with running_server(database_url, tmp_path / "server.log", METRICS_TOKEN=secret) as base:
        assert httpx.get(base + "/metrics", timeout=10).status_code == 401
        wrong = httpx.get(base + "/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        assert wrong.headers["content-type"].startswith("application/problem+json")
        right = httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {secret}"})
        assert right.status_code == 200 and "boxoffice_" in right.text
        # The buyers' endpoints do not care.
        assert httpx.get(base + "/healthz", timeout=10).status_code == 200
