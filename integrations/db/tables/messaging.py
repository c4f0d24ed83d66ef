"""Table models of conversations and messaging: conversations, their members and external
participants, messages, the outbox, per-recipient deliveries, Idempotency-Keys, webhook events and
SMS opt-outs.

- ``message_deliveries``: one row per message and recipient: the chat channel (``recipient`` =
  ``channel``) and each external SMS participant (``sms:<external participant id>``), with the state
  ``queued → sent → delivered`` or ``failed`` and a reason code.
- ``idempotency_keys``: what an ``Idempotency-Key``'s first request created and the status it
  answered, unique per (user, key); never the answer's body.
- ``webhook_events``: raw signed webhook bodies, stored before they are processed; the unique
  ``dedupe_key`` absorbs the provider's retries.
- ``sms_opt_outs``: numbers that texted STOP and have not texted START since.
- ``conversation_reads``: per conversation and member, the last message they have read and when,
  from the API (``POST /api/conversations/:id/read``) or the chat provider's ``message_read``
  event; it only ever moves forward.
- ``conversation_on_call``: a conversation that includes a care team's on-call role instead of a
  person, and who holds it in the channel now (``holder_id``, null while nobody is on call); the
  hand-off scheduler moves it when a shift begins or ends.

Longer than 400 lines because it is the capability's whole schema, a class per table with the reason
for each index and constraint beside it; a module per table would scatter what reads as one.
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
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.sql.elements import conv
from sqlmodel import Field, SQLModel

from engine.effects import PostSmsReply, kind_of
from integrations.db.columns import foreign_key, timestamp


class ConversationRow(SQLModel, table=True):
    __tablename__ = "conversations"

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = foreign_key("patients.id")
    title: str = Field(sa_column=Column(String(200), nullable=False))
    channel_url: str = Field(sa_column=Column(String(100), nullable=False, unique=True))
    # pending until the relay has created the chat channel; messages wait for "ready".
    channel_state: str = Field(sa_column=Column(String(16), nullable=False, server_default=text("'pending'")))
    organization_id: int = foreign_key("organizations.id", index=False)
    created_by: int = foreign_key("users.id", index=False)
    created_at: datetime = timestamp()

    __table_args__ = (CheckConstraint("channel_state IN ('pending','ready','failed')", name="channel_state"),)


class ConversationMemberRow(SQLModel, table=True):
    __tablename__ = "conversation_members"

    conversation_id: int = Field(
        sa_column=Column(Integer, ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True)
    )
    user_id: int = Field(sa_column=Column(Integer, ForeignKey("users.id"), primary_key=True, index=True))
    added_at: datetime = timestamp()


class ConversationOnCallRow(SQLModel, table=True):
    __tablename__ = "conversation_on_call"

    conversation_id: int = Field(
        sa_column=Column(Integer, ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True)
    )
    care_team_id: int = Field(
        sa_column=Column(Integer, ForeignKey("care_teams.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    holder_id: int | None = foreign_key("users.id", nullable=True, index=False)
    holder_since: datetime = timestamp()
    added_by: int = foreign_key("users.id", index=False)
    added_at: datetime = timestamp()


class ExternalParticipantRow(SQLModel, table=True):
    __tablename__ = "external_participants"

    id: int | None = Field(default=None, primary_key=True)
    # No index of its own: uq_external_participants_conversation_id_phone_number leads with it (0030).
    conversation_id: int = foreign_key("conversations.id", ondelete="CASCADE", index=False)
    phone_number: str = Field(sa_column=Column(String(20), nullable=False))
    display_name: str = Field(sa_column=Column(String(200), nullable=False))
    organization_id: int | None = foreign_key("organizations.id", nullable=True, index=False)
    chat_user_id: str = Field(sa_column=Column(String(80), nullable=False, unique=True))
    consent_id: int = foreign_key("consents.id", index=False)
    added_at: datetime = timestamp()
    # Set when the consent that let this participant in is revoked: SMS must stop.
    removed_at: datetime | None = timestamp(nullable=True, default_now=False)
    # Which of the number's conversations a reply means ("#2 ..."): 1, 2, 3... per phone number, in
    # order of admission, never reused, so a code in an old text never points at another conversation.
    reply_code: int = Field(sa_column=Column(Integer, nullable=False))

    __table_args__ = (
        UniqueConstraint(
            "conversation_id",
            "phone_number",
            name=conv("uq_external_participants_conversation_id_phone_number"),
        ),
        UniqueConstraint(
            "phone_number", "reply_code", name=conv("uq_external_participants_phone_number_reply_code")
        ),
    )


class MessageRow(SQLModel, table=True):
    __tablename__ = "messages"

    id: int | None = Field(default=None, primary_key=True)
    # No index of its own: ix_messages_conversation_id_id leads with it (migration 0030).
    conversation_id: int = foreign_key("conversations.id", index=False)
    sender_id: int = foreign_key("users.id", index=False)
    body: str = Field(sa_column=Column(Text, nullable=False))
    state: str = Field(sa_column=Column(String(16), nullable=False, server_default=text("'queued'")))
    chat_message_id: int | None = Field(sa_column=Column(BigInteger, nullable=True))
    created_at: datetime = timestamp()
    # routine or urgent (migration 0019); an urgent one is escalated until acknowledged.
    priority: str = Field(sa_column=Column(String(8), nullable=False, server_default=text("'routine'")))
    # Who acknowledged an urgent message first, and when (later acknowledgements change nothing).
    acknowledged_by: int | None = foreign_key("users.id", nullable=True, index=False)
    acknowledged_at: datetime | None = timestamp(nullable=True, default_now=False)
    # When the escalation scheduler next looks at it: set while urgent and unacknowledged, else null.
    escalation_due_at: datetime | None = timestamp(nullable=True, default_now=False)

    # Recall (migration 0024): the text then lives in message_recalls only, and body is empty.
    recalled_at: datetime | None = timestamp(nullable=True, default_now=False)
    recalled_by: int | None = foreign_key("users.id", nullable=True, index=False)
    # Correction: the new message names the one it replaces, and that one names its correction.
    corrects_message_id: int | None = foreign_key("messages.id", nullable=True, index=False)
    corrected_by_message_id: int | None = foreign_key("messages.id", nullable=True, index=False)
    # Retention (migration 0025): the content outlived its lifespan; body is then empty.
    content_deleted_at: datetime | None = timestamp(nullable=True, default_now=False)

    __table_args__ = (
        CheckConstraint("state IN ('queued','sent','delivered','failed')", name="state"),
        # The retention sweep reads only the messages that still have content, oldest first.
        Index(
            "ix_messages_created_at_content_kept",
            "created_at",
            postgresql_where=text("content_deleted_at IS NULL"),
        ),
        CheckConstraint("(recalled_at IS NULL) = (recalled_by IS NULL)", name="recalled"),
        # Unread counts: the messages of a conversation after a member's read mark (migration 0021).
        Index("ix_messages_conversation_id_id", "conversation_id", "id"),
        CheckConstraint("priority IN ('routine','urgent')", name="priority"),
        # The scheduler's claim reads only the messages due (escalation_due_at <= now).
        Index(
            "ix_messages_escalation_due_at",
            "escalation_due_at",
            postgresql_where=text("escalation_due_at IS NOT NULL"),
        ),
    )


class EscalationStepRow(SQLModel, table=True):
    """One escalation step taken for an urgent message (engine/escalation.py): unique per message, step
    and round, inserted in the transaction that queues its outbox entry, so a step runs once however
    many schedulers run."""

    __tablename__ = "escalation_steps"

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(
        sa_column=Column(Integer, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False)
    )
    step: str = Field(sa_column=Column(String(16), nullable=False))
    round: int = Field(sa_column=Column(Integer, nullable=False))
    due_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    taken_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    # The staff it alerts (user ids; the delegate of someone away, the on-call member, the admins).
    target_user_ids: list[int] = Field(sa_column=Column(ARRAY(Integer), nullable=False))
    # queued -> done | cancelled (acknowledged before it went out) | failed; none: nobody to alert.
    state: str = Field(sa_column=Column(String(16), nullable=False, server_default=text("'queued'")))
    reason: str | None = Field(sa_column=Column(String(64), nullable=True))
    done_at: datetime | None = timestamp(nullable=True, default_now=False)

    __table_args__ = (
        UniqueConstraint(
            "message_id", "step", "round", name=conv("uq_escalation_steps_message_id_step_round")
        ),
        CheckConstraint("step IN ('realert','text','on_call','admin')", name="step"),
        CheckConstraint("state IN ('queued','done','cancelled','failed','none')", name="state"),
    )


class MessageRecallRow(SQLModel, table=True):
    """The legal record of a recalled message: its text, who recalled it, when and why. Read only by
    the ``message.read_recalled`` workflow (compliance officers), each read audited."""

    __tablename__ = "message_recalls"

    message_id: int = Field(sa_column=Column(Integer, ForeignKey("messages.id"), primary_key=True))
    recalled_at: datetime = timestamp(default_now=False)
    recalled_by: int = foreign_key("users.id", index=False)
    reason: str = Field(sa_column=Column(String(500), nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))


class OutboxRow(SQLModel, table=True):
    """Side effects on the chat provider, written in the same transaction as the action that causes them.

    The relay claims due rows with ``FOR UPDATE SKIP LOCKED`` and a lease, so several instances can
    run it at once and a killed relay's rows are picked up again when the lease runs out. Rows are
    never deleted; it is analyzed after every 1,000 changes, whatever its size (migration 0029).
    """

    __tablename__ = "outbox"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(sa_column=Column(String(40), nullable=False))
    payload: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    message_id: int | None = foreign_key("messages.id", nullable=True)
    conversation_id: int | None = foreign_key("conversations.id", nullable=True)
    status: str = Field(sa_column=Column(String(16), nullable=False, server_default=text("'pending'")))
    attempts: int = Field(sa_column=Column(Integer, nullable=False, server_default=text("0")))
    next_attempt_at: datetime = timestamp()
    lease_until: datetime | None = timestamp(nullable=True, default_now=False)
    last_error: str | None = Field(sa_column=Column(String(200), nullable=True))
    created_at: datetime = timestamp()
    done_at: datetime | None = timestamp(nullable=True, default_now=False)

    __table_args__ = (
        # cancelled: an entry of a recalled message that had not gone out yet (migration 0024).
        CheckConstraint("status IN ('pending','done','failed','cancelled')", name="status"),
        Index("ix_outbox_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
        # The first pending entry of each kind and conversation, which keeps a conversation's posts
        # and its texts in order: the claim skips from one (kind, conversation) to the next through
        # it (CLAIM_HEADS in integrations/relay/statements.py; migration 0014), and reads the
        # entries queued behind a head it leased (CLAIM_LATER).
        Index(
            "ix_outbox_pending_in_order",
            "kind",
            "conversation_id",
            "id",
            postgresql_where=text("status = 'pending'"),
        ),
        # The claim takes pending rows in id order (migration 0008).
        Index("ix_outbox_pending", "id", postgresql_where=text("status = 'pending'")),
        # SMS replies whose text retention has yet to delete, oldest first (migration 0028).
        Index(
            "ix_outbox_sms_reply_text",
            "created_at",
            postgresql_where=text(f"kind = '{kind_of(PostSmsReply)}' AND (payload -> 'text') IS NOT NULL"),
        ),
    )


def _now(*, nullable: bool = False) -> Any:
    return Field(
        sa_column=Column(
            DateTime(timezone=True), nullable=nullable, server_default=None if nullable else func.now()
        )
    )


class MessageDeliveryRow(SQLModel, table=True):
    __tablename__ = "message_deliveries"

    id: int | None = Field(default=None, primary_key=True)
    # No index of its own: uq_message_deliveries_message_recipient leads with it (migration 0030).
    message_id: int = Field(
        sa_column=Column(Integer, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False)
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
    # The first answer's status; of its body nothing is kept (a replay reads resource_id again).
    response_status: int | None = Field(sa_column=Column(SmallInteger, nullable=True))
    created_at: datetime = _now()
    # Held while in progress: the request renews it; a key whose request died is free once it lapses.
    lease_until: datetime = _now()
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))

    __table_args__ = (
        UniqueConstraint("user_id", "key", name="uq_idempotency_keys_user_key"),
        CheckConstraint("state IN ('in_progress','completed')", name="state"),
        # Every operation that takes a key creates something: a completed key is answered from it.
        CheckConstraint("state = 'in_progress' OR resource_id IS NOT NULL", name="completed_names_resource"),
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


class ConversationReadRow(SQLModel, table=True):
    __tablename__ = "conversation_reads"

    conversation_id: int = Field(
        sa_column=Column(Integer, ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True)
    )
    user_id: int = Field(sa_column=Column(Integer, ForeignKey("users.id"), primary_key=True, index=True))
    last_read_message_id: int = foreign_key("messages.id", index=False)
    read_at: datetime = timestamp()
    # Where the read came from: "api" (a caremsg client) or "chat" (a Sendbird client's receipt).
    source: str = Field(sa_column=Column(String(8), nullable=False))

    __table_args__ = (CheckConstraint("source IN ('api','chat')", name="source"),)


class LegalHoldRow(SQLModel, table=True):
    """A legal hold on a patient's or one conversation's messages (exactly one of the two): while
    ``lifted_at`` is null the retention sweep leaves their content alone."""

    __tablename__ = "legal_holds"

    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = foreign_key("organizations.id", index=False)
    patient_id: int | None = foreign_key("patients.id", nullable=True, index=False)
    conversation_id: int | None = foreign_key("conversations.id", nullable=True, index=False)
    reason: str = Field(sa_column=Column(String(500), nullable=False))
    placed_by: int = foreign_key("users.id", index=False)
    placed_at: datetime = timestamp(default_now=False)
    lifted_by: int | None = foreign_key("users.id", nullable=True, index=False)
    lifted_at: datetime | None = timestamp(nullable=True, default_now=False)
    lift_reason: str | None = Field(sa_column=Column(String(500), nullable=True))

    __table_args__ = (
        CheckConstraint("(patient_id IS NULL) <> (conversation_id IS NULL)", name="subject"),
        CheckConstraint("(lifted_at IS NULL) = (lifted_by IS NULL)", name="lifted"),
        Index("ix_legal_holds_patient_id", "patient_id", postgresql_where=text("lifted_at IS NULL")),
        Index(
            "ix_legal_holds_conversation_id", "conversation_id", postgresql_where=text("lifted_at IS NULL")
        ),
    )
