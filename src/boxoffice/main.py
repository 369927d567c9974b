"""The application: routers, error handlers, and a lifespan that runs the expiry sweeper."""

import asyncio
import contextlib
import gc
import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from boxoffice import __version__, metrics
from boxoffice.admin.router import router as admin_router
from boxoffice.bookings.organiser_router import router as organiser_router
from boxoffice.bookings.router import pages as booking_pages
from boxoffice.bookings.router import router as bookings_router
from boxoffice.checkin.router import router as checkin_router
from boxoffice.config import Settings, get_settings
from boxoffice.credentials import admin_token, server_secret
from boxoffice.db import Database
from boxoffice.demo.router import router as demo_router
from boxoffice.docs import install_docs
from boxoffice.events.router import router as events_router
from boxoffice.expiry import run_sweeper
from boxoffice.live.feed import TicketFeed
from boxoffice.live.relay import ChangeRelay
from boxoffice.live.router import router as live_router
from boxoffice.logs import configure_logging
from boxoffice.mail.sender import run_outbox_sender
from boxoffice.middleware import OpsMiddleware
from boxoffice.ops.router import router as ops_router
from boxoffice.payments.registry import build_providers
from boxoffice.payments.router import pages as payment_pages
from boxoffice.payments.router import router as payments_router
from boxoffice.payments.service import run_refunder
from boxoffice.problems import install_error_handlers, install_problem_schema
from boxoffice.queue.admitter import Admitter
from boxoffice.queue.feed import QueueFeed
from boxoffice.queue.router import router as queue_router
from boxoffice.queue.service import CHANNEL as QUEUE_CHANNEL
from boxoffice.reservations.router import router as reservations_router
from boxoffice.supervision import watch_parent
from boxoffice.tickets.router import router as tickets_router
from boxoffice.waitlist.router import router as waitlist_router
from boxoffice.web import install_web

logger = logging.getLogger("boxoffice")


async def sample_pool(db: Database) -> None:
    """Publish this worker's pool usage every second (a gauge the other workers cannot read)."""
    while True:
        metrics.sample_pool(db)
        await asyncio.sleep(1.0)


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
        db = Database(settings)
        app.state.db = db
        # Everything imported so far lives as long as the process: keep it out of the
        # collector's way, so collections stay short on the request path.
        gc.collect()
        gc.freeze()
        tasks = [asyncio.create_task(sample_pool(db), name="pool-sampler")]
        if settings.sweep_interval_seconds > 0:
            tasks.append(asyncio.create_task(run_sweeper(db, settings), name="sweeper"))
        # Every worker sends owed e-mail (each message claimed by one: SKIP LOCKED).
        tasks.append(asyncio.create_task(run_outbox_sender(db, settings), name="outbox-sender"))
        providers = build_providers(settings)
        app.state.payment_providers = providers
        # Tasks a request leaves behind (the test provider's delayed notifications).
        app.state.background_tasks = set()
        tasks.append(
            asyncio.create_task(run_refunder(db, settings, providers.by_name), name="refunder")
        )
        assert settings.database_url is not None
        feed = TicketFeed(settings.database_url)
        app.state.ticket_feed = feed
        queue_feed = QueueFeed()
        app.state.queue_feed = queue_feed
        feed.listen_also(QUEUE_CHANNEL, queue_feed.hear, queue_feed.reconnected)
        admitter = Admitter(settings, db)
        relay = ChangeRelay(
            settings.database_url, leader_work=admitter.tick, every=admitter.interval
        )
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
            await db.close()
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
        telemetry=None
        if settings.otel_enabled
        else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    install_docs(app)
    install_error_handlers(app)
    install_problem_schema(app)
    app.add_middleware(OpsMiddleware, max_body_bytes=settings.max_body_bytes)
    # Requests are matched against the routers in this order (each router's regexes twice,
    # in FastAPI's routing): the buyer's hot paths first. No two routers share a path.
    app.include_router(reservations_router)
    app.include_router(events_router)
    app.include_router(tickets_router)
    app.include_router(live_router)
    app.include_router(queue_router)
    app.include_router(waitlist_router)
    app.include_router(payments_router)
    app.include_router(payment_pages)
    app.include_router(bookings_router)
    app.include_router(booking_pages)
    app.include_router(organiser_router)
    app.include_router(checkin_router)
    app.include_router(ops_router)
    app.include_router(demo_router)
    app.include_router(admin_router)
    install_web(app)

    return app
