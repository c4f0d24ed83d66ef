"""Reading a conversation: whether the actor may, and the delivery state of its messages.

Shared by the conversations and messaging workflow families (neither imports the other's internals).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TypeVar

from engine.audit import DetailValue
from engine.decisions import Fact
from engine.errors import NotFound
from engine.escalation import URGENT
from engine.model import Conversation, Message
from engine.ports.units import ConversationReading
from engine.services import Guard

#: Any unit of work that can read conversations (the conversations or the messaging family's).
R = TypeVar("R", bound=ConversationReading)


async def conversation_facts(
    guard: Guard[R],
    workflow: str,
    conversation: Conversation,
    *,
    unknown_as: str = "conversation",
) -> tuple[frozenset[str], Mapping[str, DetailValue]]:
    """The actor's facts for the conversation's patient, and ``member`` if the actor is one."""
    facts, details = await guard.patient_facts(workflow, conversation.patient_id, unknown_as=unknown_as)
    if guard.actor.user_id in conversation.member_ids:
        facts |= {Fact.MEMBER}
    return facts, details


async def readable_conversation(
    guard: Guard[R],
    workflow: str,
    conversation_id: int,
    *,
    unknown_as: str = "conversation",
) -> Conversation:
    """The conversation, if the actor may run ``workflow`` on it; ``unknown_as`` names the record a
    conversation the actor has no relation to is answered as (not found: the id the client sent)."""

    async def facts_of() -> frozenset[str] | None:
        conversation = await guard.uow.conversations.get(conversation_id)
        if conversation is None:
            return None
        return (await conversation_facts(guard, workflow, conversation, unknown_as=unknown_as))[0]

    await guard.require_role_recording_facts(
        workflow, facts_of, resource_type="conversation", resource_id=conversation_id
    )
    conversation = await guard.uow.conversations.get(conversation_id)
    if conversation is None:
        guard.record_missing(workflow, "conversation", conversation_id)
        raise NotFound("conversation")
    facts, details = await conversation_facts(guard, workflow, conversation, unknown_as=unknown_as)
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
