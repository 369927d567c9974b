import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from boxoffice.queue.service import Place, QueueStats


class QueueJoin(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"customer": "ada@example.com"}]}
    )

    customer: str = Field(
        min_length=1,
        max_length=200,
        description="The buyer (e.g. e-mail); one place per customer, compared trimmed and "
        "case-insensitively. Reservations with the pass must name the same customer.",
    )


class QueuePlaceOut(BaseModel):
    id: uuid.UUID
    event_id: uuid.UUID
    customer: str
    status: str = Field(
        description="`pre-queue` (joined before sales open; the order is drawn at random "
        "then), `waiting`, `admitted` (the pass is good until `pass_expires_at`), `used` (a "
        "hold was made with it), `expired` (the pass ran out unused) or `left`."
    )
    position: int | None = Field(description="1: next to be admitted; null unless waiting.")
    ahead: int | None = Field(description="Places ahead of this one (at most).")
    estimated_wait_seconds: int | None
    sales_start_at: datetime | None
    joined_at: datetime
    admitted_at: datetime | None
    pass_expires_at: datetime | None
    reservation_id: uuid.UUID | None
    stream: str = Field(description="Where to follow this place live (Server-Sent Events).")

    @classmethod
    def of(cls, place: Place) -> "QueuePlaceOut":
        return cls(
            id=place.id,
            event_id=place.event_id,
            customer=place.customer,
            status=place.status,
            position=place.position,
            ahead=place.ahead,
            estimated_wait_seconds=place.estimated_wait_seconds(),
            sales_start_at=place.sales_start_at,
            joined_at=place.joined_at,
            admitted_at=place.admitted_at,
            pass_expires_at=place.pass_expires_at,
            reservation_id=place.reservation_id,
            stream=f"/events/{place.event_id}/queue/{place.id}/stream",
        )


class QueueJoined(QueuePlaceOut):
    token: str = Field(
        description="Proves this place: send it as `Authorization: Bearer <token>` to read "
        "the place, and once admitted as `queue_pass` with your reservation. Shown once."
    )


class QueueStatsOut(BaseModel):
    event_id: uuid.UUID
    pre_queue: int = Field(description="Joined before sales opened, not drawn yet.")
    waiting: int
    admitted: int = Field(description="Passes handed out so far (still good, used or expired).")
    active_passes: int
    used_passes: int
    expired_passes: int
    left_queue: int
    waiting_list: int = Field(description="Buyers on the sold-out event's waiting list.")
    waiting_list_offers: int = Field(description="Seats offered from the waiting list so far.")

    @classmethod
    def of(cls, event_id: uuid.UUID, stats: QueueStats) -> "QueueStatsOut":
        return cls(event_id=event_id, **{k: getattr(stats, k) for k in stats.__slots__})
