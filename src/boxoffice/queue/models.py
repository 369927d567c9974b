import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    DateTime,
    Float,
    ForeignKey,
    Index,
    SmallInteger,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from boxoffice.database import Base


class QueueEntry(Base):
    """One customer's place in an event's waiting room, and then their pass."""

    __tablename__ = "queue_entries"
    __table_args__ = (
        CheckConstraint("char_length(customer) BETWEEN 1 AND 200", name="customer_length"),
        CheckConstraint("lane IN (0, 1)", name="lane_known"),
        CheckConstraint("status IN ('waiting', 'admitted', 'used', 'left')", name="status_known"),
        # Arrivals after the on-sale are ranked as they join; the pre-queue at the draw.
        CheckConstraint("lane = 0 OR rank IS NOT NULL", name="arrivals_ranked"),
        CheckConstraint(
            "(status IN ('waiting', 'left')) = (admitted_at IS NULL)"
            " AND (admitted_at IS NULL) = (pass_expires_at IS NULL)"
            " AND (status = 'used') = (used_at IS NOT NULL)"
            " AND (status = 'used') = (reservation_id IS NOT NULL)"
            " AND (status = 'waiting' OR rank IS NOT NULL OR status = 'left')",
            name="status_matches",
        ),
        # One place per customer and event.
        UniqueConstraint("event_id", "customer_key"),
        # The admitter takes the waiting places in queue order; positions count those ahead.
        Index(
            "ix_queue_entries_waiting_in_order",
            "event_id",
            "lane",
            "rank",
            postgresql_where=text("status = 'waiting'"),
        ),
        # Buyers shopping now, for the cap on shoppers.
        Index(
            "ix_queue_entries_passes",
            "event_id",
            "pass_expires_at",
            postgresql_where=text("status IN ('admitted', 'used')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    event_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("events.id", ondelete="CASCADE")
    )
    customer: Mapped[str] = mapped_column(Text)
    customer_key: Mapped[str] = mapped_column(
        Text, Computed("lower(btrim(customer))", persisted=True)
    )
    # 0: the pre-queue (joined before sales opened), 1: later arrivals; lane 0 goes first.
    lane: Mapped[int] = mapped_column(SmallInteger)
    rank: Mapped[int | None] = mapped_column(BigInteger)
    # An arrival's number in its event's lane 1 (1, 2, …, by rank), given by the admitter: what
    # its position is counted from.
    ordinal: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(Text, server_default="waiting")
    joined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    admitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pass_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reservation_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))


class QueueState(Base):
    """The admitter's bookkeeping for one event's waiting room."""

    __tablename__ = "queue_state"
    __table_args__ = (CheckConstraint("admitted_total >= 0", name="admitted_not_negative"),)

    event_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("events.id", ondelete="CASCADE"), primary_key=True
    )
    admitted_total: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # Admissions earned at the event's rate and not spent yet (a fraction carries over).
    credit: Mapped[float] = mapped_column(Float, server_default="0")
    ticked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    drawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_admitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_admitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The last place admitted, in queue order: a stream behind it is still waiting.
    through_lane: Mapped[int | None] = mapped_column(SmallInteger)
    through_rank: Mapped[int | None] = mapped_column(BigInteger)
    # Places ranked by the draw, arrivals numbered, and admissions from each lane: a position
    # is arithmetic on these.
    drawn_total: Mapped[int] = mapped_column(BigInteger, server_default="0")
    numbered_total: Mapped[int] = mapped_column(BigInteger, server_default="0")
    admitted_early: Mapped[int] = mapped_column(BigInteger, server_default="0")
    admitted_arrivals: Mapped[int] = mapped_column(BigInteger, server_default="0")
