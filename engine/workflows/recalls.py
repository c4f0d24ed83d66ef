"""Recalling a sent message, and reading what a recalled message said (the legal record).

A recall (``message.recall``) is decided by the policy on the facts between the person and the
message: by default its sender may recall it while the fact ``recall_window`` holds (it was sent less
than the workflow's ``window_minutes`` ago, workflows.toml, 15 by default), and a compliance officer
of the patient's organization (``own_org``) at any time. Every recall states a reason.

Recalling moves the text out of the message into the legal record, in the decision's transaction:
from then on every ordinary read shows the message as recalled (when, by whom) without its text.
Whatever of the message had not gone out yet is cancelled in the same transaction (the chat post,
texts to external participants: their deliveries become ``failed: recalled``); a text already
handed to the carrier cannot be taken back, and its recipient gets nothing more. Then, through the
outbox (:class:`~engine.effects.RecallFromChannel`), the message is deleted from the chat channel
and a notice that a message was recalled (never what it said) is posted in its place.

The reason is free text that may name people, so, like a break-glass reason, it is kept with the
legal record, not in the audit trail; the audit trail records the recall (who, when, under which
rule, what it cancelled) and every read of the legal record (``message.read_recalled``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine.audit import DetailValue
from engine.effects import RecallFromChannel
from engine.errors import Conflict, FieldError, InvalidInput, NotFound
from engine.facts import message_facts
from engine.model import Actor, Conversation, Message, RecalledContent
from engine.ports.units import RecallsUnitOfWork
from engine.services import Guard, Services
from engine.workflows.conversation_access import conversation_facts, with_deliveries

RECALL = "message.recall"
READ_RECALLED = "message.read_recalled"
MAX_REASON = 500


def _unit_of_work(services: Services) -> RecallsUnitOfWork:
    """This family's view of the unit of work: only the repositories its workflows use."""
    return services.uow()


async def _facts(
    guard: Guard[RecallsUnitOfWork], workflow: str, conversation: Conversation, message: Message
) -> tuple[frozenset[str], Mapping[str, DetailValue]]:
    """The facts between the actor and the message: the conversation's (``member``, and the
    patient's ``own_org``, ``covered``...) and the message's own (``sender``, ``recall_window``)."""
    facts, details = await conversation_facts(guard, workflow, conversation, unknown_as="message")
    own = message_facts(
        guard.policy.workflows.get(workflow),
        actor_id=guard.actor.user_id,
        sender_id=message.sender_id,
        sent_at=message.created_at,
        now=guard.now,
    )
    return facts | own, details


async def _decided_message(
    guard: Guard[RecallsUnitOfWork], workflow: str, message_id: int
) -> tuple[Message, Conversation]:
    """The message and its conversation, if the actor may run ``workflow`` on it. A message the
    actor has no relation to answers 404, exactly as one that does not exist."""
    uow = guard.uow

    async def facts_of() -> frozenset[str] | None:
        found = await uow.messages.get(message_id)
        conversation = None if found is None else await uow.conversations.get(found.conversation_id)
        if found is None or conversation is None:
            return None
        return (await _facts(guard, workflow, conversation, found))[0]

    await guard.require_role_recording_facts(
        workflow, facts_of, resource_type="message", resource_id=message_id
    )
    message = await uow.messages.get(message_id)
    conversation = None if message is None else await uow.conversations.get(message.conversation_id)
    if message is None or conversation is None:
        guard.record_missing(workflow, "message", message_id)
        raise NotFound("message")
    facts, details = await _facts(guard, workflow, conversation, message)
    guard.require(
        workflow,
        facts,
        resource_type="message",
        resource_id=message_id,
        patient_id=conversation.patient_id,
        details={**details, "conversation_id": conversation.id},
    )
    return message, conversation


@dataclass(frozen=True)
class RecallMessage:
    message_id: int
    reason: str


async def recall_message(services: Services, actor: Actor, cmd: RecallMessage) -> Message:
    """Recall a message (``message.recall``): its text leaves every ordinary read, what has not gone
    out is cancelled, and the chat channel loses it (through the outbox). 404 for a message the actor
    may not know of, 403 with the reason for one they may (the window has passed, not the sender),
    409 when it was recalled already, 422 without a reason."""
    reason = cmd.reason.strip()
    if not 1 <= len(reason) <= MAX_REASON:
        raise InvalidInput([FieldError("reason", f"State why, in 1 to {MAX_REASON} characters.")])
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        message, conversation = await _decided_message(guard, RECALL, cmd.message_id)
        if message.recalled:
            raise Conflict("This message was recalled already.")
        outcome = await uow.recalls.recall(message.id, at=guard.now, by=actor.user_id, reason=reason)
        if outcome is None:
            raise Conflict("This message was recalled already.")
        # The decision's record is the recall's: who, when, under which rule, what it cancelled.
        # The reason is in the legal record (message_recalls), read under message.read_recalled.
        guard.annotate(
            recalled=1,
            sender_id=message.sender_id,
            by_sender=int(message.sender_id == actor.user_id),
            cancelled_posts=outcome.cancelled_posts,
            cancelled_texts=outcome.cancelled_texts,
            texts_already_sent=outcome.texts_already_sent,
        )
        await uow.outbox.enqueue(RecallFromChannel(conversation.id, message.id))
        (message,) = await with_deliveries(uow, [await _reread(uow, message.id)])
        await uow.commit()
    services.delivery.wake()
    return message


async def _reread(uow: RecallsUnitOfWork, message_id: int) -> Message:
    message = await uow.messages.get(message_id)
    if message is None:  # pragma: no cover - the row was read in this very transaction
        raise NotFound("message")
    return message


async def read_recalled(services: Services, actor: Actor, message_id: int) -> RecalledContent:
    """What a recalled message said, and who recalled it when and why (``message.read_recalled``;
    by default a compliance officer of the patient's organization). Every read is audited. 404 for a
    message the actor may not know of and for one that was never recalled."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        message, _ = await _decided_message(guard, READ_RECALLED, message_id)
        record = await uow.recalls.legal_record(message.id)
        if record is None:
            raise NotFound("message", "This message was not recalled.")
        # The decision's record is the read's: one per read, naming whose recall was read.
        guard.annotate(read_recalled_content=1, recalled_by=record.recalled_by)
        await uow.commit()
    return record
