"""Conversations and messages over HTTP: start one, list and read them, send a message (safe to
retry with an ``Idempotency-Key``), read a message and its delivery state per recipient and member,
mark a conversation read up to a message."""

from __future__ import annotations

from aiohttp import web

from engine.model import Actor
from engine.workflows import conversations, messaging, read_receipts, recalls, urgent
from handlers.api_messaging import IDEMPOTENCY, idempotent
from handlers.requests import parse, path_id, query, respond, services
from handlers.routing import Endpoint
from handlers.schemas import ListQuery, PageOf
from handlers.schemas.conversations import (
    AcknowledgementPublic,
    AcknowledgeResult,
    ConversationCreate,
    ConversationDetailPublic,
    ConversationPublic,
    CorrectionRequest,
    LegalRecordPublic,
    MarkReadRequest,
    MessagePublic,
    ReadStatePublic,
    RecallRequest,
    SendMessageRequest,
)

# --- conversations -------------------------------------------------------------------------------


async def create_conversation(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, ConversationCreate)
    cmd = conversations.StartConversation(
        patient_id=body.patient_id,
        title=body.title,
        member_ids=body.member_ids,
        external_members=[
            conversations.ExternalMember(e.phone_number, e.name, e.organization_id)
            for e in body.external_members
        ],
        on_call_of=body.on_call_of,
    )

    async def run(claim: int | None) -> tuple[int, ConversationPublic]:
        created = await conversations.start_conversation(
            services(request), actor, cmd, idempotency_claim=claim
        )
        return 201, ConversationPublic.of(created)

    async def recreate(conversation_id: int) -> tuple[int, ConversationPublic]:
        detail = await conversations.get_conversation(services(request), actor, conversation_id, 0)
        return 201, ConversationPublic.of(detail.conversation)

    return await idempotent(request, actor, "conversation.create", run, recreate)


async def list_conversations(request: web.Request, actor: Actor) -> web.Response:
    q = query(request, ListQuery)
    page = await conversations.list_conversations(services(request), actor, q.cursor, q.limit)
    items = [ConversationPublic.of(c) for c in page.items]
    return respond(PageOf[ConversationPublic](items=items, next_cursor=page.next_cursor))


async def get_conversation(request: web.Request, actor: Actor) -> web.Response:
    detail = await conversations.get_conversation(services(request), actor, path_id(request, "id"))
    public = ConversationPublic.of(detail.conversation)
    body = ConversationDetailPublic(
        **public.model_dump(), messages=[MessagePublic.of(m) for m in detail.messages]
    )
    return respond(body)


async def send_message(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, SendMessageRequest)

    async def run(claim: int | None) -> tuple[int, MessagePublic]:
        message = await conversations.send_message(
            services(request),
            actor,
            body.conversation_id,
            body.message,
            idempotency_claim=claim,
            priority=body.priority,
        )
        return 202, MessagePublic.of(message)

    async def recreate(message_id: int) -> tuple[int, MessagePublic]:
        return 202, MessagePublic.of(await messaging.get_message(services(request), actor, message_id))

    return await idempotent(request, actor, "message.send", run, recreate)


async def get_message(request: web.Request, actor: Actor) -> web.Response:
    message = await messaging.get_message(services(request), actor, path_id(request, "id"))
    return respond(MessagePublic.of(message))


async def mark_read(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, MarkReadRequest)
    state = await read_receipts.mark_read(services(request), actor, path_id(request, "id"), body.message_id)
    return respond(ReadStatePublic.of(state))


async def acknowledge_message(request: web.Request, actor: Actor) -> web.Response:
    ack = await urgent.acknowledge(services(request), actor, path_id(request, "id"))
    return respond(
        AcknowledgeResult(
            message_id=ack.message_id,
            acknowledgement=AcknowledgementPublic(user_id=ack.user_id, acknowledged_at=ack.acknowledged_at),
            already_acknowledged=ack.already_acknowledged,
        )
    )


async def recall_message(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, RecallRequest)
    cmd = recalls.RecallMessage(path_id(request, "id"), body.reason)
    return respond(MessagePublic.of(await recalls.recall_message(services(request), actor, cmd)))


async def correct_message(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, CorrectionRequest)
    cmd = recalls.CorrectMessage(path_id(request, "id"), body.message)
    return respond(MessagePublic.of(await recalls.correct_message(services(request), actor, cmd)), 202)


async def read_legal_record(request: web.Request, actor: Actor) -> web.Response:
    record = await recalls.read_recalled(services(request), actor, path_id(request, "id"))
    return respond(LegalRecordPublic.of(record))


_IDEMPOTENCY = (
    "Send an `Idempotency-Key` header to make a retry safe: the same key and body answer the first "
    "request's status with what it created, read again (with `Idempotent-Replayed: true`), instead "
    "of doing it twice."
)

ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "POST",
        "/api/conversations",
        create_conversation,
        "createConversation",
        "Start a conversation about a patient",
        "conversations",
        ConversationCreate,
        ConversationPublic,
        201,
        errors=(400, 401, 403, 404, 409, 422),
        description=_IDEMPOTENCY,
        contracts=(IDEMPOTENCY,),
    ),
    Endpoint(
        "GET",
        "/api/conversations",
        list_conversations,
        "listConversations",
        "One's conversations",
        "conversations",
        response=PageOf[ConversationPublic],
        query=ListQuery,
        errors=(401, 403, 422),
    ),
    Endpoint(
        "POST",
        "/api/conversations/send-message",
        send_message,
        "sendMessage",
        "Send a message (accepted for delivery)",
        "conversations",
        SendMessageRequest,
        MessagePublic,
        202,
        errors=(400, 401, 403, 404, 409, 422),
        description=_IDEMPOTENCY,
        contracts=(IDEMPOTENCY,),
    ),
    Endpoint(
        "GET",
        "/api/conversations/{id}",
        get_conversation,
        "getConversation",
        "A conversation and its recent messages",
        "conversations",
        response=ConversationDetailPublic,
        description="With the caller's `unreadCount`, and each message's `recipients` (sent, delivered,"
        " read per member).",
    ),
    Endpoint(
        "POST",
        "/api/conversations/{id}/read",
        mark_read,
        "markConversationRead",
        "Mark the conversation read up to a message",
        "conversations",
        MarkReadRequest,
        ReadStatePublic,
        errors=(400, 401, 403, 404, 422),
        description="Decided as conversation.read. Idempotent and forward only: a message older than"
        " the caller's read state leaves it as it is and answers it (200). `messageId` must be one of"
        " this conversation's messages (422 otherwise). Not passed on to the chat provider.",
    ),
    Endpoint(
        "GET",
        "/api/messages/{id}",
        get_message,
        "getMessage",
        "A message and its delivery state per recipient",
        "conversations",
        response=MessagePublic,
        errors=(401, 403, 404, 422),
        description="Decided as conversation.read on the message's conversation. `recipients` lists"
        " every member but the sender: sent, delivered or read, with times.",
    ),
    Endpoint(
        "POST",
        "/api/messages/{id}/acknowledge",
        acknowledge_message,
        "acknowledgeMessage",
        "Acknowledge an urgent message (stops its escalation)",
        "conversations",
        response=AcknowledgeResult,
        errors=(401, 403, 404, 409, 422),
        description=(
            "Decided as message.acknowledge (a member of the patient's care team). The first "
            "acknowledgement wins and stops the escalation; a later one answers 200 showing it "
            "(`alreadyAcknowledged: true`). A routine message answers 409."
        ),
    ),
    Endpoint(
        "POST",
        "/api/messages/{id}/recall",
        recall_message,
        "recallMessage",
        "Recall a sent message (its text leaves the channel and every read; kept in the legal record)",
        "conversations",
        RecallRequest,
        MessagePublic,
        errors=(400, 401, 403, 404, 409, 422),
        description=(
            "Decided as message.recall: by default the sender within the recall window "
            "(workflows.toml `window_minutes`, 15), a compliance officer of the patient's organization "
            "at any time. A reason is always required. Texts not yet sent are cancelled; the chat "
            "channel loses the message and is told one was recalled. 409 when recalled already."
        ),
    ),
    Endpoint(
        "POST",
        "/api/messages/{id}/correct",
        correct_message,
        "correctMessage",
        "Send a correction of a message (a new message naming the one it replaces)",
        "conversations",
        CorrectionRequest,
        MessagePublic,
        202,
        errors=(400, 401, 403, 404, 409, 422),
        description=(
            "Decided as message.correct: by default only the original's sender, still a member. The "
            "correction is delivered like any message (202, queued) and shows `correctsMessageId`; the "
            "original shows `correctedByMessageId`. It does not recall the original (recall it too to "
            "take its text back). 409 when the message has a correction already."
        ),
    ),
    Endpoint(
        "GET",
        "/api/messages/{id}/legal-record",
        read_legal_record,
        "getMessageLegalRecord",
        "What a recalled message said, who recalled it, when and why",
        "conversations",
        response=LegalRecordPublic,
        errors=(401, 403, 404, 422),
        description="Decided as message.read_recalled (compliance officers); every read is audited. "
        "404 for a message that was not recalled.",
    ),
]
