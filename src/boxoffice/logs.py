"""Logging: a request id in a contextvar, an optional one-JSON-object-per-line format, and
control characters escaped in every line, so request data cannot forge log lines."""

import json
import logging
import re
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime

# The id of the request being served, for every log line written while serving it.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# Loggers uvicorn configures with handlers of their own; the rest propagate to the root.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id (and exc_info)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id.get(),
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


# C0 and C1 controls (newline, carriage return, escape...), DEL, and the Unicode line and
# paragraph separators: whatever a terminal or a log viewer may take for the end of a line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escaped(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def escape_controls(text: str) -> str:
    """`text` with its control characters written as escapes (`\\n`, `\\x1b`, `\\u2028`)."""
    if text.isprintable():  # the usual case: no regex at all
        return text
    return _CONTROL.sub(_escaped, text)


def _escape_arg(value: object) -> object:
    if isinstance(value, str):
        return escape_controls(value)
    if value is None or isinstance(value, int | float):
        return value  # keeps %d and %.2f working
    return escape_controls(str(value))


class EscapeControlCharacters(logging.Filter):
    """Escapes control characters in a record's message and arguments, on every handler.

    uvicorn puts the percent-decoded path in its access log (`/x%0Aforged` logs a newline) and
    boxoffice's refusals name the path too: without this, a request could write a line of its
    own into the log. The record keeps its shape (uvicorn's access formatter reads its args).
    Tracebacks are left as they are: they are multi-line by nature.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        # Idempotent: a record met by several handlers is escaped again, to the same text.
        if isinstance(record.msg, str):
            record.msg = escape_controls(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_escape_arg(arg) for arg in args)
        elif isinstance(args, Mapping):
            record.args = {key: _escape_arg(arg) for key, arg in args.items()}
        return True


def _install_filter(handler: logging.Handler) -> None:
    if not any(isinstance(f, EscapeControlCharacters) for f in handler.filters):
        handler.addFilter(EscapeControlCharacters())


def configure_logging(log_format: str) -> None:
    """Escape control characters on every handler; in `json` mode, also write JSON lines.

    Called from create_app, i.e. in each worker after uvicorn has configured its loggers.
    Nothing here (or anywhere in boxoffice) logs request headers: they carry bearer tokens.
    """
    root = logging.getLogger()
    if not root.handlers:
        # What logging's last-resort handler would print (warnings and up, the bare message),
        # but a handler of ours, so it can carry the filter.
        fallback = logging.StreamHandler(sys.stderr)
        fallback.setLevel(logging.WARNING if log_format != "json" else logging.NOTSET)
        root.addHandler(fallback)
    handlers = list(root.handlers)
    for name in _UVICORN_LOGGERS:
        handlers += logging.getLogger(name).handlers
    for handler in handlers:
        _install_filter(handler)
    if log_format != "json":
        return
    formatter = JsonFormatter()
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    for handler in handlers:
        handler.setFormatter(formatter)
