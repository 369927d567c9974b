"""`boxoffice serve` and its workers stop together, however they are stopped.

The serve process owns what outlives a worker: the embedded PostgreSQL and the workers'
metrics folder, which it removes on the way out. So every stop signal must unwind its stack
rather than kill it on the spot: `stop_on_signals()` makes SIGTERM and SIGHUP do that (SIGINT
already raises KeyboardInterrupt), and `supervise_workers()` makes uvicorn's supervisor
(`--workers N`) treat SIGHUP as a stop, not as "restart the workers", so closing the
terminal stops everything.

A worker cannot clean up after a parent killed with -9, but it must not outlive it either: it
would keep the port, and the next serve could not start. `watch_parent()`, called in each
worker's lifespan, asks the kernel for a SIGTERM when the parent dies and polls the parent's
pid as well; SIGTERM is uvicorn's graceful shutdown. The next serve then adopts the embedded
PostgreSQL the dead one left (see `boxoffice.embedded`) and removes its metrics folder
(`metrics_folder()`).
"""

import contextlib
import ctypes
import importlib
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

logger = logging.getLogger("boxoffice")

# Set by the serve process for its workers: the pid they must not outlive.
SERVE_PID_ENV = "BOXOFFICE_SERVE_PID"

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_METRICS_FOLDER = re.compile(r"metrics-(\d+)-")


class Stopped(SystemExit):
    """A stop signal arrived: unwinding, so every `finally` on the way out runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)  # the exit status a shell shows for a signal
        self.signum = signum


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


def _hangup_is_a_stop(signum: int, frame: FrameType | None) -> None:
    # Whoever handles SIGTERM right now: uvicorn's graceful shutdown while it serves, else _stop.
    signal.raise_signal(signal.SIGTERM)


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP raise `Stopped` (SIGINT already raises KeyboardInterrupt).

    For a process that owns something to clean up, before it starts anything. A SIGHUP ignored
    at start (`nohup boxoffice serve &`) stays ignored.
    """
    signal.signal(signal.SIGTERM, _stop)
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _hangup_is_a_stop)


def supervise_workers() -> None:
    """In the serve process, before uvicorn starts: its workers stop with it.

    They learn whom to watch from the environment (see `watch_parent`). uvicorn's supervisor
    (`--workers N`) installs its own handler for SIGHUP, which restarts the workers; ours stops
    instead, or, if SIGHUP was ignored when serve started, puts the ignoring back before any
    worker starts, so the workers (which inherit it) ignore it too.
    """
    hangup_ignored = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    os.environ[SERVE_PID_ENV] = str(os.getpid())

    from uvicorn.supervisors.multiprocess import Multiprocess

    class Supervisor(Multiprocess):
        def init_processes(self) -> None:
            if hangup_ignored:
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
            super().init_processes()

        def handle_hup(self) -> None:
            # The supervisor's own log, where it says "Received SIGTERM, exiting."
            logging.getLogger("uvicorn.error").info("Received SIGHUP, exiting.")
            self.should_exit.set()

    # uvicorn.run builds its supervisor from this name (`uvicorn.main` the attribute is the
    # command-line function, hence the module itself from importlib).
    importlib.import_module("uvicorn.main").Multiprocess = Supervisor  # type: ignore[attr-defined]


def _ask_kernel_for(signum: int) -> bool:
    """Linux: have the kernel send us `signum` as soon as our parent dies."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _poll_parent(parent: int, interval: float, grace: float) -> None:
    # Once the parent is gone we are re-parented (to init or a subreaper): getppid() changes.
    while os.getppid() == parent:
        time.sleep(interval)
    logger.warning("the boxoffice serve process [%d] is gone; this worker stops", parent)
    os.kill(os.getpid(), signal.SIGTERM)
    # A daemon thread: it ends with the process. Still here, the shutdown is stuck: leave.
    time.sleep(grace)
    logger.error("this worker did not stop within %g s of its parent's end; exiting", grace)
    logging.shutdown()
    os._exit(1)


def watch_parent(interval: float = 1.0, grace: float = 10.0) -> None:
    """In a worker of `boxoffice serve --workers N`: stop gracefully when the parent is gone.

    Checks every `interval` seconds; a graceful shutdown still running `grace` seconds later
    (uvicorn's own graceful timeout is shorter) ends with `os._exit`. Also makes SIGHUP stop
    the worker gracefully, as it stops the parent (a closed terminal sends it to both). Does
    nothing in a single-process serve, whose worker is the serve process itself, nor in an app
    built in-process (a test client, no signals to handle).
    """
    serve_pid = os.environ.get(SERVE_PID_ENV)
    if not serve_pid or int(serve_pid) == os.getpid():
        return
    if threading.current_thread() is not threading.main_thread():
        return
    parent = int(serve_pid)
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:  # inherited: see supervise_workers
        signal.signal(signal.SIGHUP, _hangup_is_a_stop)
    # The kernel's signal comes at once, but only on Linux, and when the thread that started
    # this worker ends; polling covers the rest (and a parent that died before we asked).
    _ask_kernel_for(signal.SIGTERM)
    watcher = threading.Thread(
        target=_poll_parent, args=(parent, interval, grace), name="parent-watcher", daemon=True
    )
    watcher.start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def metrics_folder(data_dir: Path) -> Iterator[Path]:
    """A folder of this serve's own in the data folder, for its workers' metrics samples.

    It is removed on the way out. One left by a serve killed with -9 is removed by the next
    serve on the same data folder: its name holds its owner's pid.
    """
    created = not data_dir.exists()
    data_dir.mkdir(parents=True, exist_ok=True)
    for folder in data_dir.glob("metrics-*"):
        owner = _METRICS_FOLDER.match(folder.name)
        if owner is None or not folder.is_dir():
            continue
        pid = int(owner.group(1))
        # Our own pid on an old folder: a pid reused, e.g. pid 1 in a restarted container.
        if pid == os.getpid() or not _alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=f"metrics-{os.getpid()}-", dir=data_dir)).resolve()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                data_dir.rmdir()  # only if still empty: nothing else was kept there
