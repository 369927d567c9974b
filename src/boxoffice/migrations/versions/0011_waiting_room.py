"""Selling fairly, part two: a waiting room per event.

An event with `queue_enabled` sells only to buyers the waiting room admitted. A buyer joins
once per customer (`queue_entries`, unique on the customer as the cap compares them) and
gets a place in one of two lanes, served in order: lane 0 is the pre-queue (joined before
`sales_start_at`; its `rank` is drawn at random when sales open), lane 1 the later arrivals
(`rank` from the `queue_arrivals` sequence: first come, first served). The admitter, one at a
time across workers, turns waiting places into passes at the event's rate or within its cap on
buyers shopping at once, and keeps its bookkeeping in `queue_state`. A pass is good for one
hold by that customer on that event until `pass_expires_at`; the hold that uses it records
itself on the place, in the same statement, under the place's row lock.

Positions cost no count: the draw ranks the pre-queue 1..N, and the admitter numbers the
arrivals 1, 2, … (`ordinal`, in rank order) as they come, so a place's position is its
number less those admitted before it (`queue_state`'s counters), never a scan of the queue.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 22:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "events",
        sa.Column("queue_enabled", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("events", sa.Column("queue_admit_per_minute", sa.Integer()))
    op.add_column("events", sa.Column("queue_max_shoppers", sa.Integer()))
    op.add_column("events", sa.Column("queue_pass_seconds", sa.Integer()))
    op.create_check_constraint(
        op.f("ck_events_queue_admits_somehow"),
        "events",
        "NOT queue_enabled OR queue_admit_per_minute IS NOT NULL OR queue_max_shoppers IS NOT NULL",
    )
    op.create_check_constraint(
        op.f("ck_events_queue_settings_positive"),
        "events",
        "coalesce(queue_admit_per_minute, 1) > 0 AND coalesce(queue_max_shoppers, 1) > 0"
        " AND coalesce(queue_pass_seconds, 60) BETWEEN 60 AND 86400",
    )
    op.execute("CREATE SEQUENCE queue_arrivals AS bigint")
    op.create_table(
        "queue_entries",
        sa.Column(
            "id", UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()")
        ),
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
        sa.Column("lane", sa.SmallInteger(), nullable=False),
        sa.Column("rank", sa.BigInteger()),
        sa.Column("ordinal", sa.BigInteger()),
        sa.Column("status", sa.Text(), server_default="waiting", nullable=False),
        sa.Column(
            "joined_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("admitted_at", sa.DateTime(timezone=True)),
        sa.Column("pass_expires_at", sa.DateTime(timezone=True)),
        sa.Column("used_at", sa.DateTime(timezone=True)),
        sa.Column("reservation_id", UUID(as_uuid=True)),
        sa.CheckConstraint(
            "char_length(customer) BETWEEN 1 AND 200", name=op.f("ck_queue_entries_customer_length")
        ),
        sa.CheckConstraint("lane IN (0, 1)", name=op.f("ck_queue_entries_lane_known")),
        sa.CheckConstraint(
            "status IN ('waiting', 'admitted', 'used', 'left')",
            name=op.f("ck_queue_entries_status_known"),
        ),
        sa.CheckConstraint(
            "lane = 0 OR rank IS NOT NULL", name=op.f("ck_queue_entries_arrivals_ranked")
        ),
        sa.CheckConstraint(
            "(status IN ('waiting', 'left')) = (admitted_at IS NULL)"
            " AND (admitted_at IS NULL) = (pass_expires_at IS NULL)"
            " AND (status = 'used') = (used_at IS NOT NULL)"
            " AND (status = 'used') = (reservation_id IS NOT NULL)"
            " AND (status = 'waiting' OR rank IS NOT NULL OR status = 'left')",
            name=op.f("ck_queue_entries_status_matches"),
        ),
        sa.UniqueConstraint(
            "event_id", "customer_key", name=op.f("uq_queue_entries_event_id_customer_key")
        ),
    )
    # The admitter takes the waiting places in queue order; positions count the ones ahead.
    op.create_index(
        "ix_queue_entries_waiting_in_order",
        "queue_entries",
        ["event_id", "lane", "rank"],
        postgresql_where=sa.text("status = 'waiting'"),
    )
    # Buyers shopping now, for the cap on shoppers.
    op.create_index(
        "ix_queue_entries_passes",
        "queue_entries",
        ["event_id", "pass_expires_at"],
        postgresql_where=sa.text("status IN ('admitted', 'used')"),
    )
    op.create_table(
        "queue_state",
        sa.Column(
            "event_id",
            UUID(as_uuid=True),
            sa.ForeignKey("events.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("admitted_total", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("credit", sa.Float(), server_default="0", nullable=False),
        sa.Column(
            "ticked_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("drawn_at", sa.DateTime(timezone=True)),
        sa.Column("first_admitted_at", sa.DateTime(timezone=True)),
        sa.Column("last_admitted_at", sa.DateTime(timezone=True)),
        sa.Column("through_lane", sa.SmallInteger()),
        sa.Column("through_rank", sa.BigInteger()),
        sa.Column("drawn_total", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("numbered_total", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("admitted_early", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("admitted_arrivals", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint(
            "admitted_total >= 0", name=op.f("ck_queue_state_admitted_not_negative")
        ),
    )


def downgrade() -> None:
    op.drop_table("queue_state")
    op.drop_index("ix_queue_entries_passes", table_name="queue_entries")
    op.drop_index("ix_queue_entries_waiting_in_order", table_name="queue_entries")
    op.drop_table("queue_entries")
    op.execute("DROP SEQUENCE queue_arrivals")
    op.drop_constraint(op.f("ck_events_queue_settings_positive"), "events", type_="check")
    op.drop_constraint(op.f("ck_events_queue_admits_somehow"), "events", type_="check")
    for column in (
        "queue_pass_seconds",
        "queue_max_shoppers",
        "queue_admit_per_minute",
        "queue_enabled",
    ):
        op.drop_column("events", column)
