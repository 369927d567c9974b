import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from boxoffice.database import Base


class WaitingListEntry(Base):
    """A buyer waiting for a sold-out event's seats to come back, and then their offer."""

    __tablename__ = "waiting_list"
    __table_args__ = (
        CheckConstraint("char_length(customer) BETWEEN 1 AND 200", name="customer_length"),
        CheckConstraint("quantity BETWEEN 1 AND 100", name="quantity_range"),
        CheckConstraint("status IN ('waiting', 'offered', 'skipped', 'left')", name="status_known"),
        CheckConstraint(
            "(status = 'offered') = (reservation_id IS NOT NULL)"
            " AND (status = 'offered') = (offered_at IS NOT NULL)",
            name="offer_matches",
        ),
        # One live entry per customer and event.
        Index(
            "uq_waiting_list_live_customer",
            "event_id",
            "customer_key",
            unique=True,
            postgresql_where=text("status IN ('waiting', 'offered')"),
        ),
        # The next in line, and whether anyone waits (every open-sale hold asks).
        Index(
            "ix_waiting_list_waiting_in_order",
            "event_id",
            "seq",
            postgresql_where=text("status = 'waiting'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    seq: Mapped[int] = mapped_column(BigInteger, Identity())
    event_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("events.id", ondelete="CASCADE")
    )
    customer: Mapped[str] = mapped_column(Text)
    customer_key: Mapped[str] = mapped_column(
        Text, Computed("lower(btrim(customer))", persisted=True)
    )
    quantity: Mapped[int] = mapped_column(Integer)
    # waiting → offered (a hold made for it) | skipped (it could not be offered: the
    # customer's cap) | left.
    status: Mapped[str] = mapped_column(Text, server_default="waiting")
    joined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    offered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reservation_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
