"""The buyer's pages (event list, seat map, confirmation) and the admin page (issue 5)."""

import os

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

from boxoffice.web.pages import STATIC_DIR
from boxoffice.web.router import router


class RevalidatedStaticFiles(StaticFiles):
    """Static files a browser must revalidate (cheaply, by ETag) before each use.

    The page loads its entry script by a versioned URL, but the ES modules that script
    imports are fetched by plain URLs: without this, a browser could run an old module
    beside a new one after an upgrade.
    """

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope,
        status_code: int = 200,
    ) -> Response:  # fmt: skip
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        return response


def install_web(app: FastAPI) -> None:
    """Serve the pages and their /static files; neither appears in the OpenAPI schema."""
    app.include_router(router)
    app.mount("/static", RevalidatedStaticFiles(directory=STATIC_DIR), name="static")
