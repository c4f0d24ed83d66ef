"""idempotency keys, per-recipient delivery, SMS and webhooks (issue 3)

Revision ID: 0005
Revises: 0004

Four new tables, nothing existing is changed:

- message_deliveries: one row per message and recipient (the chat channel, each SMS participant);
- idempotency_keys: the first response to an Idempotency-Key, unique per (user, key);
- webhook_events: raw signed webhook bodies, deduplicated by dedupe_key before processing;
- sms_opt_outs: numbers that texted STOP.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, *, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    default = None if nullable else sa.text("now()")
    return sa.Column(name, sa.DateTime(timezone=True), server_default=default, nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "message_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("recipient", sa.String(length=40), nullable=False),
        sa.Column("external_participant_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), server_default=sa.text("'queued'"), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("content", sa.String(length=16), nullable=True),
        sa.Column("provider_message_id", sa.String(length=100), nullable=True),
        sa.Column("provider_ts_ms", sa.BigInteger(), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.CheckConstraint(
            "content IS NULL OR content IN ('full_text','notification')",
            name=op.f("ck_message_deliveries_content"),
        ),
        sa.CheckConstraint(
            "state IN ('queued','sent','delivered','failed')", name=op.f("ck_message_deliveries_state")
        ),
        sa.ForeignKeyConstraint(
            ["external_participant_id"],
            ["external_participants.id"],
            name=op.f("fk_message_deliveries_external_participant_id_external_participants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_deliveries_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_deliveries")),
        sa.UniqueConstraint("message_id", "recipient", name="uq_message_deliveries_message_recipient"),
    )
    op.create_index(
        op.f("ix_message_deliveries_external_participant_id"), "message_deliveries", ["external_participant_id"]
    )
    op.create_index(op.f("ix_message_deliveries_message_id"), "message_deliveries", ["message_id"])

    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), server_default=sa.text("'in_progress'"), nullable=False),
        sa.Column("resource_id", sa.Integer(), nullable=True),
        sa.Column("response_status", sa.SmallInteger(), nullable=True),
        sa.Column("response_body", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        _ts("created_at"),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('in_progress','completed')", name=op.f("ck_idempotency_keys_state")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_idempotency_keys_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint("user_id", "key", name="uq_idempotency_keys_user_key"),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])

    op.create_table(
        "webhook_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _ts("lease_until", nullable=True),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        _ts("received_at"),
        _ts("processed_at", nullable=True),
        sa.CheckConstraint("source IN ('sendbird','sms')", name=op.f("ck_webhook_events_source")),
        sa.CheckConstraint(
            "status IN ('pending','processed','ignored','failed')", name=op.f("ck_webhook_events_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_webhook_events_dedupe_key")),
    )
    op.create_index(
        "ix_webhook_events_pending", "webhook_events", ["id"], postgresql_where=sa.text("status = 'pending'")
    )

    op.create_table(
        "sms_opt_outs",
        sa.Column("phone_number", sa.String(length=20), nullable=False),
        _ts("opted_out_at"),
        sa.Column("provider_message_id", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("phone_number", name=op.f("pk_sms_opt_outs")),
    )


def downgrade() -> None:
    op.drop_table("sms_opt_outs")
    op.drop_index("ix_webhook_events_pending", table_name="webhook_events")
    op.drop_table("webhook_events")
    op.drop_index("ix_idempotency_keys_expires_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_index(op.f("ix_message_deliveries_message_id"), table_name="message_deliveries")
    op.drop_index(op.f("ix_message_deliveries_external_participant_id"), table_name="message_deliveries")
    op.drop_table("message_deliveries")
