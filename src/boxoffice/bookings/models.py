import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKeyConstraint,
    Identity,
    Index,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from boxoffice.database import Base


class IssuedTicket(Base):
    """One admission a booking issued: its secret code (the QR code) and its check-in.

    A ticket row can be sold again after a cancellation; the old booking's code stays here,
    refused at the door because its booking is cancelled.
    """

    __tablename__ = "issued_tickets"
    __table_args__ = (
        CheckConstraint("code ~ '^[A-Z2-9]{16}$'", name="code_format"),
        CheckConstraint(
            "(checked_in_at IS NULL) = (checked_in_by IS NULL)", name="checked_in_by_someone"
        ),
        UniqueConstraint("code"),
        UniqueConstraint("booking_id", "ticket_id"),
        ForeignKeyConstraint(
            ["booking_id", "event_id"], ["bookings.id", "bookings.event_id"], ondelete="CASCADE"
        ),
        ForeignKeyConstraint(
            ["ticket_id", "event_id"], ["tickets.id", "tickets.event_id"], ondelete="CASCADE"
        ),
        Index("ix_issued_tickets_ticket_id", "ticket_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    booking_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    ticket_id: Mapped[int] = mapped_column(BigInteger)
    code: Mapped[str] = mapped_column(Text)
    checked_in_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The scanner's name (or "admin"): a second scan says where the first one was.
    checked_in_by: Mapped[str | None] = mapped_column(Text)


class AuditEntry(Base):
    """What an organiser, a scanner or a payment did to events and bookings, and when."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_event_id_id", "event_id", "id"),
        Index("ix_audit_log_booking_id", "booking_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    event_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    booking_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    details: Mapped[dict[str, object]] = mapped_column(JSONB, server_default="{}")
