"""Index unsold holds by when they ended, for the history retention sweep.

The sweeper asks every few seconds for the oldest released or expired holds past the
retention. Without an index that is a scan of every reservation ever kept (a week of on-sale
churn is millions of rows); the partial index holds only unsold ended holds, in the order the
sweep takes them. It costs the release and expiry updates nothing they did not already pay:
they change `status`, which the active-holds index's predicate reads, so they were never HOT.

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


def downgrade() -> None:
    op.drop_index("ix_reservations_unsold_ended_at", table_name="reservations")
