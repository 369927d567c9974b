"""deploy/ha brings up the production shape (etcd, three Patroni nodes with synchronous
replication, HAProxy, two API hosts, each host in a network namespace of its own) and takes it
down again, leaving no process, port, namespace or link behind.

The failover drills (test_drills) build on this. Skipped, saying why, when not root or when
the cluster's packages are missing (scripts/install-ha installs them as root).
"""

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from boxoffice.migrate import upgrade

pytestmark = pytest.mark.system

HA = Path(__file__).parent.parent / "deploy" / "ha"
LEADER = "postgresql://postgres@127.0.0.1:5440/postgres"
REPLICAS = "postgresql://postgres@127.0.0.1:5439/postgres"
API = "http://127.0.0.1:8080"
PORTS = (2379, 5439, 5440, 7000, 8080, 8081)


def network_left() -> list[str]:
    """deploy/ha's namespaces and links that exist on this machine."""
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return [
        name
        for name in namespaces.split() + [line.split(": ")[1] for line in links.splitlines()]
        if name.startswith(("bxha", "bxv-"))
    ]


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("deploy/ha needs root (network namespaces)")
    missing = [tool for tool in ("etcd", "patroni", "haproxy") if shutil.which(tool) is None]
    if missing or not Path("/usr/lib/postgresql/15/bin/postgres").exists():
        pytest.skip(
            f"the cluster's packages are missing ({missing or 'postgresql-15'}): "
            "scripts/install-ha installs them as root"
        )
    busy = [port for port in PORTS if listening(port)]
    if busy:
        pytest.skip(f"ports {busy} are taken: is a deploy/ha cluster already up?")
    # Not under pytest's tmp_path: when we are root the nodes run as `postgres`, who must be
    # able to reach their folder (pytest's are private to root).
    base = Path(tempfile.mkdtemp(prefix="boxoffice-ha-test-"))
    base.chmod(0o755)
    env = {**os.environ, "BOXOFFICE_HA_DIR": str(base / "ha")}
    try:
        up = subprocess.run([HA / "up"], env=env, capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, up.stderr + up.stdout
        yield env
    finally:
        down = subprocess.run([HA / "down"], env=env, capture_output=True, text=True, timeout=60)
        assert down.returncode == 0, down.stderr
        assert not (base / "ha").exists()
        assert [port for port in PORTS if listening(port)] == []
        assert network_left() == []
        base.rmdir()


async def fetch(url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(query)
        return rows
    finally:
        await conn.close()


async def test_up_elects_a_leader_with_a_synchronous_standby_and_down_leaves_nothing(
    cluster: dict[str, str],
) -> None:
    [leader] = await fetch(LEADER, "SELECT pg_is_in_recovery() AS replica")
    assert not leader["replica"]
    # Both others stream from the leader, one of them synchronously: a commit is
    # acknowledged only once it is on two nodes.
    deadline = time.monotonic() + 60
    while True:
        states = sorted(
            row["sync_state"]
            for row in await fetch(LEADER, "SELECT sync_state FROM pg_stat_replication")
        )
        if states == ["async", "sync"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert states == ["async", "sync"]
    # The schema goes in through HAProxy's leader port and reaches the replicas' port.
    await asyncio.to_thread(upgrade, LEADER)
    deadline = time.monotonic() + 30
    while True:
        [replica] = await fetch(
            REPLICAS,
            "SELECT pg_is_in_recovery() AS replica,"
            " to_regclass('public.events') IS NOT NULL AS migrated",
        )
        if replica["migrated"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert replica["replica"] and replica["migrated"]
    # Both API hosts answer through the load balancer, each from its own namespace.
    served_by = set()
    async with httpx.AsyncClient(base_url=API, timeout=5) as http:
        for _ in range(6):
            response = await http.get("/readyz")
            assert response.status_code == 200, response.text
            served_by.add(response.headers["x-served-by"])
    assert served_by == {"api1", "api2"}


def test_down_after_a_failed_up_cleans_up(tmp_path: Path) -> None:
    """`down` with nothing up, or with a half-made folder, exits 0 and removes the folder."""
    env = {**os.environ, "BOXOFFICE_HA_DIR": str(tmp_path / "ha")}
    (tmp_path / "ha" / "run").mkdir(parents=True)
    (tmp_path / "ha" / "run" / "etcd.pid").write_text("999999\n")
    if os.geteuid() == 0 and not network_left():
        # A namespace and a veth a broken `up` left behind.
        subprocess.run(["ip", "netns", "add", "bxha-pg1"], check=True)
        subprocess.run(
            "ip link add bxv-pg1 type veth peer name eth0 netns bxha-pg1", shell=True, check=True
        )
    down = subprocess.run([HA / "down"], env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert not (tmp_path / "ha").exists()
    assert network_left() == []
