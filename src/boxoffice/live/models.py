"""The outbox of ticket changes, written by a trigger in the changing transaction."""

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Identity, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from boxoffice.database import Base


class TicketChange(Base):
    """One batch (≤ 200 tickets of one event) of committed changes, until the relay sends it.

    Rows are written by the `tickets_record_changes` trigger (migration 0005), never by
    Python, and deleted by the relay as it announces them with NOTIFY.
    """

    __tablename__ = "ticket_changes"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    # `{"event_id": "<uuid>", "tickets": [[<id>, "<status>"], ...]}`, sent as it is.
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
