"""Operations endpoints: liveness, readiness and Prometheus metrics."""

import asyncio
import logging

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from boxoffice import metrics
from boxoffice.db import Database
from boxoffice.dependencies import Db, require_metrics_token
from boxoffice.problems import problem_responses, unavailable

logger = logging.getLogger("boxoffice")

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
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
async def readyz(db: Db) -> JSONResponse:
    settings = db.settings
    try:
        async with asyncio.timeout(settings.pool_timeout_seconds):
            await db.fetchval("SELECT 1")
    except Exception as error:
        logger.warning("not ready: %s", error.__class__.__name__)
        return unavailable("the database does not answer")
    return JSONResponse({"status": "ready"})


@router.get(
    "/metrics",
    summary="Prometheus metrics, summed over the workers",
    description="With METRICS_TOKEN set, send it as `Authorization: Bearer <token>`.",
    # The Prometheus text format, not JSON.
    response_class=PlainTextResponse,
    dependencies=[Depends(require_metrics_token)],
    responses=problem_responses(401, 403),
)
async def prometheus_metrics(request: Request) -> Response:
    # The pool is read here, on the event loop that owns it (asyncpg's pool is not safe to
    # read from another thread); reading the workers' sample files is blocking I/O, so a
    # thread does that.
    db: Database | None = getattr(request.app.state, "db", None)
    if db is not None:
        metrics.sample_pool(db)
    body, content_type = await run_in_threadpool(metrics.exposition)
    return Response(body, media_type=content_type)
