import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
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


class OutboxMessage(Base):
    """An e-mail owed to a buyer, written in the transaction that made it owed.

    The sender delivers it after commit: a slow mail server never slows a sale, and a crash
    between commit and delivery only delays it. Rendered when sent, from the rows it names.
    """

    __tablename__ = "outbox_messages"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('booking-confirmed', 'booking-cancelled', 'payment-refunded',"
            " 'booking-link')",
            name="kind_known",
        ),
        CheckConstraint("char_length(recipient) BETWEEN 3 AND 200", name="recipient_length"),
        # The sender's work list: unsent messages that are due.
        Index(
            "ix_outbox_messages_due", "next_attempt_at", postgresql_where=text("sent_at IS NULL")
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    recipient: Mapped[str] = mapped_column(Text)
    booking_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    payment_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
