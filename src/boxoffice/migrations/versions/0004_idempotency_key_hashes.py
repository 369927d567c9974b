"""Idempotency keys are stored as their SHA-256 only: the key is the client's secret.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 18:20:00

Stored answers made before this revision keep their tokens until they expire (24 hours) and
the sweeper deletes them; answers stored from now on carry none.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint(op.f("ck_idempotency_keys_key_length"), "idempotency_keys", type_="check")
    op.alter_column("idempotency_keys", "key", new_column_name="key_hash")
    # Keys already stored keep working: a retry finds them under their hash.
    op.execute(
        "UPDATE idempotency_keys SET key_hash = encode(sha256(convert_to(key_hash, 'UTF8')), 'hex')"
    )
    op.create_check_constraint(
        op.f("ck_idempotency_keys_key_hash_is_sha256"),
        "idempotency_keys",
        "key_hash ~ '^[0-9a-f]{64}$'",
    )


def downgrade() -> None:
    # A hash cannot be turned back into its key: the stored answers cannot be replayed.
    op.execute("DELETE FROM idempotency_keys")
    op.drop_constraint(
        op.f("ck_idempotency_keys_key_hash_is_sha256"), "idempotency_keys", type_="check"
    )
    op.alter_column("idempotency_keys", "key_hash", new_column_name="key")
    op.create_check_constraint(
        op.f("ck_idempotency_keys_key_length"),
        "idempotency_keys",
        "char_length(key) BETWEEN 1 AND 200",
    )
