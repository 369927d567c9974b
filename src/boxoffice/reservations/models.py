import enum
import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    DateTime,
    Enum,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from boxoffice.database import Base


class ReservationStatus(enum.StrEnum):
    active = "active"
    confirmed = "confirmed"
    released = "released"
    expired = "expired"


class Reservation(Base):
    __tablename__ = "reservations"
    __table_args__ = (
        CheckConstraint("char_length(customer) BETWEEN 1 AND 200", name="customer_length"),
        CheckConstraint("octet_length(token_hash) = 32", name="token_hash_sha256"),
        CheckConstraint("ticket_count > 0", name="ticket_count_positive"),
        CheckConstraint("expires_at > created_at", name="expires_after_created"),
        CheckConstraint("(status = 'active') = (ended_at IS NULL)", name="ended_unless_active"),
        UniqueConstraint("id", "event_id"),
        # The sweeper looks for active holds past their expiry.
        Index(
            "ix_reservations_active_expires_at",
            "expires_at",
            postgresql_where=text("status = 'active'"),
        ),
        # A customer's live holds and bookings of an event, counted against its cap.
        Index(
            "ix_reservations_event_customer_key",
            "event_id",
            "customer_key",
            postgresql_where=text("status IN ('active', 'confirmed')"),
        ),
        # The retention sweep takes the oldest unsold ended holds (boxoffice.retention).
        Index(
            "ix_reservations_unsold_ended_at",
            "ended_at",
            postgresql_where=text("status IN ('released', 'expired')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    event_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("events.id", ondelete="CASCADE")
    )
    customer: Mapped[str] = mapped_column(Text)
    # The customer as the per-customer cap compares them: trimmed, lower-cased.
    customer_key: Mapped[str] = mapped_column(
        Text, Computed("lower(btrim(customer))", persisted=True)
    )
    token_hash: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[ReservationStatus] = mapped_column(
        Enum(
            ReservationStatus,
            name="reservation_status",
            values_callable=lambda e: [m.value for m in e],
        ),
        server_default=ReservationStatus.active.value,
    )
    ticket_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ReservationTicket(Base):
    """Which tickets a reservation claimed; kept after it ends so its history stays readable."""

    __tablename__ = "reservation_tickets"
    __table_args__ = (
        # I4: a reservation's tickets all belong to its event.
        ForeignKeyConstraint(
            ["reservation_id", "event_id"],
            ["reservations.id", "reservations.event_id"],
            ondelete="CASCADE",
        ),
        ForeignKeyConstraint(
            ["ticket_id", "event_id"], ["tickets.id", "tickets.event_id"], ondelete="CASCADE"
        ),
        Index("ix_reservation_tickets_ticket_id", "ticket_id"),
    )

    reservation_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    ticket_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))


class Booking(Base):
    __tablename__ = "bookings"
    __table_args__ = (
        CheckConstraint(
            "char_length(payment_reference) BETWEEN 1 AND 200", name="payment_reference_length"
        ),
        CheckConstraint("total_minor >= 0", name="total_not_negative"),
        CheckConstraint("code ~ '^[A-Z2-9]{6}$'", name="code_format"),
        CheckConstraint("status IN ('confirmed', 'cancelled')", name="status_known"),
        CheckConstraint(
            "(status = 'cancelled') = (cancelled_at IS NOT NULL)", name="cancelled_at_matches"
        ),
        UniqueConstraint("id", "event_id"),
        # The short code a buyer reads out or types to find the booking again.
        UniqueConstraint("code"),
        # An event's bookings in order: the organiser's list and CSV, the delete check.
        Index("ix_bookings_event_id_created_at", "event_id", "created_at", "id"),
        # One booking per reservation: a second confirm can never sell the seats again.
        UniqueConstraint("reservation_id"),
        ForeignKeyConstraint(
            ["reservation_id", "event_id"], ["reservations.id", "reservations.event_id"]
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    reservation_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    customer: Mapped[str] = mapped_column(Text)
    payment_reference: Mapped[str] = mapped_column(Text)
    total_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    code: Mapped[str] = mapped_column(Text, server_default=text("new_booking_code()"))
    status: Mapped[str] = mapped_column(Text, server_default="confirmed")
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_reason: Mapped[str | None] = mapped_column(Text)
