"""The refusals the domain raises: plain Python, no web framework and no driver.

Each kind has a stable `slug` (the problem type clients match on), a title and the HTTP
status it maps to; `boxoffice.problems` renders them as RFC 9457 problem+json.
"""

from typing import Any


class BoxofficeError(Exception):
    """A refusal the client can act on; `slug` is the stable problem type."""

    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions


class NotFound(BoxofficeError):
    status = 404
    slug = "not-found"
    title = "Not found"


class EventNotFound(NotFound):
    slug = "event-not-found"
    title = "Event not found"


class ReservationNotFound(NotFound):
    """Also the answer to a wrong token: a stranger learns nothing about the reservation."""

    slug = "reservation-not-found"
    title = "Reservation not found"


class Unauthorized(BoxofficeError):
    status = 401
    slug = "unauthorized"
    title = "Missing or malformed credentials"


class Forbidden(BoxofficeError):
    status = 403
    slug = "forbidden"
    title = "Not allowed"


class InvalidRequest(BoxofficeError):
    status = 422
    slug = "invalid-request"
    title = "The request is not valid"


class UnknownTickets(InvalidRequest):
    slug = "unknown-tickets"
    title = "Some tickets do not belong to this event"


class UnknownSection(InvalidRequest):
    slug = "unknown-section"
    title = "The event has no such section"


class IdempotencyKeyReused(InvalidRequest):
    slug = "idempotency-key-reused"
    title = "Idempotency-Key reused with a different request"


class Conflict(BoxofficeError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class TicketsUnavailable(Conflict):
    slug = "tickets-unavailable"
    title = "Tickets unavailable"


class ReservationExpired(Conflict):
    slug = "reservation-expired"
    title = "Reservation expired"


class ReservationNotActive(Conflict):
    slug = "reservation-not-active"
    title = "Reservation is not active"


class SalesClosed(Conflict):
    """Outside the event's sales window (not open yet, ended, or the event has started)."""

    slug = "sales-closed"
    title = "Sales are closed"


class CustomerLimitReached(Conflict):
    slug = "customer-limit-reached"
    title = "Ticket limit per customer reached"


class QueuePassRequired(Forbidden):
    """A queued event sells only to buyers the waiting room admitted, with their pass."""

    slug = "queue-pass-required"
    title = "A queue pass is required"


class EventCancelled(SalesClosed):
    """A cancelled event is closed for sale for good (so whatever handles `sales-closed`
    handles it too), with a type of its own."""

    slug = "event-cancelled"
    title = "The event was cancelled"


class EventHasSales(Conflict):
    """Only an event that never sold a ticket may be deleted; cancel one that did."""

    slug = "event-has-sales"
    title = "The event has sold tickets"


class PaymentRequired(Forbidden):
    """With a real payment provider a hold is booked by the provider's notification only."""

    slug = "payment-required"
    title = "Pay through the checkout"


class BookingNotFound(NotFound):
    """Also the answer to a wrong booking secret."""

    slug = "booking-not-found"
    title = "Booking not found"


class BookingCancelled(Conflict):
    slug = "booking-cancelled"
    title = "The booking was cancelled"


class PaymentNotFound(NotFound):
    """A notification for a payment we never created (or another provider's)."""

    slug = "payment-not-found"
    title = "Payment not found"


class InvalidSignature(BoxofficeError):
    """A payment notification whose signature does not verify, or that is too old."""

    status = 400
    slug = "invalid-signature"
    title = "The notification's signature is not valid"


class PaymentMismatch(InvalidRequest):
    """A notification whose amount or currency is not the payment's."""

    slug = "payment-mismatch"
    title = "The notification does not match the payment"


class TicketCodeNotFound(NotFound):
    slug = "ticket-not-found"
    title = "No such ticket"


class AlreadyCheckedIn(Conflict):
    slug = "already-checked-in"
    title = "Already checked in"


class WrongEvent(Conflict):
    """A valid ticket, but for another event: the door can send its holder on."""

    slug = "wrong-event"
    title = "The ticket is for another event"


class TooManyRequests(BoxofficeError):
    """The client exceeded a rate limit; `retry_after` seconds until it may try again."""

    status = 429
    slug = "too-many-requests"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int, **extensions: Any) -> None:
        super().__init__(detail, **extensions)
        self.retry_after = retry_after


class PayloadTooLarge(BoxofficeError):
    """The request body is larger than MAX_BODY_BYTES; refused before it is parsed."""

    status = 413
    slug = "payload-too-large"
    title = "Request body too large"


class ServiceUnavailable(BoxofficeError):
    status = 503
    slug = "service-unavailable"
    title = "Service temporarily unavailable"


class IdempotentReplay(Exception):
    """Raised out of the effect's transaction when its Idempotency-Key already has an answer:
    the transaction rolls back (nothing was done) and the handler replays that answer."""

    def __init__(self, status_code: int, body: Any) -> None:
        super().__init__(status_code)
        self.status_code = status_code
        self.body = body
