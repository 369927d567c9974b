"""The application: routers, error handlers, and a lifespan that runs the expiry sweeper."""

import asyncio
import contextlib
import gc
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from boxoffice import __version__
from boxoffice.config import Settings, get_settings
from boxoffice.database import create_engine
from boxoffice.errors import install_error_handlers, problem
from boxoffice.events.router import router as events_router
from boxoffice.reservations.router import router as reservations_router
from boxoffice.reservations.service import sweep_all
from boxoffice.tickets.router import router as tickets_router

logger = logging.getLogger("boxoffice")


async def run_sweeper(engine: AsyncEngine, settings: Settings) -> None:
    """Free expired holds every few seconds; safe in every worker at once (SKIP LOCKED)."""
    while True:
        try:
            result = await sweep_all(engine, batch_size=settings.sweep_batch_size)
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
            logger.warning("sweeper run failed: %s", error)
        await asyncio.sleep(settings.sweep_interval_seconds)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if settings.admin_token is None:
        settings.admin_token = secrets.token_urlsafe(24)
        logger.warning("ADMIN_TOKEN is not set; this process uses %s", settings.admin_token)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        app.state.engine = engine
        # Everything imported so far lives as long as the process: keep it out of the
        # collector's way, so collections stay short on the request path.
        gc.collect()
        gc.freeze()
        sweeper = None
        if settings.sweep_interval_seconds > 0:
            sweeper = asyncio.create_task(run_sweeper(engine, settings), name="sweeper")
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
            await engine.dispose()

    app = FastAPI(
        title="boxoffice",
        version=__version__,
        description="Ticket booking that never sells a seat twice. Errors are RFC 9457 "
        "`application/problem+json`. Admin endpoints take `Authorization: Bearer <ADMIN_TOKEN>`; "
        "reservation endpoints take the reservation's token the same way.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(events_router)
    app.include_router(tickets_router)
    app.include_router(reservations_router)

    @app.get("/healthz", tags=["ops"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Readiness: the database answers")
    async def readyz(request: Request) -> JSONResponse:
        engine: AsyncEngine = request.app.state.engine
        try:
            async with asyncio.timeout(settings.pool_timeout_seconds):
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except Exception as error:
            logger.warning("not ready: %s", error.__class__.__name__)
            return problem(
                503,
                "service-unavailable",
                "Service temporarily unavailable",
                "the database does not answer",
                {"Retry-After": "1"},
            )
        return JSONResponse({"status": "ready"})

    return app
