"""Initial schema: events, tickets, reservations, bookings and the ticket audit trail.

Demo data is not here: `boxoffice seed` adds it.

Revision ID: 0001
Revises:
Create Date: 2026-11-24 14:11:39.115315
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("venue", sa.Text(), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hold_seconds", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("ticket_count", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_events_currency_iso")),
        sa.CheckConstraint(
            "kind IN ('seated', 'general_admission')", name=op.f("ck_events_kind_known")
        ),
        sa.CheckConstraint(
            "char_length(name) BETWEEN 1 AND 200", name=op.f("ck_events_name_length")
        ),
        sa.CheckConstraint(
            "hold_seconds BETWEEN 1 AND 86400", name=op.f("ck_events_hold_seconds_range")
        ),
        sa.CheckConstraint("ticket_count >= 0", name=op.f("ck_events_ticket_count_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_table(
        "reservations",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("customer", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("active", "confirmed", "released", "expired", name="reservation_status"),
            server_default="active",
            nullable=False,
        ),
        sa.Column("ticket_count", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(status = 'active') = (ended_at IS NULL)",
            name=op.f("ck_reservations_ended_unless_active"),
        ),
        sa.CheckConstraint(
            "char_length(customer) BETWEEN 1 AND 200", name=op.f("ck_reservations_customer_length")
        ),
        sa.CheckConstraint(
            "expires_at > created_at", name=op.f("ck_reservations_expires_after_created")
        ),
        sa.CheckConstraint(
            "octet_length(token_hash) = 32", name=op.f("ck_reservations_token_hash_sha256")
        ),
        sa.CheckConstraint("ticket_count > 0", name=op.f("ck_reservations_ticket_count_positive")),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["events.id"],
            name=op.f("fk_reservations_event_id_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reservations")),
        sa.UniqueConstraint("id", "event_id", name=op.f("uq_reservations_id_event_id")),
    )
    op.create_index(
        "ix_reservations_active_expires_at",
        "reservations",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "bookings",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("reservation_id", sa.UUID(), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("customer", sa.Text(), nullable=False),
        sa.Column("payment_reference", sa.Text(), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "char_length(payment_reference) BETWEEN 1 AND 200",
            name=op.f("ck_bookings_payment_reference_length"),
        ),
        sa.CheckConstraint("total_minor >= 0", name=op.f("ck_bookings_total_not_negative")),
        sa.ForeignKeyConstraint(
            ["reservation_id", "event_id"],
            ["reservations.id", "reservations.event_id"],
            name=op.f("fk_bookings_reservation_id_event_id_reservations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bookings")),
        sa.UniqueConstraint("id", "event_id", name=op.f("uq_bookings_id_event_id")),
        sa.UniqueConstraint("reservation_id", name=op.f("uq_bookings_reservation_id")),
    )
    op.create_table(
        "tickets",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("section", sa.Text(), nullable=True),
        sa.Column("row_label", sa.Text(), nullable=True),
        sa.Column("seat", sa.Integer(), nullable=True),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("price_minor", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("available", "reserved", "booked", name="ticket_status"),
            server_default="available",
            nullable=False,
        ),
        sa.Column("reservation_id", sa.UUID(), nullable=True),
        sa.Column("hold_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("booking_id", sa.UUID(), nullable=True),
        sa.CheckConstraint(
            "(status = 'available' AND reservation_id IS NULL AND hold_expires_at IS NULL  AND booking_id IS NULL) OR (status = 'reserved' AND reservation_id IS NOT NULL  AND hold_expires_at IS NOT NULL AND booking_id IS NULL) OR (status = 'booked' AND reservation_id IS NOT NULL AND booking_id IS NOT NULL  AND hold_expires_at IS NULL)",
            name=op.f("ck_tickets_status_matches_claim"),
        ),
        sa.CheckConstraint("position >= 0", name=op.f("ck_tickets_position_not_negative")),
        sa.CheckConstraint("price_minor >= 0", name=op.f("ck_tickets_price_not_negative")),
        sa.ForeignKeyConstraint(
            ["booking_id", "event_id"],
            ["bookings.id", "bookings.event_id"],
            name=op.f("fk_tickets_booking_id_event_id_bookings"),
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_tickets_event_id_events"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["reservation_id", "event_id"],
            ["reservations.id", "reservations.event_id"],
            name=op.f("fk_tickets_reservation_id_event_id_reservations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tickets")),
        sa.UniqueConstraint("event_id", "position", name=op.f("uq_tickets_event_id_position")),
        sa.UniqueConstraint(
            "event_id",
            "section",
            "row_label",
            "seat",
            name=op.f("uq_tickets_event_id_section_row_label_seat"),
        ),
        sa.UniqueConstraint("id", "event_id", name=op.f("uq_tickets_id_event_id")),
    )
    op.create_index(
        "ix_tickets_available_by_position",
        "tickets",
        ["event_id", "position"],
        unique=False,
        postgresql_where=sa.text("status = 'available'"),
    )
    op.create_index(
        "ix_tickets_hold_expires_at",
        "tickets",
        ["hold_expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'reserved'"),
    )
    op.create_index("ix_tickets_reservation_id", "tickets", ["reservation_id"], unique=False)
    op.create_table(
        "reservation_tickets",
        sa.Column("reservation_id", sa.UUID(), nullable=False),
        sa.Column("ticket_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.ForeignKeyConstraint(
            ["reservation_id", "event_id"],
            ["reservations.id", "reservations.event_id"],
            name=op.f("fk_reservation_tickets_reservation_id_event_id_reservations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id", "event_id"],
            ["tickets.id", "tickets.event_id"],
            name=op.f("fk_reservation_tickets_ticket_id_event_id_tickets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("reservation_id", "ticket_id", name=op.f("pk_reservation_tickets")),
    )
    op.create_index(
        "ix_reservation_tickets_ticket_id", "reservation_tickets", ["ticket_id"], unique=False
    )
    op.create_table(
        "ticket_audit",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("ticket_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column(
            "from_status",
            sa.Enum("available", "reserved", "booked", name="ticket_status"),
            nullable=False,
        ),
        sa.Column(
            "to_status",
            sa.Enum("available", "reserved", "booked", name="ticket_status"),
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("reservation_id", sa.UUID(), nullable=True),
        sa.Column("booking_id", sa.UUID(), nullable=True),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint(
            "reason IN ('reserved', 'confirmed', 'released', 'expired')",
            name=op.f("ck_ticket_audit_reason_known"),
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
            name=op.f("fk_ticket_audit_ticket_id_tickets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ticket_audit")),
    )
    op.create_index("ix_ticket_audit_ticket_id", "ticket_audit", ["ticket_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ticket_audit_ticket_id", table_name="ticket_audit")
    op.drop_table("ticket_audit")
    op.drop_index("ix_reservation_tickets_ticket_id", table_name="reservation_tickets")
    op.drop_table("reservation_tickets")
    op.drop_index("ix_tickets_reservation_id", table_name="tickets")
    op.drop_index(
        "ix_tickets_hold_expires_at",
        table_name="tickets",
        postgresql_where=sa.text("status = 'reserved'"),
    )
    op.drop_index(
        "ix_tickets_available_by_position",
        table_name="tickets",
        postgresql_where=sa.text("status = 'available'"),
    )
    op.drop_table("tickets")
    op.drop_table("bookings")
    op.drop_index(
        "ix_reservations_active_expires_at",
        table_name="reservations",
        postgresql_where=sa.text("status = 'active'"),
    )
    op.drop_table("reservations")
    op.drop_table("events")
    sa.Enum(name="ticket_status").drop(op.get_bind())
    sa.Enum(name="reservation_status").drop(op.get_bind())
