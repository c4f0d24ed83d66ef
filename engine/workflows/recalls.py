"""Recalling or correcting a sent message, and reading what a recalled message said (the legal record).

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

A correction (``message.correct``; by default only the original's sender, still a member with the
patient covered, at any time) is a new message in the same conversation, delivered like any other
(chat post, texts to external participants as ``sms.send_full_text`` decides), that names the one
it replaces; the original names its correction. A correction does not recall the original: the two
are separate decisions (a recall has its window and its own rules, and a correction may come after
it), so a sender who wants the wrong text gone recalls it as well. A message has one correction
(a second is 409); a correction may itself be corrected.

The reason is free text that may name people, so, like a break-glass reason, it is kept with the
legal record, not in the audit trail; the audit trail records the recall (who, when, under which
rule, what it cancelled) and every read of the legal record (``message.read_recalled``).

A recall leaves a message's attached files where they are (``message_attachments``): they leave
ordinary reads with the text (a download answers 404) and the channel's file message is deleted,
but their bytes stay as part of the legal record. The legal record lists them, and each one's bytes
are read under the same decision as the text (``message.read_recalled``: what a recalled message
carried is one record, and the policy has no reason to tell its parts apart), one audit record per
read naming the file's SHA-256.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from engine.audit import DetailValue
from engine.effects import PostMessage, RecallFromChannel, TextMessage
from engine.errors import Conflict, ContentDeleted, FieldError, InvalidInput, NotFound
from engine.facts import message_facts
from engine.model import Actor, AttachmentFile, Conversation, DeliveryState, Message, RecalledContent
from engine.ports.units import RecallsUnitOfWork
from engine.services import Guard, Services
from engine.workflows.conversation_access import conversation_facts, with_deliveries
from engine.workflows.messaging import delivery_states, plan_deliveries

RECALL = "message.recall"
CORRECT = "message.correct"
MAX_TEXT = 4000
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
        _recallable(message)
        outcome = await uow.recalls.recall(message.id, at=guard.now, by=actor.user_id, reason=reason)
        if outcome is None:  # a recall or a sweep got there first
            _recallable(await _reread(uow, message.id))
            raise Conflict("This message was recalled already.")
        # The decision's record is the recall's: who, when, under which rule, what it cancelled,
        # which texts the carrier has, and which a relay held (each then settled on its own record).
        # The reason is in the legal record (message_recalls), read under message.read_recalled.
        guard.annotate(
            recalled=1,
            sender_id=message.sender_id,
            by_sender=int(message.sender_id == actor.user_id),
            cancelled_posts=outcome.cancelled_posts,
            cancelled_texts=outcome.cancelled_texts,
            texts_already_sent=outcome.texts_already_sent,
            texts_in_flight=outcome.texts_in_flight,
        )
        await uow.outbox.enqueue(RecallFromChannel(conversation.id, message.id))
        (message,) = await with_deliveries(uow, [await _reread(uow, message.id)])
        await uow.commit()
    services.delivery.wake()
    return message


def _recallable(message: Message) -> None:
    """409 for a message recalled already, or whose content retention deleted: there is nothing
    left to take back, and a legal record would keep nothing."""
    if message.recalled:
        raise Conflict("This message was recalled already.")
    if message.content_deleted:
        raise ContentDeleted("This message's content was deleted under the retention policy already.")


async def _reread(uow: RecallsUnitOfWork, message_id: int) -> Message:
    message = await uow.messages.get(message_id)
    if message is None:  # pragma: no cover - the row was read in this very transaction
        raise NotFound("message")
    return message


async def read_recalled(services: Services, actor: Actor, message_id: int) -> RecalledContent:
    """What a recalled message said, who recalled it when and why, and its correction if one was sent
    (``message.read_recalled``;
    by default a compliance officer of the patient's organization). Every read is audited. Once
    retention deleted the content the record says when (``content_deleted_at``) and holds no text.
    404 for a message the actor may not know of and for one that was never recalled."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        message, _ = await _decided_message(guard, READ_RECALLED, message_id)
        record = await uow.recalls.legal_record(message.id)
        if record is None:
            raise NotFound("message", "This message was not recalled.")
        attached = await uow.attachments.of_messages([message.id])
        # The decision's record is the read's: one per read, naming whose recall was read.
        guard.annotate(
            read_recalled_content=1,
            recalled_by=record.recalled_by,
            **({} if record.content_deleted_at is None else {"content_deleted": 1}),
        )
        await uow.commit()
    return replace(
        record,
        attachments=attached.get(message.id, ()),
        corrected_by_message_id=message.corrected_by_message_id,
    )


async def read_recalled_attachment(
    services: Services, actor: Actor, message_id: int, attachment_id: int
) -> AttachmentFile:
    """The bytes of a file attached to a recalled message, from the legal record: decided as reading
    its text (``message.read_recalled``), every read audited with the file's SHA-256, size and type.
    404 for a message the actor may not know of, for one that was never recalled (its files are
    downloaded the ordinary way) and for an attachment the message does not have."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        message, _ = await _decided_message(guard, READ_RECALLED, message_id)
        record = await uow.recalls.legal_record(message.id)
        if record is None:
            raise NotFound("message", "This message was not recalled.")
        file = await uow.attachments.file(message.id, attachment_id)
        if file is None:
            raise NotFound("attachment")
        # One record per read: which file of whose recall, by its hash (never its name or bytes).
        guard.annotate(
            read_recalled_content=1,
            recalled_by=record.recalled_by,
            attachment_id=file.attachment.id,
            attachment_sha256=file.attachment.sha256,
            attachment_size=file.attachment.size,
            attachment_type=file.attachment.content_type,
        )
        await uow.commit()
    return file


@dataclass(frozen=True)
class CorrectMessage:
    message_id: int
    text: str


async def correct_message(services: Services, actor: Actor, cmd: CorrectMessage) -> Message:
    """Send a correction of a message (``message.correct``): a new message from the original's
    sender in its conversation, delivered like any other, naming the original (which names it).
    404 for a message the actor may not know of, 403 with the reason for one they may (not the
    sender, no longer a member), 409 when the message has a correction already, 422 for a blank text."""
    if not cmd.text.strip() or len(cmd.text) > MAX_TEXT:
        raise InvalidInput([FieldError("message", f"Write 1 to {MAX_TEXT} characters.")])
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        original, conversation = await _decided_message(guard, CORRECT, cmd.message_id)
        if original.corrected_by_message_id is not None:
            raise Conflict("This message has a correction already.")
        correction = await uow.recalls.add_correction(original, cmd.text, at=guard.now)
        if correction is None:
            raise Conflict("This message has a correction already.")
        recipients = (
            await uow.deliveries.sms_recipients(conversation.id, conversation.patient_id)
            if conversation.external_participants
            else []
        )
        deliveries = plan_deliveries(guard, services, conversation.patient_id, correction.id, recipients)
        ids = await uow.deliveries.add(correction.id, deliveries)
        await uow.outbox.enqueue(PostMessage(conversation.id, correction.id))
        for delivery, delivery_id in zip(deliveries, ids, strict=True):
            if delivery.external_participant_id is not None and delivery.state == DeliveryState.QUEUED:
                await uow.outbox.enqueue(TextMessage(conversation.id, correction.id, delivery_id))
        guard.annotate(correction_id=correction.id)
        await uow.commit()
    services.delivery.wake()
    return replace(correction, deliveries=delivery_states(deliveries, guard.now))
