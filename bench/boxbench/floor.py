"""The floor under the service's worker CPU: the reservation endpoint with nothing of
boxoffice's but its statement and its schemas, on bare FastAPI and asyncpg.

`uvicorn boxbench.floor:app` (bench/boxbench/workloads/distinct.py starts it like the service,
`--workers N`) answers `POST /events/{id}/reservations {"ticket_ids": [...]}` as the service
does when every ticket is free: one pooled connection, one round trip (RESERVE_CHOSEN), the
same response model. No middleware, dependencies, error mapping, metrics, live feed or
connection checks: what the service's CPU per reservation costs above this is its own.
"""

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Response

from boxoffice.config import asyncpg_dsn
from boxoffice.reservations.reserve import RESERVE_CHOSEN, _hold_from
from boxoffice.reservations.schemas import (
    ReservationCreate,
    ReservationCreated,
    created_from_hold,
)
from boxoffice.reservations.tokens import new_token


async def _no_reset(_: asyncpg.Connection) -> None:
    """The service's pool resets nothing either (boxoffice.db): no extra round trip."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.pool = await asyncpg.create_pool(
        asyncpg_dsn(os.environ["DATABASE_URL"]), min_size=0, max_size=20, reset=_no_reset
    )
    yield
    await app.state.pool.close()


app = FastAPI(lifespan=lifespan, telemetry={"tracing": False, "metrics": False, "logs": False})


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/events/{event_id}/reservations", status_code=201)
async def reserve(
    event_id: uuid.UUID, body: ReservationCreate, response: Response
) -> ReservationCreated:
    ids = sorted(set(body.ticket_ids or ()))
    token, token_hash = new_token()
    async with app.state.pool.acquire() as conn:
        rows = await conn.fetch(
            RESERVE_CHOSEN,
            event_id,
            ids,
            len(ids),
            body.customer,
            token_hash,
            None,
            None,
            None,
            None,
            None,
        )
    hold = _hold_from(rows, event_id=event_id, customer=body.customer, token=token)
    response.headers["Location"] = f"/reservations/{hold.reservation_id}"
    return created_from_hold(hold)
