"""`boxoffice serve` with no DATABASE_URL: on the private PostgreSQL it starts itself."""

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from boxoffice.serving import ServeProcess


@contextmanager
def serve_embedded(data_dir: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "TEST_DATABASE_URL", "POSTGRES_HOST", "ADMIN_TOKEN"}
    }
    server = ServeProcess(
        base_env=environment,
        env={"DATA_DIR": str(data_dir)},
        log_path=log,
        workers=2,
        log_level=None,
        # What is still running at the end (the -9 run) goes at once, workers included.
        stop_signal=signal.SIGKILL,
    )
    with server:
        assert server.process is not None
        yield server.process, server.url
