"""Index unsold holds by when they ended, and audit rows by hold, for the retention sweep.

The sweeper asks every few seconds for the oldest released or expired holds past the
retention. Without an index that is a scan of every reservation ever kept (a week of on-sale
churn is millions of rows); the partial index holds only unsold ended holds, in the order the
sweep takes them. It costs the release and expiry updates nothing they did not already pay:
they change `status`, which the active-holds index's predicate reads, so they were never HOT.

Each pruned hold's audit rows are then found by its id. Without an index on
`ticket_audit.reservation_id` the planner hashes the whole audit table for every batch (kept
bookings' history included, so a batch costs more every day: 110 ms of a 147 ms batch at
400,000 audit rows); with it, 6 ms of 40 ms. The price is one index entry per audit row.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_reservations_unsold_ended_at",
        "reservations",
        ["ended_at"],
        postgresql_where=sa.text("status IN ('released', 'expired')"),
    )
    op.create_index("ix_ticket_audit_reservation_id", "ticket_audit", ["reservation_id"])


def downgrade() -> None:
    op.drop_index("ix_ticket_audit_reservation_id", table_name="ticket_audit")
    op.drop_index("ix_reservations_unsold_ended_at", table_name="reservations")
