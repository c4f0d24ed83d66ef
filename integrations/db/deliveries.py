"""SQL behind the delivery ports (engine/ports/messaging.py): per-recipient delivery rows, SMS opt-outs,
and the bookkeeping of stored webhook events and Idempotency-Key claims."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from engine.model import (
    DeliveryState,
    EscalationTaken,
    RecipientDelivery,
)
from engine.ports.messaging import NewDelivery, SmsRecipient
from engine.sms import CHANNEL_RECIPIENT
from engine.workflows.messaging import IGNORED, PENDING
from integrations.db.base import Repository
from integrations.db.columns import table_of
from integrations.db.patients import EXTERNAL_CONSENTS_SQL, consent_candidates
from integrations.db.tables import (
    EscalationStepRow,
    IdempotencyKeyRow,
    MessageDeliveryRow,
    MessageRow,
    SmsOptOutRow,
    UserRow,
    WebhookEventRow,
)

deliveries_t = table_of(MessageDeliveryRow)
steps_t = table_of(EscalationStepRow)
keys_t = table_of(IdempotencyKeyRow)
messages_t = table_of(MessageRow)
opt_outs_t = table_of(SmsOptOutRow)
users_t = table_of(UserRow)
webhooks_t = table_of(WebhookEventRow)


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
        provider_ts_ms=row.provider_ts_ms,
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


class SqlDeliveryRepository(Repository):
    async def sms_recipients(self, conversation_id: int, patient_id: int) -> list[SmsRecipient]:
        rows = await self.session.execute(
            _SMS_RECIPIENTS, {"conversation_id": conversation_id, "patient_id": patient_id}
        )
        return [recipient(dict(r._mapping)) for r in rows]

    async def add(self, message_id: int, deliveries: Sequence[NewDelivery]) -> list[int]:
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

    async def escalation_of(self, message_ids: Sequence[int]) -> dict[int, tuple[EscalationTaken, ...]]:
        if not message_ids:
            return {}
        rows = await self.session.execute(
            select(steps_t)
            .where(steps_t.c.message_id.in_(list(message_ids)))
            .order_by(steps_t.c.message_id, steps_t.c.id)
        )
        found: dict[int, list[EscalationTaken]] = {}
        for r in rows:
            found.setdefault(r.message_id, []).append(
                EscalationTaken(r.step, r.round, r.taken_at, tuple(r.target_user_ids), r.state, r.reason)
            )
        return {m: tuple(steps) for m, steps in found.items()}

    async def for_messages(self, message_ids: Sequence[int]) -> dict[int, tuple[RecipientDelivery, ...]]:
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

    async def mark_read(self, conversation_id: int, reader_chat_id: str, read_ts_ms: int) -> int:
        d, m, u = deliveries_t.c, messages_t.c, users_t.c
        result = await self.session.execute(
            update(deliveries_t)
            .where(
                d.message_id == m.id,
                u.id == m.sender_id,
                m.conversation_id == conversation_id,
                d.recipient == CHANNEL_RECIPIENT,
                d.state == DeliveryState.SENT.value,
                d.provider_ts_ms <= read_ts_ms,
                u.chat_user_id != reader_chat_id,
            )
            .values(state=DeliveryState.DELIVERED.value, updated_at=func.now())
        )
        await self.session.execute(
            update(messages_t)
            .where(
                d.message_id == m.id,
                d.recipient == CHANNEL_RECIPIENT,
                d.state == DeliveryState.DELIVERED.value,
                m.conversation_id == conversation_id,
                m.state == DeliveryState.SENT.value,
            )
            .values(state=DeliveryState.DELIVERED.value)
        )
        return int(getattr(result, "rowcount", 0) or 0)


class SqlOptOutRepository(Repository):
    async def set(self, phone_number: str, opted_out: bool, provider_message_id: str) -> bool:
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


class SqlWebhookEventLog(Repository):
    async def take(self, event_id: int) -> bool:
        status = (
            await self.session.execute(
                select(webhooks_t.c.status).where(webhooks_t.c.id == event_id).with_for_update()
            )
        ).scalar_one_or_none()
        return status == PENDING

    async def finish(self, event_id: int, status: str, *, keep_body: bool = True) -> None:
        await self.session.execute(
            update(webhooks_t)
            .where(webhooks_t.c.id == event_id, webhooks_t.c.status == PENDING)
            .values(
                status=status,
                processed_at=func.now(),
                lease_until=None,
                # An event caremsg ignores, or whose text it did not post, keeps no body.
                **({"body": ""} if status == IGNORED or not keep_body else {}),
            )
        )


class SqlIdempotencyKeys(Repository):
    async def bind(self, claim_id: int, resource_id: int) -> None:
        await self.session.execute(
            update(keys_t).where(keys_t.c.id == claim_id).values(resource_id=resource_id)
        )
