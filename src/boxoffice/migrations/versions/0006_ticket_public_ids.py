"""Every ticket gets a stable public UUID besides its internal id.

The original demo identified tickets by UUID and its clients (its own `run_concurrent.py`
among them) hard-code one; they must keep working (README, "The original demo's clients").
Existing tickets get a random one; the demo's own tickets get the demo's UUIDs from the seed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 08:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "tickets",
        sa.Column(
            "public_id",
            postgresql.UUID(as_uuid=True),
            server_default=sa.text("gen_random_uuid()"),
            nullable=False,
        ),
    )
    op.create_unique_constraint(op.f("uq_tickets_public_id"), "tickets", ["public_id"])


def downgrade() -> None:
    op.drop_constraint(op.f("uq_tickets_public_id"), "tickets", type_="unique")
    op.drop_column("tickets", "public_id")
