"""The refused-body warning is throttled to one line a second, and says what it left out."""

import logging
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from boxoffice import middleware
from boxoffice.middleware import OpsMiddleware


async def no_app(*_: object) -> None:
    raise AssertionError("the refusal is logged without calling the app")


def test_the_refusal_line_says_over_how_long_it_counted_the_unlogged_ones(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Three refusals within a second, then a fourth half a minute later.
    moments: Iterator[float] = iter([100.0, 100.2, 100.4, 130.0])
    # The middleware's own clock only: the rest of the process keeps the real one.
    clock = SimpleNamespace(monotonic=lambda: next(moments), perf_counter=time.perf_counter)
    monkeypatch.setattr("boxoffice.middleware.time", clock)
    ops = OpsMiddleware(no_app, max_body_bytes=10)
    scope = {"type": "http", "method": "POST", "path": "/events"}
    with caplog.at_level(logging.WARNING, logger=middleware.logger.name):
        for _ in range(4):
            ops._log_refusal(scope, 10)
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "refused POST /events: body over 10 bytes",
        "refused POST /events: body over 10 bytes"
        " (and 2 more, not logged, in the 30 s since the last such line)",
    ]
