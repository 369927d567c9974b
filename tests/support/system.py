"""The `system` layer: tests that go through the real HTTP stack or start a process (a
`boxoffice serve`, a browser, a subprocess, an embedded PostgreSQL of their own). Everything
else is the fast layer, `pytest -m "not system"`.

A test is system when
  - it is marked so (`pytestmark = pytest.mark.system` in a module that is all system, or
    `@pytest.mark.system` on a test that starts a process in its body), or
  - its fixture closure includes a fixture that starts a server: the shared ones in
    conftest (SERVER_FIXTURES) and any fixture defined with `@system_fixture`.
And in the fast layer a test that tries to start a process anyway fails at once, naming the
marker it lacks (`forbid_processes`), so a forgotten mark cannot slow the fast layer down.
"""

import subprocess
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

SYSTEM = "system"
# conftest's fixtures that start the shared server (or depend on it).
SERVER_FIXTURES = {"live_server", "client", "make_event"}
# Fixtures of test modules that start servers of their own, added by `@system_fixture`.
_registered: set[str] = set()

F = TypeVar("F", bound=Callable[..., Any])


def system_fixture(function: F) -> F:
    """Declare that a fixture starts a server or a process: every test using it is system.
    Put it under `@pytest.fixture`."""
    _registered.add(function.__name__)
    return function


def server_fixtures() -> set[str]:
    return SERVER_FIXTURES | _registered


def mark_system_items(items: list[pytest.Item]) -> None:
    """Mark every collected test whose fixtures start a server."""
    starting = server_fixtures()
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if item.get_closest_marker(SYSTEM) is None and fixtures & starting:
            item.add_marker(pytest.mark.system)


def forbid_processes(monkeypatch: pytest.MonkeyPatch, nodeid: str) -> None:
    """For a fast test: starting any process (subprocess, asyncio's, a browser's driver)
    fails, saying the test belongs to the system layer."""

    def refuse(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        raise AssertionError(
            f"{nodeid} starts a process ({args!r}) but is not marked `{SYSTEM}`:"
            " add @pytest.mark.system (or `@system_fixture` on the fixture that starts it)"
        )

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
