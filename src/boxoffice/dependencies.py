"""Request-scoped dependencies shared by the routers: database, settings and credentials.

All `async def`: FastAPI runs plain `def` dependencies in a thread pool, and that hand-off
was a sixth of a reservation's CPU time in the profile.
"""

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from boxoffice.config import Settings
from boxoffice.db import Database
from boxoffice.errors import Forbidden, InvalidRequest, Unauthorized

_bearer = HTTPBearer(auto_error=False, description="The admin token, or a reservation's token.")


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    return credentials.credentials if credentials is not None else None


async def holder_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The reservation token from `Authorization: Bearer …`; tokens never travel in URLs.

    Reads the scheme itself rather than through `bearer_token`: every level of dependency
    is resolved again on every request, and this one is on the buyer's path.
    """
    token = credentials.credentials if credentials is not None else None
    if not token:
        raise Unauthorized("send the reservation's token as `Authorization: Bearer <token>`")
    return token


async def require_admin(
    token: Annotated[str | None, Depends(bearer_token)],
    settings: Annotated[Settings, Depends(get_app_settings)],
) -> None:
    if not token:
        raise Unauthorized("send the admin token as `Authorization: Bearer <ADMIN_TOKEN>`")
    expected = settings.admin_token
    if expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Forbidden("that is not the admin token")


async def require_metrics_token(
    request: Request,
    settings: Annotated[Settings, Depends(get_app_settings)],
) -> None:
    """With METRICS_TOKEN set, /metrics wants it as a bearer token; unset, /metrics is open.

    Reads the header itself rather than through the bearer scheme: whether the token is
    needed is a deployment setting, so the OpenAPI document must not declare it required.
    """
    expected = settings.metrics_token
    if expected is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send the metrics token as `Authorization: Bearer <METRICS_TOKEN>`")
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise Forbidden("that is not the metrics token")


def page_size(limit: int, settings: Settings) -> int:
    """A listing's `limit`, refused (not silently cut) above MAX_PAGE_SIZE."""
    if limit > settings.max_page_size:
        raise InvalidRequest(f"limit may be at most {settings.max_page_size}")
    return limit


Db = Annotated[Database, Depends(get_db)]
AppSettings = Annotated[Settings, Depends(get_app_settings)]
HolderToken = Annotated[str, Depends(holder_token)]
BearerToken = Annotated[str | None, Depends(bearer_token)]
