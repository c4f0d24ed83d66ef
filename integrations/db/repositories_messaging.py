"""SQL behind :class:`engine.ports.MessagingRepository`: delivery rows, opt-outs, webhook bookkeeping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from engine.model import Conversation, DeliveryState, Message, RecipientDelivery, User
from engine.ports import NewDelivery, ReplyRoute, SmsRecipient
from engine.sms import CHANNEL_RECIPIENT
from integrations.db.repositories import (
    EXTERNAL_CONSENTS_SQL,
    SqlConversationRepository,
    _message,
    _user,
    consent_candidates,
)
from integrations.db.tables import metadata

deliveries_t = metadata.tables["message_deliveries"]
messages_t = metadata.tables["messages"]
conversations_t = metadata.tables["conversations"]
users_t = metadata.tables["users"]
externals_t = metadata.tables["external_participants"]
opt_outs_t = metadata.tables["sms_opt_outs"]
webhooks_t = metadata.tables["webhook_events"]
keys_t = metadata.tables["idempotency_keys"]
group_members_t = metadata.tables["compliance_group_members"]

#: The external participants of a conversation as the SMS fan-out needs them, with the consents that
#: could let each be texted about the patient (engine.facts decides which counts, at decision time).
#: Placeholders: conversation, patient (SQL expressions).
SMS_RECIPIENTS_SQL = f"""
    SELECT e.id AS participant_id, e.phone_number, e.chat_user_id, e.organization_id,
           EXISTS (SELECT 1 FROM sms_opt_outs o WHERE o.phone_number = e.phone_number) AS opted_out,
           e.removed_at IS NOT NULL AS removed,
           ARRAY(SELECT g.group_id FROM compliance_group_members g
                 WHERE g.organization_id = e.organization_id
                   AND EXISTS (SELECT 1 FROM organization_contacts d
                               WHERE d.organization_id = e.organization_id
                                 AND d.phone_number = e.phone_number)) AS compliance_group_ids,
           ({
    EXTERNAL_CONSENTS_SQL.format(
        patient="{patient}", phone="e.phone_number", organization="e.organization_id"
    )
}) AS consents
    FROM external_participants e
    WHERE e.conversation_id = {{conversation}}
"""  # noqa: S608 - assembled from constants; every value is a bound parameter

_SMS_RECIPIENTS = text(
    SMS_RECIPIENTS_SQL.format(conversation=":conversation_id", patient=":patient_id") + " ORDER BY e.id"
)


def _delivery(row: Any) -> RecipientDelivery:
    return RecipientDelivery(
        recipient=row.recipient,
        channel="chat" if row.recipient == CHANNEL_RECIPIENT else "sms",
        state=DeliveryState(row.state),
        reason=row.reason,
        updated_at=row.updated_at,
    )


def recipient(item: dict[str, Any]) -> SmsRecipient:
    return SmsRecipient(
        participant_id=item["participant_id"],
        phone_number=item["phone_number"],
        chat_user_id=item["chat_user_id"],
        organization_id=item["organization_id"],
        opted_out=item["opted_out"],
        removed=item["removed"],
        compliance_group_ids=frozenset(item["compliance_group_ids"]),
        consents=tuple(consent_candidates(item["consents"])),
    )


class SqlMessagingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def sms_recipients(self, conversation_id: int, patient_id: int) -> list[SmsRecipient]:
        rows = await self.session.execute(
            _SMS_RECIPIENTS, {"conversation_id": conversation_id, "patient_id": patient_id}
        )
        return [recipient(dict(r._mapping)) for r in rows]

    async def add_deliveries(self, message_id: int, deliveries: Sequence[NewDelivery]) -> list[int]:
        rows = (
            await self.session.execute(
                insert(deliveries_t).returning(deliveries_t.c.id, sort_by_parameter_order=True),
                [
                    {
                        "message_id": message_id,
                        "recipient": d.recipient,
                        "external_participant_id": d.external_participant_id,
                        "state": d.state.value,
                        "reason": d.reason,
                        "content": d.content,
                        "provider_ts_ms": d.provider_ts_ms,
                    }
                    for d in deliveries
                ],
            )
        ).all()
        return [r.id for r in rows]

    async def deliveries_for(self, message_ids: Sequence[int]) -> dict[int, tuple[RecipientDelivery, ...]]:
        if not message_ids:
            return {}
        rows = await self.session.execute(
            select(deliveries_t)
            .where(deliveries_t.c.message_id.in_(list(message_ids)))
            .order_by(deliveries_t.c.message_id, deliveries_t.c.id)
        )
        out: dict[int, list[RecipientDelivery]] = {}
        for r in rows:
            out.setdefault(r.message_id, []).append(_delivery(r))
        return {k: tuple(v) for k, v in out.items()}

    async def get_message(self, message_id: int) -> Message | None:
        row = (
            await self.session.execute(select(messages_t).where(messages_t.c.id == message_id))
        ).one_or_none()
        return _message(row) if row else None

    async def conversation_by_channel(self, channel_url: str) -> Conversation | None:
        conversation_id = (
            await self.session.execute(
                select(conversations_t.c.id).where(conversations_t.c.channel_url == channel_url)
            )
        ).scalar_one_or_none()
        if conversation_id is None:
            return None
        return await SqlConversationRepository(self.session).get(conversation_id)

    async def user_by_chat_id(self, chat_user_id: str) -> User | None:
        row = (
            await self.session.execute(
                select(users_t).where(users_t.c.chat_user_id == chat_user_id, users_t.c.is_active)
            )
        ).one_or_none()
        return _user(row) if row else None

    async def add_posted_message(
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
        return _message(row)

    async def mark_read(self, conversation_id: int, reader_chat_id: str, read_ts_ms: int) -> int:
        result = await self.session.execute(
            text(
                """
                UPDATE message_deliveries d SET state = 'delivered', updated_at = now()
                FROM messages m JOIN users u ON u.id = m.sender_id
                WHERE d.message_id = m.id AND m.conversation_id = :conversation_id
                  AND d.recipient = 'channel' AND d.state = 'sent'
                  AND d.provider_ts_ms <= :read_ts AND u.chat_user_id <> :reader
                """
            ),
            {"conversation_id": conversation_id, "read_ts": read_ts_ms, "reader": reader_chat_id},
        )
        await self.session.execute(
            text(
                """
                UPDATE messages m SET state = 'delivered'
                FROM message_deliveries d
                WHERE d.message_id = m.id AND d.recipient = 'channel' AND d.state = 'delivered'
                  AND m.conversation_id = :conversation_id AND m.state = 'sent'
                """
            ),
            {"conversation_id": conversation_id},
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def reply_route(self, phone_number: str) -> ReplyRoute | None:
        row = (
            await self.session.execute(
                select(
                    conversations_t.c.id.label("conversation_id"),
                    conversations_t.c.patient_id,
                    conversations_t.c.channel_url,
                    externals_t.c.id.label("participant_id"),
                    externals_t.c.chat_user_id,
                    externals_t.c.phone_number,
                    externals_t.c.organization_id,
                )
                .select_from(externals_t)
                .join(conversations_t, conversations_t.c.id == externals_t.c.conversation_id)
                .outerjoin(deliveries_t, deliveries_t.c.external_participant_id == externals_t.c.id)
                .where(externals_t.c.phone_number == phone_number)
                .group_by(conversations_t.c.id, externals_t.c.id)
                # The conversation that texted this number last; else the newest one they are in.
                .order_by(func.max(deliveries_t.c.updated_at).desc().nulls_last(), externals_t.c.id.desc())
                .limit(1)
            )
        ).one_or_none()
        return ReplyRoute(**row._mapping) if row else None

    async def set_opt_out(self, phone_number: str, opted_out: bool, provider_message_id: str) -> bool:
        if opted_out:
            result = await self.session.execute(
                pg_insert(opt_outs_t)
                .values(phone_number=phone_number, provider_message_id=provider_message_id)
                .on_conflict_do_nothing()
                .returning(opt_outs_t.c.phone_number)
            )
            return result.first() is not None
        deleted = await self.session.execute(
            opt_outs_t.delete()
            .where(opt_outs_t.c.phone_number == phone_number)
            .returning(opt_outs_t.c.phone_number)
        )
        return deleted.first() is not None

    async def finish_webhook_event(self, event_id: int, status: str) -> None:
        await self.session.execute(
            update(webhooks_t)
            .where(webhooks_t.c.id == event_id)
            .values(status=status, processed_at=func.now(), lease_until=None)
        )

    async def bind_idempotency_key(self, claim_id: int, resource_id: int) -> None:
        await self.session.execute(
            update(keys_t).where(keys_t.c.id == claim_id).values(resource_id=resource_id)
        )
