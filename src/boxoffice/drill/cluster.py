"""deploy/ha's cluster as the drills see it: bring it up and down, find the leader, and break
things the way production breaks them (a process killed, a host cut off the network)."""

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HA = Path(__file__).resolve().parents[3] / "deploy" / "ha"
NET = "10.213.77"
DATABASE_NODES = ("pg1", "pg2", "pg3")
# Through HAProxy on this machine: the leader (writes) and the API hosts.
LEADER_URL = "postgresql://postgres@127.0.0.1:5440/postgres"
API_URL = "http://127.0.0.1:8080"
UP_SECONDS = 150.0
STATS_CSV = "http://127.0.0.1:7000/;csv"


class ClusterError(Exception):
    """The cluster could not be brought up, or a fault could not be injected."""


def node_address(node: str) -> str:
    """pg1 → 10.213.77.11, api2 → 10.213.77.22 (deploy/ha/up's plan)."""
    base = 10 if node.startswith("pg") else 20
    return f"{NET}.{base + int(node[-1])}"


@dataclass
class Cluster:
    directory: Path
    env: dict[str, str]

    def up(self, *, api_hosts: int, workers: int) -> None:
        self.down()
        command = [str(HA / "up"), "--api-hosts", str(api_hosts), "--workers", str(workers)]
        try:
            result = subprocess.run(
                command, env=self.env, capture_output=True, text=True, timeout=UP_SECONDS
            )
        except subprocess.TimeoutExpired as error:
            self.down()
            raise ClusterError(f"deploy/ha/up took over {UP_SECONDS:.0f} s") from error
        if result.returncode != 0:
            raise ClusterError(f"deploy/ha/up failed:\n{result.stderr[-3000:]}")

    def network_exists(self) -> bool:
        """Whether deploy/ha's bridge exists (a cluster is up, or was left over)."""
        return Path("/sys/class/net/bxha0").exists()

    def down(self) -> None:
        subprocess.run([str(HA / "down")], env=self.env, capture_output=True, timeout=120)

    def role(self, node: str) -> str | None:
        """What Patroni on `node` says it is (`primary`, `replica`, …), None if it is silent."""
        try:
            with urllib.request.urlopen(f"http://{node_address(node)}:8008/", timeout=1) as reply:
                return str(json.load(reply).get("role"))
        except urllib.error.HTTPError as error:  # 503 still carries the role
            try:
                return str(json.load(error).get("role"))
            except ValueError:
                return None
        except (OSError, ValueError):
            return None

    def leader(self) -> str | None:
        for node in DATABASE_NODES:
            if self.role(node) in ("primary", "master"):
                return node
        return None

    def wait_for_leader(self, *, other_than: str | None = None, seconds: float = 60.0) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None and leader != other_than:
                return leader
            time.sleep(0.2)
        raise ClusterError(f"no leader (other than {other_than}) after {seconds:.0f} s")

    def session_of(self, name: str) -> int:
        return int((self.directory / "run" / f"{name}.pid").read_text())

    def kill_node(self, node: str, *, postmaster_only: bool = False) -> None:
        """SIGKILL the node's postmaster; unless `postmaster_only`, its Patroni first (a crash
        of the whole node: killed alone, the postmaster is restarted in place by Patroni)."""
        postmaster = int((self.directory / node / "data" / "postmaster.pid").read_text().split()[0])
        if not postmaster_only:
            os.killpg(self.session_of(node), signal.SIGKILL)
        os.kill(postmaster, signal.SIGKILL)

    def kill_api_host(self, host: str) -> None:
        os.killpg(self.session_of(host), signal.SIGKILL)

    def cut(self, host: str) -> None:
        """Take the host's link down: it keeps running, but nothing reaches it or leaves it."""
        subprocess.run(["ip", "link", "set", f"bxv-{host}", "down"], check=True, timeout=10)

    def balancer_status(self, backend: str, server: str) -> str:
        """HAProxy's view of a server (`UP`, `DOWN`, `UP 1/2` while going down, …)."""
        try:
            with urllib.request.urlopen(STATS_CSV, timeout=1) as reply:
                for line in reply.read().decode().splitlines():
                    fields = line.split(",")
                    if fields[:2] == [backend, server]:
                        return str(fields[17])
        except OSError:
            pass
        return ""

    def switchover(self, leader: str) -> None:
        config = self.directory / leader / "patroni.yml"
        result = subprocess.run(
            ["patronictl", "-c", str(config), "switchover", "--force"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        # patronictl reports a refused switchover on its output, exiting 0.
        if result.returncode != 0 or "failed" in result.stdout.lower():
            raise ClusterError(f"patronictl switchover failed: {result.stderr or result.stdout}")
