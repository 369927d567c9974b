"""A local stand-in for the few Stripe API endpoints `StripeProvider` calls, and Stripe's
webhook events signed the way Stripe signs them.

It answers what the `stripe` package sends (form-encoded bodies with Stripe's bracketed
keys, `Authorization: Bearer <key>`, `Idempotency-Key`) the way Stripe documents it:

  POST /v1/checkout/sessions       a `checkout.session` (`cs_test_…`), open and unpaid
  GET  /v1/checkout/sessions/{id}  that session as it is now
  POST /v1/refunds                 a refund of a paid session's PaymentIntent
  GET  /v1/refunds?payment_intent  the refunds of a PaymentIntent, newest first

An `Idempotency-Key` seen before replays the first answer (with `Idempotent-Replayed: true`)
and refuses different parameters, as Stripe does; a refused request (400) stores no answer.
As in Stripe's current API a session has no PaymentIntent until it is paid (`pay`).

    with StripeStandIn() as stripe_api:
        settings = Settings(stripe_api_base=stripe_api.base_url, stripe_api_key=API_KEY, …)
        …
        stripe_api.pay(session_id)                   # the buyer paid on Stripe's page
        body, headers = signed_event(WEBHOOK_SECRET, "checkout.session.completed",
                                     stripe_api.sessions[session_id])
        stripe_api.requests                          # every request, in order
        stripe_api.refunds_of("pi_test_…")           # the refunds made, in order
        stripe_api.fail_next(1, status=500)          # the next request fails, as an outage
        stripe_api.forget_idempotency_keys()         # 24 hours later
"""

import hashlib
import hmac
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

API_KEY = "sk_test_standin_" + secrets.token_hex(8)
WEBHOOK_SECRET = "whsec_standin_" + secrets.token_hex(16)
# The API version the events say they were rendered with (Stripe writes its account's).
API_VERSION = "2026-10-28.endive"
# Stripe's limits on a session's `expires_at`: 30 minutes to 24 hours from its creation.
MIN_EXPIRY_SECONDS = 30 * 60
MAX_EXPIRY_SECONDS = 24 * 3600


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    # Header names lower-cased.
    headers: dict[str, str]
    # The form body (or query) decoded from Stripe's bracketed keys into dicts and lists.
    params: dict[str, Any]

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


@dataclass
class _StoredAnswer:
    method: str
    path: str
    params: dict[str, Any]
    status: int
    body: dict[str, Any]


class StripeError(Exception):
    """An answer in Stripe's error shape: {"error": {"type", "message", "code", "param"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": {"type": type, "message": message}}
        if code is not None:
            self.body["error"]["code"] = code
        if param is not None:
            self.body["error"]["param"] = param


@dataclass
class StripeStandIn:
    """The stand-in server, on 127.0.0.1 and a free port, served from a thread."""

    api_key: str = API_KEY
    requests: list[RecordedRequest] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Addresses refused as `customer_email` the way Stripe refuses one it finds invalid.
    invalid_emails: set[str] = field(default_factory=set)
    _answers: dict[str, _StoredAnswer] = field(default_factory=dict)
    _failures: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """What `STRIPE_API_BASE` is set to: http://127.0.0.1:<port>."""
        assert self._server is not None, "the stand-in is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> "StripeStandIn":
        standin = self

        class Handler(_Handler):
            owner = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="stripe-standin",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "StripeStandIn":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- what tests do to it and ask of it ----------------------------------------------

    def fail_next(self, count: int = 1, *, status: int = 500) -> None:
        """The next `count` API requests answer `status` in Stripe's error shape."""
        with self._lock:
            self._failures.extend([status] * count)

    def pay(self, session_id: str) -> dict[str, Any]:
        """The buyer paid on Stripe's page: the session completes with a PaymentIntent."""
        with self._lock:
            session = self.sessions[session_id]
            session.update(
                status="complete",
                payment_status="paid",
                payment_intent=session["payment_intent"] or _new_id("pi_test_"),
            )
            return dict(session)

    def forget_idempotency_keys(self) -> None:
        """What Stripe does to a key 24 hours after its first use."""
        with self._lock:
            self._answers.clear()

    def refunds_of(self, payment_intent: str) -> list[dict[str, Any]]:
        """The refunds made of `payment_intent`, oldest first."""
        with self._lock:
            return [r for r in self.refunds.values() if r["payment_intent"] == payment_intent]

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    # --- the API ------------------------------------------------------------------------

    def handle(self, request: RecordedRequest) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Status, JSON body and extra headers for one API request."""
        with self._lock:
            self.requests.append(request)
            if self._failures:
                status = self._failures.pop(0)
                return status, _error_body(status), {}
            try:
                if request.headers.get("authorization") != f"Bearer {self.api_key}":
                    raise StripeError(401, "Invalid API Key provided.")
                if request.method == "POST" and request.idempotency_key is not None:
                    return self._idempotent(request)
                return 200, self._route(request), {}
            except StripeError as error:
                return error.status, error.body, {}

    def _idempotent(self, request: RecordedRequest) -> tuple[int, dict[str, Any], dict[str, str]]:
        key = request.idempotency_key
        assert key is not None
        stored = self._answers.get(key)
        if stored is not None:
            same = (stored.method, stored.path, stored.params) == (
                request.method,
                request.path,
                request.params,
            )
            if not same:
                raise StripeError(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters"
                    " they were first used with.",
                    type="idempotency_error",
                )
            return stored.status, stored.body, {"Idempotent-Replayed": "true"}
        body = self._route(request)
        self._answers[key] = _StoredAnswer(request.method, request.path, request.params, 200, body)
        return 200, body, {}

    def _route(self, request: RecordedRequest) -> dict[str, Any]:
        match request.method, request.path.rstrip("/").split("/")[1:]:
            case "POST", ["v1", "checkout", "sessions"]:
                return self._create_session(request.params)
            case "GET", ["v1", "checkout", "sessions", session_id]:
                session = self.sessions.get(session_id)
                if session is None:
                    raise _missing("checkout.session", session_id, "session")
                return dict(session)
            case "POST", ["v1", "refunds"]:
                return self._create_refund(request.params)
            case "GET", ["v1", "refunds"]:
                intent = request.params.get("payment_intent")
                found = [r for r in self.refunds.values() if r["payment_intent"] == intent]
                return {
                    "object": "list",
                    "url": "/v1/refunds",
                    "has_more": False,
                    "data": list(reversed(found)),
                }
        raise StripeError(404, f"Unrecognized request URL ({request.method}: {request.path}).")

    def _create_session(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("mode") != "payment":
            raise StripeError(400, "The stand-in knows only mode=payment.", param="mode")
        items = params.get("line_items")
        if not isinstance(items, list) or not items:
            raise StripeError(400, "Missing required param: line_items.", param="line_items")
        amount_total = 0
        currencies = set()
        for index, item in enumerate(items):
            price = item.get("price_data", {})
            name = price.get("product_data", {}).get("name")
            if not name:
                raise StripeError(
                    400,
                    "Missing required param: line_items[0][price_data][product_data][name].",
                    param=f"line_items[{index}][price_data][product_data][name]",
                )
            unit_amount = _int(price.get("unit_amount"), f"line_items[{index}][unit_amount]")
            quantity = _int(item.get("quantity"), f"line_items[{index}][quantity]")
            currency = price.get("currency", "")
            if not re.fullmatch(r"[a-z]{3}", currency):
                raise StripeError(
                    400, f"Invalid currency: {currency}.", param="line_items[0][currency]"
                )
            amount_total += unit_amount * quantity
            currencies.add(currency)
        if len(currencies) != 1:
            raise StripeError(400, "All line items must share one currency.")
        email = params.get("customer_email")
        if email is not None and email in self.invalid_emails:
            raise StripeError(
                400,
                f"Invalid email address: {email}",
                code="email_invalid",
                param="customer_email",
            )
        now = int(time.time())
        expires_at = now + MAX_EXPIRY_SECONDS
        if "expires_at" in params:
            expires_at = _int(params["expires_at"], "expires_at")
            if not now + MIN_EXPIRY_SECONDS <= expires_at <= now + MAX_EXPIRY_SECONDS:
                raise StripeError(
                    400,
                    "The `expires_at` timestamp must be between 30 minutes and 24 hours"
                    " after the Checkout Session's creation.",
                    param="expires_at",
                )
        session_id = _new_id("cs_test_")
        session: dict[str, Any] = {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": amount_total,
            "amount_total": amount_total,
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "created": now,
            "currency": currencies.pop(),
            "customer_email": email,
            "expires_at": expires_at,
            "livemode": False,
            "metadata": params.get("metadata", {}),
            "mode": "payment",
            "payment_intent": None,
            "payment_status": "unpaid",
            "status": "open",
            "success_url": params.get("success_url"),
            # Stripe's page is not served here; the address only has Stripe's shape.
            "url": f"{self.base_url}/c/pay/{session_id}",
        }
        self.sessions[session_id] = session
        return dict(session)

    def _create_refund(self, params: dict[str, Any]) -> dict[str, Any]:
        intent = params.get("payment_intent")
        if not intent:
            raise StripeError(400, "One of `charge` or `payment_intent` is required.")
        session = next((s for s in self.sessions.values() if s["payment_intent"] == intent), None)
        if session is None:
            raise _missing("payment_intent", intent, "payment_intent")
        refunded = sum(r["amount"] for r in self.refunds.values() if r["payment_intent"] == intent)
        remaining = session["amount_total"] - refunded
        if remaining <= 0:
            raise StripeError(
                400,
                f"Charge for PaymentIntent {intent} has already been refunded.",
                code="charge_already_refunded",
            )
        amount = _int(params["amount"], "amount") if "amount" in params else remaining
        if not 0 < amount <= remaining:
            raise StripeError(
                400,
                f"Refund amount ({amount}) is greater than unrefunded amount ({remaining}).",
                code="amount_too_large",
                param="amount",
            )
        refund = {
            "id": _new_id("re_test_"),
            "object": "refund",
            "amount": amount,
            "currency": session["currency"],
            "created": int(time.time()),
            "metadata": params.get("metadata", {}),
            "payment_intent": intent,
            "status": "succeeded",
        }
        self.refunds[refund["id"]] = refund
        return dict(refund)


class _Handler(BaseHTTPRequestHandler):
    owner: StripeStandIn

    def do_GET(self) -> None:
        self._answer(urlsplit(self.path).query)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._answer(self.rfile.read(length).decode())

    def _answer(self, form: str) -> None:
        request = RecordedRequest(
            method=self.command,
            path=urlsplit(self.path).path,
            headers={name.lower(): value for name, value in self.headers.items()},
            params=decode_form(form),
        )
        status, body, headers = self.owner.handle(request)
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Request-Id", _new_id("req_"))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read `requests` instead."""


def decode_form(form: str) -> dict[str, Any]:
    """Stripe's form encoding (`a[b][0][c]=v`) back into nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(form, keep_blank_values=True):
        *parents, leaf = key.replace("]", "").split("[")
        node = root
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    decoded: dict[str, Any] = _lists(root)
    return decoded


def _lists(node: Any) -> Any:
    """Dicts whose keys are 0, 1, 2… (how Stripe encodes arrays) become lists."""
    if not isinstance(node, dict):
        return node
    converted = {key: _lists(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


def event(
    type: str,
    session: Mapping[str, Any],
    *,
    event_id: str | None = None,
    created: int | None = None,
) -> bytes:
    """The body Stripe posts for `type` about `session`, as its webhook docs show it."""
    return json.dumps(
        {
            "id": event_id or _new_id("evt_test_"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()) if created is None else created,
            "data": {"object": dict(session)},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type,
        }
    ).encode()


def signature_header(secret: str, payload: bytes, timestamp: int | None = None) -> str:
    """`Stripe-Signature` as Stripe computes it: t=<ts>,v1=<HMAC-SHA256(secret, "<ts>.<body>")>;
    written out here rather than taken from the `stripe` package, so that the package's
    check is shown to accept a signature it did not make."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def signed_event(
    secret: str,
    type: str,
    session: Mapping[str, Any],
    *,
    timestamp: int | None = None,
    event_id: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A webhook delivery: its body and headers, signed with `secret`."""
    body = event(type, session, event_id=event_id)
    return body, {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": signature_header(secret, body, timestamp),
    }


def closed_base_url() -> str:
    """An address where no Stripe answers: a port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")


def _int(value: Any, param: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StripeError(400, f"Invalid integer: {value}", param=param) from None


def _missing(kind: str, object_id: str, param: str) -> StripeError:
    return StripeError(404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


def _error_body(status: int) -> dict[str, Any]:
    kind = "rate_limit_error" if status == 429 else "api_error"
    return {"error": {"type": kind, "message": f"The stand-in was told to fail ({status})."}}
