"""Selling fairly, part one: a sales window per event and a per-customer cap.

`sales_start_at` and `sales_end_at` bound when an event is on sale (NULL: from creation, and
until `starts_at`). The original demo's two events are dated in the past and still sold to its
clients (DESIGN.md's compatibility contract): the seed gives them an explicit end of
'infinity', which the API never accepts.

`max_tickets_per_customer` caps one customer's active holds and bookings together. Customers
are compared by `customer_key`, the customer trimmed and lower-cased, kept by the database
itself. Racing holds of one customer are serialised by `lock_customer_and_count`: it takes a
transaction-level advisory lock on (event, customer) and only then counts, and being VOLATILE
its count reads a fresh snapshot, so it sees the hold the previous racer committed. The lock
lasts until the hold's transaction ends: two holds can never pass the cap together.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("events", sa.Column("sales_start_at", sa.DateTime(timezone=True)))
    op.add_column("events", sa.Column("sales_end_at", sa.DateTime(timezone=True)))
    op.add_column("events", sa.Column("max_tickets_per_customer", sa.Integer()))
    op.create_check_constraint(
        op.f("ck_events_sales_window_ordered"),
        "events",
        "sales_start_at IS NULL OR sales_start_at < coalesce(sales_end_at, starts_at)",
    )
    # The original demo's events, if this database has them, keep selling to its clients.
    op.execute(
        "UPDATE events SET sales_end_at = 'infinity' WHERE id IN "
        "('061da83a-6229-4c5b-b86f-574a5c1fdbfe', 'f9efbae6-e5d3-490a-acd3-fef980dd7a4c')"
    )
    op.create_check_constraint(
        op.f("ck_events_max_tickets_per_customer_positive"),
        "events",
        "max_tickets_per_customer IS NULL OR max_tickets_per_customer > 0",
    )
    op.add_column(
        "reservations",
        sa.Column(
            "customer_key",
            sa.Text(),
            sa.Computed("lower(btrim(customer))", persisted=True),
            nullable=False,
        ),
    )
    op.create_index(
        "ix_reservations_event_customer_key",
        "reservations",
        ["event_id", "customer_key"],
        postgresql_where=sa.text("status IN ('active', 'confirmed')"),
    )
    op.execute(
        """
        CREATE FUNCTION lock_customer_and_count(of_event uuid, of_customer text)
        RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
            holding bigint;
        BEGIN
            -- One hold of this customer at a time until its transaction ends...
            PERFORM pg_advisory_xact_lock(hashtextextended(of_event::text || '/' || of_customer, 0));
            -- ...then count with a fresh snapshot (every query of a VOLATILE function takes
            -- one): the holds that went before are committed and seen.
            SELECT coalesce(sum(r.ticket_count), 0) INTO holding
            FROM reservations r
            WHERE r.event_id = of_event AND r.customer_key = of_customer
              AND (r.status = 'confirmed' OR (r.status = 'active' AND r.expires_at > now()));
            RETURN holding;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION lock_customer_and_count(uuid, text)")
    op.drop_index("ix_reservations_event_customer_key", table_name="reservations")
    op.drop_column("reservations", "customer_key")
    op.drop_constraint(op.f("ck_events_max_tickets_per_customer_positive"), "events", type_="check")
    op.drop_constraint(op.f("ck_events_sales_window_ordered"), "events", type_="check")
    op.drop_column("events", "max_tickets_per_customer")
    op.drop_column("events", "sales_end_at")
    op.drop_column("events", "sales_start_at")
