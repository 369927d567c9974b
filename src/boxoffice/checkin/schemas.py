import re
import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

# The shape of an issued ticket's code (the `code_format` check on issued_tickets).
TICKET_CODE = re.compile(r"[A-Z2-9]{16}")
_SEPARATORS = re.compile(r"[\s-]+")


def normalise_ticket_code(text: str) -> str:
    """A code as typed, read aloud or scanned (`abcd-efgh …`), in its stored form; refused
    (422) when it cannot be one."""
    code = _SEPARATORS.sub("", text).upper()
    if not TICKET_CODE.fullmatch(code):
        raise ValueError("a ticket code is 16 letters and digits 2–9, e.g. ABCD-EFGH-JKLM-NPQR")
    return code


TicketCode = Annotated[
    # Long enough for a code with spaces or dashes between every character, no longer.
    str,
    Field(min_length=1, max_length=64, examples=["ABCD-EFGH-JKLM-NPQR"]),
    AfterValidator(normalise_ticket_code),
]


ScannerName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    Field(
        description="What the door calls this scanner; a second scan of a ticket names it.",
        examples=["North door 1"],
    ),
]


class ScannerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ScannerName


class ScannerOut(BaseModel):
    id: uuid.UUID
    name: str
    created_at: datetime
    revoked_at: datetime | None = Field(description="Set once revoked: its token is refused.")


class ScannerCreated(BaseModel):
    id: uuid.UUID
    name: str
    token: str = Field(
        description="The scanner's secret, shown only once: the door sends it as "
        "`Authorization: Bearer <token>` to check tickets in at this event only."
    )


class CheckinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ticket_code: TicketCode = Field(
        description="The ticket's code as printed or in its QR code; case, spaces and dashes "
        "do not matter."
    )


class CheckinOut(BaseModel):
    """An admitted ticket: enough for the door to say where its holder sits."""

    ticket_code: str
    booking_code: str
    event_id: uuid.UUID
    label: str = Field(examples=["Stalls B-4"])
    section: str | None = Field(description="Null for general admission.")
    row: str | None
    seat: int | None
    customer: str
    checked_in_at: datetime
    checked_in_by: str = Field(description='The scanner\'s name, or "admin".')
