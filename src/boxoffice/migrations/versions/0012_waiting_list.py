"""Selling fairly, part three: a waiting list for sold-out events.

When an event has nothing free, buyers sign up (`waiting_list`, one live entry per customer,
first come first served by `id` order of an identity). While anybody waits, a seat that comes
back (a hold lapsed or released) does not go back on open sale: the hold statement refuses
open-sale holds of such an event, and the offerer (the admitter's loop) turns the free seats
into holds for the next entries instead, each a personal, time-limited claim. An offer is an
ordinary hold whose token is the entry's own token, so the buyer pays for it like any other;
unpaid, it lapses like any other, and its seats pass on to the next entry.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 23:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "waiting_list",
        sa.Column(
            "id", UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()")
        ),
        sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column(
            "event_id",
            UUID(as_uuid=True),
            sa.ForeignKey("events.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("customer", sa.Text(), nullable=False),
        sa.Column(
            "customer_key",
            sa.Text(),
            sa.Computed("lower(btrim(customer))", persisted=True),
            nullable=False,
        ),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), server_default="waiting", nullable=False),
        sa.Column(
            "joined_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("offered_at", sa.DateTime(timezone=True)),
        sa.Column("reservation_id", UUID(as_uuid=True)),
        sa.CheckConstraint(
            "char_length(customer) BETWEEN 1 AND 200", name=op.f("ck_waiting_list_customer_length")
        ),
        sa.CheckConstraint(
            "quantity BETWEEN 1 AND 100", name=op.f("ck_waiting_list_quantity_range")
        ),
        sa.CheckConstraint(
            "status IN ('waiting', 'offered', 'skipped', 'left')",
            name=op.f("ck_waiting_list_status_known"),
        ),
        sa.CheckConstraint(
            "(status = 'offered') = (reservation_id IS NOT NULL)"
            " AND (status = 'offered') = (offered_at IS NOT NULL)",
            name=op.f("ck_waiting_list_offer_matches"),
        ),
    )
    # One live entry per customer and event.
    op.create_index(
        "uq_waiting_list_live_customer",
        "waiting_list",
        ["event_id", "customer_key"],
        unique=True,
        postgresql_where=sa.text("status IN ('waiting', 'offered')"),
    )
    # The next in line, and whether anyone waits (every open-sale hold asks).
    op.create_index(
        "ix_waiting_list_waiting_in_order",
        "waiting_list",
        ["event_id", "seq"],
        postgresql_where=sa.text("status = 'waiting'"),
    )


def downgrade() -> None:
    op.drop_index("ix_waiting_list_waiting_in_order", table_name="waiting_list")
    op.drop_index("uq_waiting_list_live_customer", table_name="waiting_list")
    op.drop_table("waiting_list")
