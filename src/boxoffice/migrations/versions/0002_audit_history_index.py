"""Index a ticket's audit history in order.

Reading a ticket's last audit row by (ticket_id) alone let the planner walk the whole audit
table backwards on fresh statistics (the benchmark saw 55-97 s for one event's invariant
check); (ticket_id, id) answers it with one index probe per ticket.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 16:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_ticket_audit_ticket_id_id", "ticket_audit", ["ticket_id", "id"])
    op.drop_index("ix_ticket_audit_ticket_id", table_name="ticket_audit")


def downgrade() -> None:
    op.create_index("ix_ticket_audit_ticket_id", "ticket_audit", ["ticket_id"])
    op.drop_index("ix_ticket_audit_ticket_id_id", table_name="ticket_audit")
