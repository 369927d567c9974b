"""Checkout, the providers' webhooks, and the `test` provider's own checkout page."""

import asyncio
import uuid
from urllib.parse import parse_qs

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from boxoffice.db import Database
from boxoffice.dependencies import Db, HolderToken
from boxoffice.errors import BoxofficeError, NotFound
from boxoffice.payments import service
from boxoffice.payments.registry import Providers
from boxoffice.payments.schemas import PaymentOut, WebhookOutcome
from boxoffice.payments.testpay import FAILED, PAID, TestProvider
from boxoffice.problems import problem_responses
from boxoffice.web.pages import PageRoute, not_found, page

router = APIRouter()
pages = APIRouter(include_in_schema=False, route_class=PageRoute)

# The `test` checkout's "pay after a delay": at most this long.
MAX_TEST_DELAY_SECONDS = 600


def _providers(request: Request) -> Providers:
    providers: Providers = request.app.state.payment_providers
    return providers


@router.post(
    "/reservations/{reservation_id}/checkout",
    status_code=201,
    summary="Start paying for your hold: the provider's checkout page",
    responses=problem_responses(401, 404, 409, 422, 503),
)
async def checkout(
    reservation_id: uuid.UUID, request: Request, db: Db, token: HolderToken
) -> PaymentOut:
    payment = await service.start_checkout(
        db,
        _providers(request).checkout,
        reservation_id=reservation_id,
        token=token,
        return_url=f"/shop/reservations/{reservation_id}",
    )
    return PaymentOut.of(payment)


@router.post(
    "/payments/webhooks/{provider}",
    summary="A payment provider's signed notification",
    description="Verified with the provider's signature scheme; only the configured "
    "provider's are taken. Acting on one is idempotent: a replay answers `duplicate`.",
    responses=problem_responses(400, 404, 409, 413, 422, 503),
)
async def webhook(provider: str, request: Request, db: Db) -> WebhookOutcome:
    notifying = _providers(request).notifying(provider)
    if notifying is None:
        raise NotFound(f"no payment provider {provider!r} takes notifications here")
    body = await request.body()
    outcome = await service.handle_notification(db, notifying, body, request.headers)
    return WebhookOutcome(outcome=outcome)


# --- the `test` provider's checkout page ---------------------------------------------------

_TEST_PAYMENT = """
SELECT p.id, p.provider_payment_id, p.amount_minor, p.currency, p.status, p.customer,
       p.reservation_id, e.name AS event_name
FROM payments p JOIN events e ON e.id = p.event_id
WHERE p.provider = 'test' AND p.provider_payment_id = $1
"""


def _return_path(requested: str | None) -> str:
    if requested and requested.startswith("/") and not requested.startswith("//"):
        return requested
    return "/"


def _test_provider(request: Request) -> TestProvider | None:
    provider = _providers(request).notifying("test")
    return provider if isinstance(provider, TestProvider) else None


@pages.get("/pay/test/{provider_payment_id}")
async def test_checkout_page(request: Request, provider_payment_id: str, db: Db) -> Response:
    if _test_provider(request) is None:
        return not_found(request)
    async with db.connection() as conn:
        payment = await conn.fetchrow(_TEST_PAYMENT, provider_payment_id)
    if payment is None:
        return not_found(request)
    return page(
        request,
        "pay_test.html",
        payment=payment,
        return_path=_return_path(request.query_params.get("return")),
        max_delay=MAX_TEST_DELAY_SECONDS,
    )


@pages.post("/pay/test/{provider_payment_id}")
async def test_checkout_action(request: Request, provider_payment_id: str, db: Db) -> Response:
    # A plain HTML form, read by hand (python-multipart would be a dependency for this alone).
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    action = form.get("action", [""])[0]
    return_path = form.get("return_path", ["/"])[0]
    try:
        delay_seconds = min(
            max(int(form.get("delay_seconds", ["0"])[0]), 0), MAX_TEST_DELAY_SECONDS
        )
    except ValueError:
        delay_seconds = 0
    provider = _test_provider(request)
    if provider is None or action not in ("pay", "decline", "delay"):
        return not_found(request)
    async with db.connection() as conn:
        payment = await conn.fetchrow(_TEST_PAYMENT, provider_payment_id)
    if payment is None:
        return not_found(request)
    body, headers = provider.notification(
        provider_payment_id,
        FAILED if action == "decline" else PAID,
        amount_minor=payment["amount_minor"],
        currency=payment["currency"],
    )
    if action == "delay":
        # Like a provider whose notification arrives late: after the buyer is back.
        task = asyncio.create_task(_deliver_later(db, provider, body, headers, delay_seconds))
        request.app.state.background_tasks.add(task)
        task.add_done_callback(request.app.state.background_tasks.discard)
    else:
        try:
            await service.handle_notification(db, provider, body, headers)
        except BoxofficeError as refused:
            return page(
                request,
                "pay_test.html",
                status_code=refused.status,
                payment=payment,
                return_path=_return_path(return_path),
                max_delay=MAX_TEST_DELAY_SECONDS,
                error=refused.detail,
            )
    return RedirectResponse(_return_path(return_path), status_code=303)


async def _deliver_later(
    db: Database,
    provider: TestProvider,
    body: bytes,
    headers: dict[str, str],
    delay_seconds: int,
) -> None:
    await asyncio.sleep(delay_seconds)
    # A provider signs each delivery when it sends it.
    try:
        await service.handle_notification(db, provider, body, provider.signed_headers(body))
    except BoxofficeError:
        service.logger.warning("a delayed test payment was refused", exc_info=True)
