"""SQL behind the messaging ports (engine/ports/messaging.py): conversations, messages, the outbox,
per-recipient deliveries, SMS opt-outs, webhook bookkeeping and Idempotency-Key bindings."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import aggregate_order_by

from engine.effects import Effect
from engine.model import (
    Conversation,
    DeliveryState,
    ExternalParticipant,
    Message,
    Page,
)
from engine.ports.messaging import Acknowledged, NewExternalParticipant, ReplyRoute
from integrations.db.base import Repository, page
from integrations.db.columns import table_of
from integrations.db.tables import (
    ConversationMemberRow,
    ConversationOnCallRow,
    ConversationRow,
    ExternalParticipantRow,
    IdempotencyKeyRow,
    MessageDeliveryRow,
    MessageRow,
    OutboxRow,
    SmsOptOutRow,
    WebhookEventRow,
)
from integrations.effects.outbox import outbox_row

conv_members_t = table_of(ConversationMemberRow)
conversations_t = table_of(ConversationRow)
on_call_t = table_of(ConversationOnCallRow)
externals_t = table_of(ExternalParticipantRow)
keys_t = table_of(IdempotencyKeyRow)
deliveries_t = table_of(MessageDeliveryRow)
messages_t = table_of(MessageRow)
outbox_t = table_of(OutboxRow)
opt_outs_t = table_of(SmsOptOutRow)
webhooks_t = table_of(WebhookEventRow)

#: A one-row CTE ``pending`` (its ``status``: an entry still to go out), for the statements that find
#: outbox entries by id or by message and touch only pending ones (the relay's settle, give-back and
#: renewal; a recall's cancel and its look at the post). They compare ``status`` with
#: ``pending.status``, never with the literal 'pending': a literal lets the planner answer through a
#: partial index of pending entries (ix_outbox_pending, ix_outbox_due, ix_outbox_pending_in_order),
#: which it does, with a plan it then keeps, whenever its statistics say few entries are pending.
#: After an outage they say so while thousands are, and each such statement walked every one of them
#: (tests/integration/test_relay_plans.py). Materialized, so it is not folded back into a literal: the
#: primary key, or the message's index, leads however long the backlog.
PENDING_CTE = "pending AS MATERIALIZED (SELECT 'pending' AS status)"


def hydrated_conversations() -> Any:
    """Conversations with their member ids and external participants, in one statement (the send path
    reads a conversation per message: three queries were three round trips)."""
    m, e = conv_members_t.c, externals_t.c
    members = (
        select(func.coalesce(func.array_agg(aggregate_order_by(m.user_id, m.user_id)), text("'{}'::int[]")))
        .where(m.conversation_id == conversations_t.c.id)
        .scalar_subquery()
    )
    external = (
        select(
            func.coalesce(
                func.json_agg(
                    aggregate_order_by(
                        func.json_build_array(
                            e.id, e.phone_number, e.display_name, e.chat_user_id, e.consent_id, e.removed_at
                        ),
                        e.id,
                    )
                ),
                text("'[]'::json"),
            )
        )
        .where(e.conversation_id == conversations_t.c.id)
        .scalar_subquery()
    )
    r = on_call_t.c
    on_call = select(r.care_team_id, r.holder_id).where(r.conversation_id == conversations_t.c.id)
    return select(
        conversations_t,
        members.label("member_ids"),
        external.label("externals"),
        on_call.with_only_columns(r.care_team_id).scalar_subquery().label("on_call_care_team_id"),
        on_call.with_only_columns(r.holder_id).scalar_subquery().label("on_call_holder_id"),
    )


def conversation_of(r: Any) -> Conversation:
    return Conversation(
        id=r.id,
        patient_id=r.patient_id,
        title=r.title,
        channel_url=r.channel_url,
        organization_id=r.organization_id,
        created_by=r.created_by,
        created_at=r.created_at,
        channel_state=r.channel_state,
        member_ids=tuple(r.member_ids),
        external_participants=tuple(_external(*x) for x in r.externals),
        on_call_care_team_id=r.on_call_care_team_id,
        on_call_holder_id=r.on_call_holder_id,
    )


def _external(
    id: int, phone: str, name: str, chat_user_id: str, consent_id: int, removed_at: str | None
) -> ExternalParticipant:
    removed = None if removed_at is None else datetime.fromisoformat(removed_at)  # JSON: ISO 8601
    return ExternalParticipant(id, phone, name, chat_user_id, consent_id, removed)


def _next_reply_code(phone_number: str) -> Any:
    """1 + the highest reply code the number ever had: codes are never reused."""
    return (
        select(func.coalesce(func.max(externals_t.c.reply_code), 0) + 1)
        .where(externals_t.c.phone_number == phone_number)
        .scalar_subquery()
    )


class SqlConversationRepository(Repository):
    async def add(
        self,
        *,
        patient_id: int,
        title: str,
        organization_id: int,
        created_by: int,
        member_ids: Sequence[int],
        external: Sequence[NewExternalParticipant],
    ) -> Conversation:
        channel_url = f"caremsg_{secrets.token_hex(16)}"
        row = (
            await self.session.execute(
                insert(conversations_t)
                .values(
                    patient_id=patient_id,
                    title=title,
                    channel_url=channel_url,
                    organization_id=organization_id,
                    created_by=created_by,
                )
                .returning(conversations_t)
            )
        ).one()
        await self.session.execute(
            insert(conv_members_t),
            [{"conversation_id": row.id, "user_id": uid} for uid in dict.fromkeys(member_ids)],
        )
        if external:
            # Each number's next reply code; the lock (per number, in a fixed order) keeps two
            # conversations admitting the same number at once from drawing the same one.
            for number in sorted({e.phone_number for e in external}):
                key = f"caremsg.reply_code:{number}"
                await self.session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))
            for e in external:
                await self.session.execute(
                    insert(externals_t).values(
                        conversation_id=row.id,
                        phone_number=e.phone_number,
                        display_name=e.display_name,
                        organization_id=e.organization_id,
                        consent_id=e.consent_id,
                        chat_user_id=f"ext_{secrets.token_hex(12)}",
                        reply_code=_next_reply_code(e.phone_number),
                    )
                )
        conversation = await self.get(row.id)
        assert conversation is not None
        return conversation

    async def get(self, conversation_id: int) -> Conversation | None:
        row = (
            await self.session.execute(
                hydrated_conversations().where(conversations_t.c.id == conversation_id)
            )
        ).one_or_none()
        return conversation_of(row) if row else None

    async def list_for_member(self, user_id: int, after: int | None, limit: int) -> Page[Conversation]:
        query = hydrated_conversations().where(
            exists().where(
                conv_members_t.c.conversation_id == conversations_t.c.id, conv_members_t.c.user_id == user_id
            )
        )
        if after is not None:
            query = query.where(conversations_t.c.id > after)
        rows = (await self.session.execute(query.order_by(conversations_t.c.id).limit(limit + 1))).all()
        return page([conversation_of(r) for r in rows], limit, lambda c: c.id)

    async def by_channel(self, channel_url: str) -> Conversation | None:
        conversation_id = (
            await self.session.execute(
                select(conversations_t.c.id).where(conversations_t.c.channel_url == channel_url)
            )
        ).scalar_one_or_none()
        if conversation_id is None:
            return None
        return await self.get(conversation_id)

    async def reply_routes(self, phone_number: str) -> list[ReplyRoute]:
        rows = (
            await self.session.execute(
                select(
                    conversations_t.c.id.label("conversation_id"),
                    conversations_t.c.patient_id,
                    conversations_t.c.channel_url,
                    externals_t.c.id.label("participant_id"),
                    externals_t.c.chat_user_id,
                    externals_t.c.phone_number,
                    externals_t.c.organization_id,
                    externals_t.c.reply_code,
                    externals_t.c.removed_at.is_(None).label("active"),
                    exists()
                    .where(opt_outs_t.c.phone_number == externals_t.c.phone_number)
                    .label("opted_out"),
                )
                .select_from(externals_t)
                .join(conversations_t, conversations_t.c.id == externals_t.c.conversation_id)
                .outerjoin(deliveries_t, deliveries_t.c.external_participant_id == externals_t.c.id)
                .where(externals_t.c.phone_number == phone_number)
                .group_by(conversations_t.c.id, externals_t.c.id)
                # The conversation that texted this number last; else the newest one they are in.
                .order_by(func.max(deliveries_t.c.updated_at).desc().nulls_last(), externals_t.c.id.desc())
            )
        ).all()
        return [ReplyRoute(**row._mapping) for row in rows]

    async def recipient_organizations(self, conversation_id: int, sender_id: int) -> tuple[int, ...]:
        found = {"id": conversation_id, "sender": sender_id}
        rows = await self.session.execute(_RECIPIENT_ORGANIZATIONS, found)
        return tuple(int(r.organization_id) for r in rows)


#: The same organizations the send path's one read finds (integrations/db/send_uow.py).
_RECIPIENT_ORGANIZATIONS = text(
    "SELECT DISTINCT mu.organization_id FROM conversation_members cm"
    " JOIN users mu ON mu.id = cm.user_id JOIN conversations c ON c.id = cm.conversation_id"
    " LEFT JOIN patients p ON p.id = c.patient_id"
    " WHERE cm.conversation_id = :id AND cm.user_id <> :sender"
    " AND mu.organization_id IS DISTINCT FROM p.organization_id ORDER BY mu.organization_id"
)


def message_of(row: Any) -> Message:
    """A ``messages`` row as the engine's :class:`Message` (deliveries not attached)."""
    return Message(
        id=row.id,
        conversation_id=row.conversation_id,
        sender_id=row.sender_id,
        text=row.body,
        state=DeliveryState(row.state),
        created_at=row.created_at,
        chat_message_id=row.chat_message_id,
        priority=row.priority,
        acknowledged_by=row.acknowledged_by,
        acknowledged_at=row.acknowledged_at,
        recalled_at=row.recalled_at,
        recalled_by=row.recalled_by,
        corrects_message_id=row.corrects_message_id,
        corrected_by_message_id=row.corrected_by_message_id,
        content_deleted_at=row.content_deleted_at,
    )


class SqlMessageRepository(Repository):
    async def recent(self, conversation_id: int, limit: int) -> list[Message]:
        rows = await self.session.execute(
            select(messages_t)
            .where(messages_t.c.conversation_id == conversation_id)
            .order_by(messages_t.c.id.desc())
            .limit(limit)
        )
        return [message_of(r) for r in reversed(rows.all())]

    async def get(self, message_id: int) -> Message | None:
        row = (
            await self.session.execute(select(messages_t).where(messages_t.c.id == message_id))
        ).one_or_none()
        return message_of(row) if row else None

    async def acknowledge(self, message_id: int, user_id: int, at: datetime) -> Acknowledged:
        # The first acknowledgement wins: only a row nobody acknowledged is updated (the row lock
        # makes a second acknowledger wait and then find it set), and escalation stops with it.
        first = (
            await self.session.execute(
                update(messages_t)
                .where(messages_t.c.id == message_id, messages_t.c.acknowledged_at.is_(None))
                .values(acknowledged_by=user_id, acknowledged_at=at, escalation_due_at=None)
                .returning(messages_t.c.acknowledged_by, messages_t.c.acknowledged_at)
            )
        ).one_or_none()
        if first is not None:
            return Acknowledged(first.acknowledged_by, first.acknowledged_at, True)
        stood = (
            await self.session.execute(
                select(messages_t.c.acknowledged_by, messages_t.c.acknowledged_at).where(
                    messages_t.c.id == message_id
                )
            )
        ).one()
        return Acknowledged(stood.acknowledged_by, stood.acknowledged_at, False)

    async def add_posted(
        self, conversation_id: int, sender_id: int, text: str, chat_message_id: int, chat_ts_ms: int
    ) -> Message | None:
        exists = (
            await self.session.execute(
                select(messages_t.c.id).where(
                    messages_t.c.conversation_id == conversation_id,
                    messages_t.c.chat_message_id == chat_message_id,
                )
            )
        ).first()
        if exists:
            return None
        row = (
            await self.session.execute(
                insert(messages_t)
                .values(
                    conversation_id=conversation_id,
                    sender_id=sender_id,
                    body=text,
                    state="sent",
                    chat_message_id=chat_message_id,
                )
                .returning(messages_t)
            )
        ).one()
        return message_of(row)


class SqlOutbox(Repository):
    async def enqueue_all(self, effects: Sequence[Effect]) -> None:
        if not effects:
            return
        rows = [outbox_row(e) for e in effects]
        await self.session.execute(
            insert(outbox_t),
            [
                {
                    "kind": r.kind,
                    "payload": r.payload,
                    "conversation_id": r.conversation_id,
                    "message_id": r.message_id,
                }
                for r in rows
            ],
        )

    async def enqueue(self, effect: Effect) -> None:
        row = outbox_row(effect)
        await self.session.execute(
            insert(outbox_t).values(
                kind=row.kind,
                payload=row.payload,
                conversation_id=row.conversation_id,
                message_id=row.message_id,
            )
        )
