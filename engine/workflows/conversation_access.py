"""Reading a conversation: whether the actor may, the delivery state of its messages, and where each
message stands for each member (sent, delivered, read) and how many the reader has not read.

Shared by the conversations, messaging and read-receipts workflow families (none imports another's
internals).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from engine.audit import DetailValue
from engine.decisions import Fact
from engine.errors import NotFound
from engine.escalation import URGENT
from engine.model import (
    Conversation,
    DeliveryState,
    MemberReceipt,
    Message,
    ReadMark,
    ReceiptState,
    RecipientDelivery,
    has_read,
)
from engine.ports.units import ConversationReading
from engine.services import Guard
from engine.sms import CHANNEL_RECIPIENT

#: Any unit of work that can read conversations (the conversations or the messaging family's).
R = TypeVar("R", bound=ConversationReading)


async def conversation_facts(
    guard: Guard[R],
    workflow: str,
    conversation: Conversation,
    *,
    unknown_as: str = "conversation",
    sent_id: object | None = None,
) -> tuple[frozenset[str], Mapping[str, DetailValue]]:
    """The actor's facts for the conversation's patient, and ``member`` if the actor is one
    (``unknown_as`` and ``sent_id``: see :meth:`engine.services.Decider.note_relation`)."""
    facts, details = await guard.patient_facts(
        workflow, conversation.patient_id, unknown_as=unknown_as, sent_id=sent_id
    )
    if guard.actor.user_id in conversation.member_ids:
        facts |= {Fact.MEMBER}
    return facts, details


async def readable_conversation(
    guard: Guard[R],
    workflow: str,
    conversation_id: int,
    *,
    unknown_as: str = "conversation",
    sent_id: object | None = None,
) -> Conversation:
    """The conversation, if the actor may run ``workflow`` on it; ``unknown_as`` names the record a
    conversation the actor has no relation to is answered as (not found: the id the client sent,
    ``sent_id``, by default the conversation's)."""

    async def facts_of() -> frozenset[str] | None:
        conversation = await guard.uow.conversations.get(conversation_id)
        if conversation is None:
            return None
        return (
            await conversation_facts(guard, workflow, conversation, unknown_as=unknown_as, sent_id=sent_id)
        )[0]

    await guard.require_role_recording_facts(
        workflow, facts_of, resource_type="conversation", resource_id=conversation_id
    )
    conversation = await guard.uow.conversations.get(conversation_id)
    if conversation is None:
        guard.record_missing(workflow, "conversation", conversation_id)
        raise NotFound("conversation")
    facts, details = await conversation_facts(
        guard, workflow, conversation, unknown_as=unknown_as, sent_id=sent_id
    )
    guard.require(
        workflow,
        facts,
        resource_type="conversation",
        resource_id=conversation_id,
        patient_id=conversation.patient_id,
        details=details,
    )
    return conversation


async def with_deliveries(uow: ConversationReading, messages: Sequence[Message]) -> list[Message]:
    """The messages with their delivery rows attached, and the escalation steps of urgent ones."""
    by_message = await uow.deliveries.for_messages([m.id for m in messages])
    urgent = [m.id for m in messages if m.priority == URGENT]
    steps = await uow.deliveries.escalation_of(urgent) if urgent else {}
    return [
        dataclasses.replace(m, deliveries=by_message.get(m.id, ()), escalation=steps.get(m.id, ()))
        for m in messages
    ]


def _channel_time(channel: RecipientDelivery | None) -> datetime | None:
    """When the message reached the chat channel: the provider's own time, else the row's."""
    if channel is None or channel.state not in (DeliveryState.SENT, DeliveryState.DELIVERED):
        return None
    if channel.provider_ts_ms is not None:
        return datetime.fromtimestamp(channel.provider_ts_ms / 1000, UTC)
    return channel.updated_at


def member_receipts(
    message: Message, member_ids: Sequence[int], reads: Mapping[int, ReadMark]
) -> tuple[MemberReceipt, ...]:
    """Where ``message`` stands for each member but its sender, by user id.

    ``read`` when the member's mark covers it (whatever the channel says: they saw it); else
    ``delivered`` once it is in the chat channel, ``failed`` when it could not be posted there, and
    ``sent`` while it is on its way. (caremsg hears of no per-member delivery from the chat provider,
    only of reads: in the channel is as delivered as it can tell.)
    """
    channel = next((d for d in message.deliveries if d.recipient == CHANNEL_RECIPIENT), None)
    delivered_at = _channel_time(channel)
    out = []
    for user_id in sorted(set(member_ids) - {message.sender_id}):
        mark = reads.get(user_id)
        if mark is not None and has_read(message, user_id, mark):
            out.append(MemberReceipt(user_id, ReceiptState.READ, delivered_at, mark.read_at))
        elif delivered_at is not None:
            out.append(MemberReceipt(user_id, ReceiptState.DELIVERED, delivered_at))
        elif channel is not None and channel.state == DeliveryState.FAILED:
            out.append(MemberReceipt(user_id, ReceiptState.FAILED))
        else:
            out.append(MemberReceipt(user_id, ReceiptState.SENT))
    return tuple(out)


async def with_receipts(
    uow: ConversationReading, conversation: Conversation, messages: Sequence[Message]
) -> list[Message]:
    """The messages (with their delivery rows) and each member's receipt of each: one read of the
    conversation's read marks, whatever the number of messages."""
    if not messages:
        return []
    reads = await uow.reads.of_conversation(conversation.id)
    return [
        dataclasses.replace(m, receipts=member_receipts(m, conversation.member_ids, reads)) for m in messages
    ]


async def with_unread_counts(
    uow: ConversationReading, user_id: int, conversations: Sequence[Conversation]
) -> list[Conversation]:
    """The conversations with the reader's unread count: one statement for the whole page."""
    if not conversations:
        return []
    counts = await uow.reads.unread_counts(user_id, [c.id for c in conversations])
    return [dataclasses.replace(c, unread_count=counts.get(c.id, 0)) for c in conversations]
