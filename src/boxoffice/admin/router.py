"""GET /admin/session: whether a bearer token is the admin token, for the admin page's sign-in.

Thin on purpose: `require_admin` (boxoffice.dependencies) decides, exactly as it does for
POST /events, so the page's sign-in and the endpoints it unlocks can never disagree.
"""

from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from boxoffice.dependencies import require_admin
from boxoffice.problems import problem_responses

# Out of the OpenAPI schema: tests/test_web.py keeps every path under /admin out of it (the
# admin *page* is /admin). To document it there, drop include_in_schema=False and narrow that
# test to the page's own path; the error answers below are declared for that day.
router = APIRouter(tags=["admin"], include_in_schema=False)


class AdminSession(BaseModel):
    role: Literal["admin"]


# GET, not POST: it creates nothing (there is no server-side session; the token itself is the
# credential, sent as `Authorization: Bearer`), so it is safe, retryable, and takes no body.
@router.get(
    "/admin/session",
    dependencies=[Depends(require_admin)],
    summary="Check the admin token: 200 for it, 401 without a token, 403 for another",
    responses=problem_responses(401, 403),
)
async def admin_session() -> AdminSession:
    return AdminSession(role="admin")
