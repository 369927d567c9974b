"""The rule "an expired hold is free" written once, in the database, as SQL functions.

A ticket whose hold expired is free at once, whether or not the sweeper has flipped its row.
Every read and every reservation must agree on that, so the rule was a text fragment pasted
into a dozen statements. As functions, each statement says what it means
(`ticket_is_free(t.status, t.hold_expires_at)`) and reads as the SQL that runs. They are
LANGUAGE sql, STABLE (they read `now()`, the only clock for holds) and a single expression, so
the planner inlines them: the plans, and the indexes they use, are the same as with the
expression written out.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 10:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION ticket_is_free(status ticket_status, hold_expires_at timestamptz)
        RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE
        RETURN status = 'available' OR (status = 'reserved' AND hold_expires_at <= now())
        """
    )
    op.execute(
        """
        CREATE FUNCTION ticket_is_held(status ticket_status, hold_expires_at timestamptz)
        RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE
        RETURN status = 'reserved' AND hold_expires_at > now()
        """
    )
    op.execute(
        """
        CREATE FUNCTION ticket_effective_status(status ticket_status,
                                                hold_expires_at timestamptz)
        RETURNS ticket_status LANGUAGE sql STABLE PARALLEL SAFE
        RETURN CASE WHEN status = 'reserved' AND hold_expires_at <= now()
                    THEN 'available'::ticket_status ELSE status END
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION ticket_effective_status(ticket_status, timestamptz)")
    op.execute("DROP FUNCTION ticket_is_held(ticket_status, timestamptz)")
    op.execute("DROP FUNCTION ticket_is_free(ticket_status, timestamptz)")
