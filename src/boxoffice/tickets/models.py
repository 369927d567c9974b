import enum
import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from boxoffice.database import Base


class TicketStatus(enum.StrEnum):
    available = "available"
    reserved = "reserved"
    booked = "booked"


ticket_status_enum = Enum(
    TicketStatus, name="ticket_status", values_callable=lambda e: [m.value for m in e]
)


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        # I1-I3: the status and the claim columns can only move together.
        CheckConstraint(
            "(status = 'available' AND reservation_id IS NULL AND hold_expires_at IS NULL"
            "  AND booking_id IS NULL)"
            " OR (status = 'reserved' AND reservation_id IS NOT NULL"
            "  AND hold_expires_at IS NOT NULL AND booking_id IS NULL)"
            " OR (status = 'booked' AND reservation_id IS NOT NULL AND booking_id IS NOT NULL"
            "  AND hold_expires_at IS NULL)",
            name="status_matches_claim",
        ),
        CheckConstraint("price_minor >= 0", name="price_not_negative"),
        CheckConstraint("position >= 0", name="position_not_negative"),
        UniqueConstraint("event_id", "position"),
        UniqueConstraint("id", "event_id"),
        UniqueConstraint("event_id", "section", "row_label", "seat"),
        # I4: a ticket can only be held or booked by a reservation of its own event.
        ForeignKeyConstraint(
            ["reservation_id", "event_id"], ["reservations.id", "reservations.event_id"]
        ),
        ForeignKeyConstraint(["booking_id", "event_id"], ["bookings.id", "bookings.event_id"]),
        # Best available takes free seats in seat order without scanning sold ones.
        Index(
            "ix_tickets_available_by_position",
            "event_id",
            "position",
            postgresql_where=text("status = 'available'"),
        ),
        # The sweeper finds expired holds without scanning the whole table.
        Index(
            "ix_tickets_hold_expires_at",
            "hold_expires_at",
            postgresql_where=text("status = 'reserved'"),
        ),
        Index("ix_tickets_reservation_id", "reservation_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # The original demo's clients know tickets by UUID (DESIGN.md, compatibility contract).
    public_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), server_default=text("gen_random_uuid()"), unique=True
    )
    event_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("events.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(Integer)
    section: Mapped[str | None] = mapped_column(Text)
    row_label: Mapped[str | None] = mapped_column(Text)
    seat: Mapped[int | None] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(Text)
    price_minor: Mapped[int] = mapped_column(Integer)
    status: Mapped[TicketStatus] = mapped_column(
        ticket_status_enum, server_default=TicketStatus.available.value
    )
    reservation_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    hold_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    booking_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))


class TicketAudit(Base):
    """One row per ticket state change: who moved it, from what, to what, and when."""

    __tablename__ = "ticket_audit"
    __table_args__ = (
        CheckConstraint(
            "reason IN ('reserved', 'confirmed', 'released', 'expired', 'cancelled')",
            name="reason_known",
        ),
        # A ticket's history in order; the invariant checker reads each ticket's last row.
        Index("ix_ticket_audit_ticket_id_id", "ticket_id", "id"),
        # The retention sweep deletes a pruned hold's audit rows by its id.
        Index("ix_ticket_audit_reservation_id", "reservation_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    ticket_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("tickets.id", ondelete="CASCADE"))
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    from_status: Mapped[TicketStatus] = mapped_column(ticket_status_enum)
    to_status: Mapped[TicketStatus] = mapped_column(ticket_status_enum)
    reason: Mapped[str] = mapped_column(Text)
    reservation_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    booking_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
