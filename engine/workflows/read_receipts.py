"""Read receipts: a member's read state in a conversation, per member, only ever forward.

A member marks a conversation read up to a message from a caremsg client
(``POST /api/conversations/:id/read``), or reads it in a chat client, whose read receipt arrives as
the chat provider's ``message_read`` event (:func:`record_chat_read`, called by the messaging
family's ``chat_read``). Both are decided as ``conversation.read``: whoever may read the
conversation may say they read it, and a read mark discloses nothing they could not read. Both
record the same thing (``conversation_reads``): the last message read and when. A mark that would go
back (an older message, a late receipt) leaves the state as it is, so the answer is the same however
often or in whatever order marks arrive.

caremsg does not pass a mark from its own API on to the chat provider: Sendbird's documented
``mark_as_read`` marks the whole channel read, not up to a message, and would come back as a
``message_read`` event that moves the mark past messages the member never saw (README, "Read
receipts").

The audit record of each mark is the decision's, with the message read up to (``read_up_to``),
whether the state moved (``read_moved``) and, for a chat receipt, ``via: chat_app``: ids only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from engine.errors import FieldError, InvalidInput
from engine.model import Actor, Conversation, ReadMark, Role
from engine.ports.units import MessagingUnitOfWork, ReadReceiptsUnitOfWork
from engine.services import Guard, Services
from engine.workflows.conversation_access import conversation_facts, readable_conversation, with_unread_counts

#: Where a mark came from (``conversation_reads.source``).
API, CHAT = "api", "chat"

WORKFLOW = "conversation.read"


def _unit_of_work(services: Services) -> ReadReceiptsUnitOfWork:
    """This family's view of the unit of work: only the repositories its workflows use."""
    return services.uow()


@dataclass(frozen=True)
class ReadState:
    """A member's read state in a conversation after a mark, and what they have still not read."""

    mark: ReadMark
    unread_count: int


async def mark_read(services: Services, actor: Actor, conversation_id: int, message_id: int) -> ReadState:
    """Mark the conversation read up to ``message_id`` for the actor; decided as ``conversation.read``.

    The message must be one of this conversation's (else 422 naming ``messageId``, the same for an id
    nobody has); a conversation the actor has no relation to answers 404. Idempotent and forward
    only: an older message leaves the state as it is and answers it.
    """
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        conversation = await readable_conversation(guard, WORKFLOW, conversation_id)
        message = await uow.messages.get(message_id)
        if message is None or message.conversation_id != conversation.id:
            guard.record_missing(WORKFLOW, "message", message_id)
            raise InvalidInput(
                [FieldError("messageId", "No such message in this conversation.", "not_found")]
            )
        mark, moved = await uow.reads.mark(conversation.id, actor.user_id, message.id, guard.now, API)
        guard.annotate(read_up_to=message.id, read_moved=moved)
        (counted,) = await with_unread_counts(uow, actor.user_id, [conversation])
        await uow.commit()
    return ReadState(mark, counted.unread_count or 0)


async def record_chat_read(
    services: Services,
    uow: MessagingUnitOfWork,
    conversation: Conversation,
    reader_chat_id: str,
    read_ts_ms: int,
    event_id: int,
) -> bool:
    """A chat client's read receipt: the member read the channel up to ``read_ts_ms``, so up to the
    latest message the chat provider took by then. Counted only if the reader is an active member
    and ``conversation.read`` allows them: then the channel deliveries of others' messages the
    receipt covers become ``delivered`` (a message is delivered when a member reads it) and the
    member's mark moves (source ``chat``); returns whether the mark moved.

    Anyone else is not a member here (an external SMS participant's chat user, caremsg's own system
    user, a deactivated or removed member, a stranger): their receipt changes nothing, neither the
    marks nor the deliveries.
    """
    reader = await uow.users.by_chat_id(reader_chat_id)
    if reader is None or not reader.is_active or reader.id not in conversation.member_ids:
        return False
    message_id = await uow.reads.last_in_channel_by(conversation.id, read_ts_ms)
    if message_id is None:
        return False
    actor = Actor(reader.id, Role(reader.role), reader.organization_id, request_id=f"webhook-{event_id}")
    guard = Guard(services, uow, actor)
    facts, details = await conversation_facts(guard, WORKFLOW, conversation)
    if not guard.permits(
        WORKFLOW,
        facts,
        resource_type="conversation",
        resource_id=conversation.id,
        patient_id=conversation.patient_id,
        details={**details, "via": "chat_app", "read_up_to": message_id},
    ):
        return False
    await uow.deliveries.mark_read(conversation.id, reader_chat_id, read_ts_ms)
    # When they read: the receipt's own time (never later than now: a skewed clock cannot post-date it).
    at = min(datetime.fromtimestamp(read_ts_ms / 1000, UTC), guard.now)
    _, moved = await uow.reads.mark(conversation.id, reader.id, message_id, at, CHAT)
    guard.annotate(read_moved=moved)
    return moved
