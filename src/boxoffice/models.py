"""Every table, imported once so Alembic and the tests see the whole schema."""

from boxoffice.bookings.models import AuditEntry, IssuedTicket
from boxoffice.checkin.models import Scanner
from boxoffice.database import Base
from boxoffice.events.models import Event
from boxoffice.idempotency import IdempotencyKeyRow
from boxoffice.live.models import TicketChange
from boxoffice.mail.models import OutboxMessage
from boxoffice.payments.models import Payment, PaymentNotification
from boxoffice.queue.models import QueueEntry, QueueState
from boxoffice.ratelimit import RateBucket
from boxoffice.reservations.models import Booking, Reservation, ReservationStatus, ReservationTicket
from boxoffice.tickets.models import Ticket, TicketAudit, TicketStatus
from boxoffice.waitlist.models import WaitingListEntry

__all__ = [
    "AuditEntry",
    "Base",
    "Booking",
    "Event",
    "IdempotencyKeyRow",
    "IssuedTicket",
    "OutboxMessage",
    "Payment",
    "PaymentNotification",
    "QueueEntry",
    "QueueState",
    "RateBucket",
    "Reservation",
    "ReservationStatus",
    "ReservationTicket",
    "Scanner",
    "Ticket",
    "TicketAudit",
    "TicketChange",
    "TicketStatus",
    "WaitingListEntry",
]
