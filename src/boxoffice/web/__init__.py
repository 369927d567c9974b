"""The buyer's pages (event list, seat map, confirmation) and the admin page (issue 5)."""

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from boxoffice.web.pages import STATIC_DIR
from boxoffice.web.router import router


def install_web(app: FastAPI) -> None:
    """Serve the pages and their /static files; neither appears in the OpenAPI schema."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
