"""Rendering pages: templates, versioned static URLs, strict headers, and errors as HTML.

The JSON API answers every error with problem+json (boxoffice.problems); a person who follows a
stale link should get a page instead, so the page routes map the few errors they can meet.
"""

import hashlib
import logging
from collections.abc import Callable, Coroutine
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from boxoffice.db import DATABASE_ERRORS, Failure, classify
from boxoffice.errors import InvalidRequest, NotFound

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.trim_blocks = True
templates.env.lstrip_blocks = True

# Scripts and styles come only from /static: no inline code, nothing from other sites, and the
# hold's token cannot leak through a Referer header.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@cache
def static_url(name: str) -> str:
    """`/static/<name>?v=<content hash>`: a changed file is a new URL, so no tab runs stale code."""
    digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    return f"/static/{name}?v={digest}"


templates.env.globals["static_url"] = static_url


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    return templates.TemplateResponse(
        request, name, context, status_code=status_code, headers=SECURITY_HEADERS
    )


def not_found(request: Request) -> Response:
    return page(request, "not_found.html", status_code=404)


class PageRoute(APIRoute):
    """A route whose errors are pages: 404 for what does not exist, 503 while the database is
    away; anything else still reaches the application's handlers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_page(request: Request) -> Response:
            try:
                return await handle(request)
            except (NotFound, InvalidRequest):
                return not_found(request)
            except DATABASE_ERRORS as error:
                # The same reading of the error as the API's (a 503 there is a 503 here).
                if classify(error) is not Failure.UNAVAILABLE:
                    raise
                logger.warning("page %s unavailable: %s", request.url.path, type(error).__name__)
                response = page(request, "unavailable.html", status_code=503)
                response.headers["Retry-After"] = "2"
                return response

        return handle_page
