import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from boxoffice.database import Base


class Payment(Base):
    """One attempt to pay for a hold, as the provider knows it, and what became of the money.

    pending → paid (booked) | failed (declined, abandoned) | refund_pending → refunded.
    Money that arrived but booked nothing (too late, seats gone, event cancelled), or whose
    booking was cancelled, goes refund_pending; the refunder asks the provider and marks it
    refunded.
    """

    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("provider IN ('test', 'stripe')", name="provider_known"),
        CheckConstraint(
            "status IN ('pending', 'paid', 'failed', 'refund_pending', 'refunded')",
            name="status_known",
        ),
        CheckConstraint("amount_minor >= 0", name="amount_not_negative"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_iso"),
        CheckConstraint(
            "(status IN ('paid', 'refund_pending', 'refunded')) = (paid_at IS NOT NULL)",
            name="paid_when_money_arrived",
        ),
        CheckConstraint("status <> 'paid' OR booking_id IS NOT NULL", name="paid_books"),
        CheckConstraint("(status = 'refunded') = (refunded_at IS NOT NULL)", name="refunded_at"),
        CheckConstraint(
            "client_reference IS NULL OR char_length(client_reference) BETWEEN 1 AND 200",
            name="client_reference_length",
        ),
        ForeignKeyConstraint(
            ["reservation_id", "event_id"], ["reservations.id", "reservations.event_id"]
        ),
        ForeignKeyConstraint(["booking_id", "event_id"], ["bookings.id", "bookings.event_id"]),
        # A provider's payment is one of ours, once: a notification can name only one.
        Index(
            "uq_payments_provider_payment_id",
            "provider",
            "provider_payment_id",
            unique=True,
            postgresql_where=text("provider_payment_id IS NOT NULL"),
        ),
        # A booking is paid by exactly one payment.
        Index("uq_payments_booking_id", "booking_id", unique=True),
        # One open checkout per hold: a second click continues the first.
        Index(
            "uq_payments_pending_reservation",
            "reservation_id",
            unique=True,
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_payments_reservation_id", "reservation_id"),
        # The refunder's work list.
        Index(
            "ix_payments_refund_pending",
            "refund_requested_at",
            postgresql_where=text("status = 'refund_pending'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    reservation_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    customer: Mapped[str] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(Text)
    # The provider's own id (a Stripe Checkout Session's `cs_…`); NULL until it answered.
    provider_payment_id: Mapped[str | None] = mapped_column(Text)
    # Where the buyer pays (the provider's page), once the provider answered.
    checkout_url: Mapped[str | None] = mapped_column(Text)
    # What a client said when it confirmed directly (the `test` provider only).
    client_reference: Mapped[str | None] = mapped_column(Text)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    booking_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    refund_reason: Mapped[str | None] = mapped_column(Text)
    refund_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    refunded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    provider_refund_id: Mapped[str | None] = mapped_column(Text)
    refund_attempts: Mapped[int] = mapped_column(BigInteger, server_default="0")
    refund_error: Mapped[str | None] = mapped_column(Text)


class PaymentNotification(Base):
    """Every provider notification we accepted, once: a replay or a retry is recognised."""

    __tablename__ = "payment_notifications"
    __table_args__ = (Index("ix_payment_notifications_payment_id", "payment_id"),)

    provider: Mapped[str] = mapped_column(Text, primary_key=True)
    notification_id: Mapped[str] = mapped_column(Text, primary_key=True)
    payment_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    kind: Mapped[str] = mapped_column(Text)
    # What the notification did: booked, booked-late, refund, failed, ignored (and why).
    outcome: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
