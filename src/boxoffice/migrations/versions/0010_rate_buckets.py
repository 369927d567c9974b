"""Per-client rate limits: one token bucket per (scope, client address), `rate_buckets`.

Every worker and every host of one database shares the buckets, with no other server
(boxoffice.ratelimit has the one statement that refills a bucket and takes a token).

UNLOGGED: rate state need not survive a crash (PostgreSQL empties an unlogged table when it
recovers from one, which only gives every client a full bucket again), and in exchange the
row update a limited request makes writes no WAL, and its commit waits for no WAL flush.
Unlogged tables are not replicated either: a standby has the table, empty, and a failover
starts with full buckets.

No index but the primary key: every check updates `tokens` and `refreshed_at`, and with no
index on them those updates stay HOT (no index entries to add). The sweeper's scan for idle
buckets reads the whole table, which holds only the clients of the last few minutes.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 22:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("char_length(key) <= 300", name=op.f("ck_rate_buckets_key_length")),
        sa.CheckConstraint("tokens >= 0", name=op.f("ck_rate_buckets_tokens_not_negative")),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_buckets")),
        prefixes=["UNLOGGED"],
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
