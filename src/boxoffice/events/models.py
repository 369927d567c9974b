import uuid
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, DateTime, Integer, String, Text, false, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from boxoffice.database import Base


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint("char_length(name) BETWEEN 1 AND 200", name="name_length"),
        CheckConstraint("hold_seconds BETWEEN 1 AND 86400", name="hold_seconds_range"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_iso"),
        CheckConstraint("ticket_count >= 0", name="ticket_count_positive"),
        CheckConstraint("kind IN ('seated', 'general_admission')", name="kind_known"),
        CheckConstraint(
            "sales_start_at IS NULL OR sales_start_at < coalesce(sales_end_at, starts_at)",
            name="sales_window_ordered",
        ),
        CheckConstraint(
            "max_tickets_per_customer IS NULL OR max_tickets_per_customer > 0",
            name="max_tickets_per_customer_positive",
        ),
        CheckConstraint(
            "NOT queue_enabled OR queue_admit_per_minute IS NOT NULL"
            " OR queue_max_shoppers IS NOT NULL",
            name="queue_admits_somehow",
        ),
        CheckConstraint(
            "coalesce(queue_admit_per_minute, 1) > 0 AND coalesce(queue_max_shoppers, 1) > 0"
            " AND coalesce(queue_pass_seconds, 60) BETWEEN 60 AND 86400",
            name="queue_settings_positive",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    name: Mapped[str] = mapped_column(Text)
    venue: Mapped[str | None] = mapped_column(Text)
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    hold_seconds: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    kind: Mapped[str] = mapped_column(Text)
    ticket_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # On sale from sales_start_at (NULL: from creation) until sales_end_at (NULL: starts_at).
    sales_start_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sales_end_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Active holds and bookings of one customer together (NULL: no cap).
    max_tickets_per_customer: Mapped[int | None] = mapped_column(Integer)
    # The waiting room (boxoffice.queue): admission at a rate per minute, or as many buyers
    # shopping at once as the cap says (either or both), each pass good for so long.
    queue_enabled: Mapped[bool] = mapped_column(Boolean, server_default=false())
    queue_admit_per_minute: Mapped[int | None] = mapped_column(Integer)
    queue_max_shoppers: Mapped[int | None] = mapped_column(Integer)
    queue_pass_seconds: Mapped[int | None] = mapped_column(Integer)
    # A cancelled event sells nothing more; its holds were released, its bookings refunded.
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
