"""The application: routers, error handlers, and a lifespan that runs the expiry sweeper."""

import asyncio
import contextlib
import gc
import inspect
import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from boxoffice import __version__, metrics
from boxoffice.config import Settings, get_settings
from boxoffice.credentials import admin_token, server_secret
from boxoffice.database import create_engine
from boxoffice.dependencies import require_metrics_token
from boxoffice.docs import install_docs
from boxoffice.errors import (
    BoxofficeError,
    install_error_handlers,
    install_problem_schema,
    problem_responses,
    sqlstate,
    unavailable,
)
from boxoffice.events.router import router as events_router
from boxoffice.live.feed import TicketFeed
from boxoffice.live.relay import ChangeRelay
from boxoffice.live.router import router as live_router
from boxoffice.logs import configure_logging
from boxoffice.middleware import OpsMiddleware
from boxoffice.reservations.router import router as reservations_router
from boxoffice.reservations.service import sweep_all
from boxoffice.supervision import watch_parent
from boxoffice.tickets.router import router as tickets_router
from boxoffice.web import install_web

logger = logging.getLogger("boxoffice")


async def run_sweeper(engine: AsyncEngine, settings: Settings) -> None:
    """Free expired holds every few seconds; safe in every worker at once (SKIP LOCKED)."""
    while True:
        try:
            result = await sweep_all(engine, batch_size=settings.sweep_batch_size)
            metrics.record_sweep(result.tickets_freed, result.reservations_expired)
            if result.tickets_freed or result.reservations_expired:
                logger.info(
                    "sweeper freed %d tickets of %d expired holds",
                    result.tickets_freed,
                    result.reservations_expired,
                )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # A database outage must not kill the sweeper; holds stay free lazily meanwhile.
            metrics.record_sweep_failure()
            logger.warning("sweeper run failed: %s", error)
        await asyncio.sleep(settings.sweep_interval_seconds)


async def sample_pool(engine: AsyncEngine) -> None:
    """Publish this worker's pool usage every second (a gauge the other workers cannot read)."""
    while True:
        metrics.sample_pool(engine)
        await asyncio.sleep(1.0)


_LOCK_NOT_AVAILABLE = "55P03"


def _count_lock_timeouts(app: FastAPI) -> None:
    """Count lock timeouts on the error path only, wrapping the handlers that answer them.

    The services turn asyncpg's LockNotAvailableError into a 409 domain error (`raise ... from
    None` keeps it as __context__); elsewhere it reaches the database handlers as it is.
    """
    handlers = app.exception_handlers

    def wrap(kind: type[BaseException], is_lock_timeout: Any) -> None:
        inner = handlers[kind]

        async def handler(request: Request, exc: Exception) -> Any:
            if is_lock_timeout(exc):
                metrics.LOCK_TIMEOUTS.inc()
            response = inner(request, exc)
            return await response if inspect.isawaitable(response) else response

        handlers[kind] = handler

    wrap(BoxofficeError, lambda exc: sqlstate_of(exc.__context__) == _LOCK_NOT_AVAILABLE)
    wrap(DBAPIError, lambda exc: sqlstate_of(exc) == _LOCK_NOT_AVAILABLE)
    wrap(asyncpg.PostgresError, lambda exc: sqlstate_of(exc) == _LOCK_NOT_AVAILABLE)


def sqlstate_of(error: BaseException | None) -> str | None:
    return sqlstate(error) if error is not None else None


def _end_streams_on_stop_signal(feed: TicketFeed) -> None:
    """On SIGTERM/SIGINT, end the live streams at once, then stop as uvicorn would.

    uvicorn waits for open requests before the lifespan's shutdown runs, and a stream never
    ends by itself: without this, every stop waits out the graceful timeout and logs the
    streams' cancellation as errors. uvicorn installs its handlers before our startup; ours
    wraps them (and uvicorn puts its originals back when it exits).
    """
    if threading.current_thread() is not threading.main_thread():
        return  # an in-process test client: no signals to catch
    loop = asyncio.get_running_loop()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(stop_signal)
        if not callable(previous):
            continue

        def on_stop(signum: int, frame: Any, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(feed.close_streams)
            previous(signum, frame)

        signal.signal(stop_signal, on_stop)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_format)
    # Workers started without `boxoffice serve` (uvicorn --factory, gunicorn) agree on the data
    # folder's token and secret instead of each inventing its own.
    settings.admin_token = admin_token(settings)
    if settings.server_secret is None:
        settings.server_secret = server_secret(settings).decode()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        app.state.engine = engine
        # Everything imported so far lives as long as the process: keep it out of the
        # collector's way, so collections stay short on the request path.
        gc.collect()
        gc.freeze()
        tasks = [asyncio.create_task(sample_pool(engine), name="pool-sampler")]
        if settings.sweep_interval_seconds > 0:
            tasks.append(asyncio.create_task(run_sweeper(engine, settings), name="sweeper"))
        assert settings.database_url is not None
        feed = TicketFeed(settings.database_url)
        app.state.ticket_feed = feed
        relay = ChangeRelay(settings.database_url)
        feed.start()
        relay.start()
        _end_streams_on_stop_signal(feed)
        watch_parent()  # a worker of `serve --workers N` stops when its parent is gone
        try:
            yield
        finally:
            await relay.stop()
            await feed.stop()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await engine.dispose()
            metrics.worker_exiting()

    app = FastAPI(
        title="boxoffice",
        version=__version__,
        description="Ticket booking that never sells a seat twice. Errors are RFC 9457 "
        "`application/problem+json`. Admin endpoints take `Authorization: Bearer <ADMIN_TOKEN>`; "
        "reservation endpoints take the reservation's token the same way.",
        lifespan=lifespan,
        # /docs is served from the package's own assets (boxoffice.docs), never a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    install_docs(app)
    install_error_handlers(app)
    install_problem_schema(app)
    _count_lock_timeouts(app)
    app.add_middleware(OpsMiddleware, max_body_bytes=settings.max_body_bytes)
    app.include_router(events_router)
    app.include_router(live_router)
    app.include_router(tickets_router)
    app.include_router(reservations_router)
    install_web(app)

    @app.get("/healthz", tags=["ops"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        summary="Readiness: the database answers",
        responses={
            200: {
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {"status": {"const": "ready"}},
                            "required": ["status"],
                        }
                    }
                }
            },
            **problem_responses(503, descriptions={503: "The database does not answer."}),
        },
    )
    async def readyz(request: Request) -> JSONResponse:
        engine: AsyncEngine = request.app.state.engine
        try:
            async with asyncio.timeout(settings.pool_timeout_seconds):
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except Exception as error:
            logger.warning("not ready: %s", error.__class__.__name__)
            return unavailable("the database does not answer")
        return JSONResponse({"status": "ready"})

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics, summed over the workers",
        description="With METRICS_TOKEN set, send it as `Authorization: Bearer <token>`.",
        # The Prometheus text format, not JSON.
        response_class=PlainTextResponse,
        dependencies=[Depends(require_metrics_token)],
        responses=problem_responses(401, 403),
    )
    def prometheus_metrics(request: Request) -> Response:
        # A plain def: reading the workers' sample files is blocking I/O, so a thread runs it.
        engine: AsyncEngine | None = getattr(request.app.state, "engine", None)
        if engine is not None:
            metrics.sample_pool(engine)
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    return app
