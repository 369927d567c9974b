import uuid

from pydantic import BaseModel, Field

from boxoffice.payments.service import PaymentRow


class PaymentOut(BaseModel):
    id: uuid.UUID
    reservation_id: uuid.UUID
    provider: str = Field(description="`test` or `stripe`.")
    status: str = Field(description="`pending`, `paid`, `failed`, `refund_pending` or `refunded`.")
    amount: int = Field(description="In minor units.")
    currency: str
    checkout_url: str | None = Field(
        description="Where the buyer pays: send them there (the `test` provider's page is a "
        "path on this server). The hold becomes a booking when the provider tells us it was "
        "paid; poll GET /reservations/{id} (or watch its page)."
    )

    @classmethod
    def of(cls, payment: PaymentRow) -> "PaymentOut":
        return cls(
            id=payment.id,
            reservation_id=payment.reservation_id,
            provider=payment.provider,
            status=payment.status,
            amount=payment.amount_minor,
            currency=payment.currency,
            checkout_url=payment.checkout_url,
        )


class WebhookOutcome(BaseModel):
    outcome: str = Field(
        description="What the notification did: `booked`, `booked-late`, `refund-…`, "
        "`failed`, `already-paid`, `duplicate` (a replay: nothing done) or `ignored`."
    )
