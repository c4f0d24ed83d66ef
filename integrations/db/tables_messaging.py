"""Table models for durable messaging, SMS and webhooks (issue 3).

Registered on the shared metadata by importing integrations.db.tables (Alembic sees them).

- ``message_deliveries``: one row per message and recipient: the chat channel (``recipient`` =
  ``channel``) and each external SMS participant (``sms:<external participant id>``), with the state
  ``queued → sent → delivered`` or ``failed`` and a reason code.
- ``idempotency_keys``: the first response to an ``Idempotency-Key``, unique per (user, key).
- ``webhook_events``: raw signed webhook bodies, stored before they are processed; the unique
  ``dedupe_key`` absorbs the provider's retries.
- ``sms_opt_outs``: numbers that texted STOP and have not texted START since.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel


def _now(*, nullable: bool = False) -> Any:
    return Field(
        sa_column=Column(
            DateTime(timezone=True), nullable=nullable, server_default=None if nullable else func.now()
        )
    )


class MessageDeliveryRow(SQLModel, table=True):
    __tablename__ = "message_deliveries"

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(
        sa_column=Column(Integer, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    # "channel" for the group-channel post, "sms:<external participant id>" for a text message.
    recipient: str = Field(sa_column=Column(String(40), nullable=False))
    external_participant_id: int | None = Field(
        sa_column=Column(
            Integer, ForeignKey("external_participants.id", ondelete="CASCADE"), nullable=True, index=True
        )
    )
    state: str = Field(sa_column=Column(String(16), nullable=False, server_default=text("'queued'")))
    reason: str | None = Field(sa_column=Column(String(64), nullable=True))
    # For SMS: what the policy let the text carry ("full_text" or "notification").
    content: str | None = Field(sa_column=Column(String(16), nullable=True))
    provider_message_id: str | None = Field(sa_column=Column(String(100), nullable=True))
    # The chat provider's created_at (ms) of the posted message: read receipts compare against it.
    provider_ts_ms: int | None = Field(sa_column=Column(BigInteger, nullable=True))
    created_at: datetime = _now()
    updated_at: datetime = _now()

    __table_args__ = (
        UniqueConstraint("message_id", "recipient", name="uq_message_deliveries_message_recipient"),
        CheckConstraint("state IN ('queued','sent','delivered','failed')", name="state"),
        CheckConstraint("content IS NULL OR content IN ('full_text','notification')", name="content"),
    )


class IdempotencyKeyRow(SQLModel, table=True):
    __tablename__ = "idempotency_keys"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column=Column(Integer, ForeignKey("users.id"), nullable=False))
    key: str = Field(sa_column=Column(String(255), nullable=False))
    operation: str = Field(sa_column=Column(String(64), nullable=False))
    request_hash: str = Field(sa_column=Column(String(64), nullable=False))
    state: str = Field(sa_column=Column(String(16), nullable=False, server_default=text("'in_progress'")))
    # Set in the action's own transaction, so a request that died after committing is recognised.
    resource_id: int | None = Field(sa_column=Column(Integer, nullable=True))
    response_status: int | None = Field(sa_column=Column(SmallInteger, nullable=True))
    response_body: Any = Field(default=None, sa_column=Column(JSONB, nullable=True))
    created_at: datetime = _now()
    # Held while in progress: the request renews it; a key whose request died is free once it lapses.
    lease_until: datetime = _now()
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))

    __table_args__ = (
        UniqueConstraint("user_id", "key", name="uq_idempotency_keys_user_key"),
        CheckConstraint("state IN ('in_progress','completed')", name="state"),
        Index("ix_idempotency_keys_expires_at", "expires_at"),
    )


class WebhookEventRow(SQLModel, table=True):
    __tablename__ = "webhook_events"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    source: str = Field(sa_column=Column(String(16), nullable=False))
    # category + message id (Sendbird), or the provider's message id (SMS): retries collide here.
    dedupe_key: str = Field(sa_column=Column(String(200), nullable=False, unique=True))
    category: str = Field(sa_column=Column(String(64), nullable=False))
    # The exact bytes received (they may hold message text: never logged).
    body: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False, server_default=text("'pending'")))
    attempts: int = Field(sa_column=Column(Integer, nullable=False, server_default=text("0")))
    lease_until: datetime | None = _now(nullable=True)
    last_error: str | None = Field(sa_column=Column(String(200), nullable=True))
    received_at: datetime = _now()
    processed_at: datetime | None = _now(nullable=True)

    __table_args__ = (
        CheckConstraint("source IN ('sendbird','sms')", name="source"),
        CheckConstraint("status IN ('pending','processed','ignored','failed')", name="status"),
        Index("ix_webhook_events_pending", "id", postgresql_where=text("status = 'pending'")),
    )


class SmsOptOutRow(SQLModel, table=True):
    __tablename__ = "sms_opt_outs"

    phone_number: str = Field(sa_column=Column(String(20), primary_key=True))
    opted_out_at: datetime = _now()
    provider_message_id: str | None = Field(sa_column=Column(String(100), nullable=True))
