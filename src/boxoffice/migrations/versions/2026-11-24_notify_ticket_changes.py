"""Every change of a ticket's state is announced with NOTIFY, in its own transaction.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 18:45:00

A statement-level trigger sees every row an UPDATE changed (transition tables) and sends one
notification per event and 200 tickets on channel `ticket_changes`:
`{"event_id": "<uuid>", "tickets": [[<id>, "<status>"], ...]}`. NOTIFY is transactional:
listeners hear of a change when, and only if, it commits. Being a trigger, it covers every way
a ticket changes (hold, confirm, release, sweeper, the demo's PATCH, a hand-written UPDATE).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A re-hold of a lapsed seat keeps status 'reserved' but changes reservation_id: listeners
    # that showed the lapsed seat as free must hear of it too. NOTIFY payloads are limited to
    # 8000 bytes: 200 tickets of `[id, "available"]` stay well below.
    op.execute(
        """
        CREATE FUNCTION notify_ticket_changes() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('ticket_changes', batch.payload)
            FROM (
                SELECT json_build_object(
                           'event_id', changed.event_id,
                           'tickets', json_agg(json_build_array(changed.id, changed.status)
                                               ORDER BY changed.id)
                       )::text AS payload
                FROM (
                    SELECT n.event_id, n.id, n.status::text AS status,
                           (row_number() OVER (PARTITION BY n.event_id ORDER BY n.id) - 1) / 200
                               AS chunk
                    FROM new_rows n JOIN old_rows o ON o.id = n.id
                    WHERE (n.status, n.reservation_id, n.booking_id)
                          IS DISTINCT FROM (o.status, o.reservation_id, o.booking_id)
                ) changed
                GROUP BY changed.event_id, changed.chunk
            ) batch;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER tickets_notify_changes
        AFTER UPDATE ON tickets
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION notify_ticket_changes()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER tickets_notify_changes ON tickets")
    op.execute("DROP FUNCTION notify_ticket_changes()")
