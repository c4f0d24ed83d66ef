"""Attaching a file to a message, and downloading it.

Attaching (``message.attach``) is a workflow of its own, decided by the policy on the same facts as
sending a message (``member``, the patient ``covered`` under a ``message`` consent scope, or
``break_glass``): by default, the care-team members and peer support who may send in the
conversation. The file is checked before anything is decided or stored: not empty (422), no larger
than ``[messaging] attachment_max_bytes`` (413, checked by the handler while it reads), a declared
content type in ``[messaging] attachment_types`` whose first bytes match it where the type has a
signature (PDF, PNG, JPEG, GIF; 415). Then one transaction stores a new message (the optional text),
its file, its delivery rows and the outbox entry (:class:`~engine.effects.PostAttachment`) with the
audit record, which carries the file's SHA-256, size and content type, never its name (a file name
may name the patient; caremsg does not keep it).

The chat channel gets the file as a Sendbird file message. External participants are texted the
usual notification only, never the file (``sms.send_full_text`` is not asked: a text cannot carry a
file, and the file's content is not put into words).

A download (``GET /api/messages/{id}/attachments/{attachmentId}``) is decided as
``conversation.read``, like the message itself. A recalled message's attachment is not downloaded
(404): its bytes stay only in caremsg's table, as part of the legal record, and its chat copy is
deleted by the recall.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from engine.decisions import Fact
from engine.effects import PostAttachment, TextMessage
from engine.errors import FieldError, FileTypeRefused, InvalidInput, NotFound
from engine.facts import sms_refusal
from engine.model import Actor, AttachmentFile, DeliveryState, Message
from engine.ports.attachments import NewAttachment
from engine.ports.messaging import NewDelivery, SmsRecipient
from engine.ports.units import AttachmentsUnitOfWork
from engine.services import Guard, Services
from engine.sms import CHANNEL_RECIPIENT, NOTIFICATION, sms_recipient, textable
from engine.workflows.conversation_access import conversation_facts, readable_conversation
from engine.workflows.messaging import delivery_states, record_disclosures

ATTACH = "message.attach"
MAX_TEXT = 4000

#: The first bytes of the content types that have a signature: a file declared as one of these must
#: start with it (a declared PDF that is an executable is refused).
SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "application/pdf": (b"%PDF-",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
}


def _unit_of_work(services: Services) -> AttachmentsUnitOfWork:
    """This family's view of the unit of work: only the repositories its workflows use."""
    return services.uow()


def checked_file(content_type: str, data: bytes, allowed: Sequence[str]) -> NewAttachment:
    """The file as it will be stored, or the reason it is refused: 422 when empty, 415 when its
    declared type is not allowed or its first bytes do not match it. (413 is the reader's.)"""
    declared = content_type.split(";", 1)[0].strip().lower()
    if not data:
        raise InvalidInput([FieldError("file", "Attach a file that is not empty.", "missing")])
    if declared not in {a.lower() for a in allowed}:
        raise FileTypeRefused(
            [FieldError("file", f"Allowed types: {', '.join(allowed)}.", "unsupported_media_type")],
            "This type of file is not accepted.",
        )
    signatures = SIGNATURES.get(declared)
    if signatures is not None and not data.startswith(signatures):
        raise FileTypeRefused(
            [FieldError("file", "The file's content does not match its type.", "unsupported_media_type")],
            "This type of file is not accepted.",
        )
    return NewAttachment(declared, hashlib.sha256(data).hexdigest(), data)


@dataclass(frozen=True)
class AttachFile:
    conversation_id: int
    content_type: str
    data: bytes = field(repr=False)
    text: str = field(default="", repr=False)


async def attach_file(
    services: Services,
    actor: Actor,
    cmd: AttachFile,
    *,
    allowed_types: Sequence[str],
    idempotency_claim: int | None = None,
) -> Message:
    """Send a new message carrying a file (``message.attach``): stored with its delivery rows and
    outbox entries in one transaction with the audit record (SHA-256, size, type); the relay posts
    the file to the channel and texts external participants a notification. 404 for a conversation
    the actor may not know of, 403 with the reason for one they may, 413/415/422 for the file.
    ``idempotency_claim`` (an Idempotency-Key the handler claimed) is bound to the new message in
    the same transaction, so a retry after a lost response is answered from it."""
    if len(cmd.text) > MAX_TEXT:
        raise InvalidInput([FieldError("message", f"Write at most {MAX_TEXT} characters.")])
    file = checked_file(cmd.content_type, cmd.data, allowed_types)
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        conversation = await readable_conversation(guard, ATTACH, cmd.conversation_id)
        message, attachment = await uow.attachments.add(
            conversation.id, actor.user_id, cmd.text.strip(), file, at=guard.now
        )
        if idempotency_claim is not None:
            await uow.idempotency_keys.bind(idempotency_claim, message.id)
        # The decision's record is the attachment's: what was attached, never its name or content.
        guard.annotate(
            message_id=message.id,
            attachment_id=attachment.id,
            attachment_sha256=attachment.sha256,
            attachment_size=attachment.size,
            attachment_type=attachment.content_type,
        )
        recipients = (
            await uow.deliveries.sms_recipients(conversation.id, conversation.patient_id)
            if conversation.external_participants
            else []
        )
        # A file to other organizations' staff is a disclosure like a text, under their consents.
        organizations = await uow.conversations.recipient_organizations(conversation.id, actor.user_id)
        disclosed = (conversation.patient_id, conversation.id, message.id)
        record_disclosures(guard, ATTACH, disclosed, organizations)
        deliveries = [NewDelivery(CHANNEL_RECIPIENT, DeliveryState.QUEUED)]
        for r in recipients:
            if r.removed:
                continue
            facts, _ = guard.external_facts(
                "sms.send_full_text",
                r.consents,
                compliance_group_ids=r.compliance_group_ids,
                full_text_group_ids=guard.policy.sms_full_text_groups,
            )
            reason = _refusal(r, facts)
            recipient = sms_recipient(r.participant_id)
            deliveries.append(
                NewDelivery(recipient, DeliveryState.FAILED, r.participant_id, reason)
                if reason is not None
                # A file is never texted: the external participant learns there is a message.
                else NewDelivery(recipient, DeliveryState.QUEUED, r.participant_id, content=NOTIFICATION)
            )
        ids = await uow.deliveries.add(message.id, deliveries)
        await uow.outbox.enqueue(PostAttachment(conversation.id, message.id, attachment.id))
        for delivery, delivery_id in zip(deliveries, ids, strict=True):
            if delivery.external_participant_id is not None and delivery.state == DeliveryState.QUEUED:
                await uow.outbox.enqueue(TextMessage(conversation.id, message.id, delivery_id))
        await uow.commit()
    services.delivery.wake()
    return replace(message, attachments=(attachment,), deliveries=delivery_states(deliveries, guard.now))


def _refusal(r: SmsRecipient, facts: frozenset[str] | set[str]) -> str | None:
    """Why an external participant gets no text about it (the same reasons as any message's)."""
    return sms_refusal(
        removed=r.removed,
        opted_out=r.opted_out,
        consented=Fact.EXTERNAL_CONSENT in facts,
        textable=textable(r.phone_number),
    )


async def read_attachment(
    services: Services, actor: Actor, message_id: int, attachment_id: int
) -> AttachmentFile:
    """One attachment's bytes, decided as ``conversation.read`` on the message's conversation (404
    for a message the actor may not know of, for an attachment it does not have, and for a recalled
    message's: its file left ordinary reads with its text)."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)

        async def facts_of() -> frozenset[str] | None:
            found = await uow.messages.get(message_id)
            conversation = None if found is None else await uow.conversations.get(found.conversation_id)
            if conversation is None:
                return None
            facts, _ = await conversation_facts(
                guard, "conversation.read", conversation, unknown_as="message"
            )
            return facts

        await guard.require_role_recording_facts(
            "conversation.read", facts_of, resource_type="message", resource_id=message_id
        )
        message = await uow.messages.get(message_id)
        if message is None:
            guard.record_missing("conversation.read", "message", message_id)
            raise NotFound("message")
        await readable_conversation(
            guard, "conversation.read", message.conversation_id, unknown_as="message", sent_id=message_id
        )
        file = None if message.recalled else await uow.attachments.file(message_id, attachment_id)
        if file is None:
            raise NotFound("attachment")
        guard.annotate(attachment_id=attachment_id, attachment_sha256=file.attachment.sha256)
        await uow.commit()
    return file
