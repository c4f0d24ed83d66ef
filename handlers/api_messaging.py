"""REST endpoints for the messaging capability (see README): the signed webhooks of Sendbird and
Twilio, and the ``Idempotency-Key`` handling the creating endpoints of
``handlers/api_conversations.py`` use."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from engine.errors import FieldError, InvalidInput, MalformedRequest, NotFound, Unauthenticated
from engine.model import Actor
from handlers.requests import respond
from handlers.routing import Contract, Endpoint, Header, Status
from handlers.schemas.conversations import WebhookAccepted
from integrations.effects.executor import Executor
from integrations.idempotency import Claim, IdempotencyStore, Recreate, Replay, request_hash
from integrations.sendbird import SIGNATURE_HEADER, verify_webhook_signature
from integrations.twilio import (
    EMPTY_TWIML,
    BadTwilioRequest,
    BadTwilioSignature,
    TwilioWebhookCheck,
    verified_inbound_message,
)
from integrations.twilio import SIGNATURE_HEADER as TWILIO_SIGNATURE_HEADER
from integrations.webhooks import (
    SENDBIRD,
    SMS,
    BadWebhook,
    StoredEvent,
    WebhookInbox,
    WebhookProcessor,
    inbound_sms_event,
    sendbird_event_key,
)

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"

#: What :func:`idempotent` adds to the endpoints that use it (they list it in ``contracts``).
IDEMPOTENCY = Contract(
    "idempotency key",
    request_headers=(
        Header(
            IDEMPOTENCY_HEADER,
            "Optional. The same key with the same body answers the first request's status with what "
            "it created, read again as the caller may read it now (kept for "
            "`messaging.idempotency_ttl_hours`); with a different body it is 422; while the first "
            "request is still running, 409.",
            {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
        ),
    ),
    success_headers=(
        Header(
            REPLAYED_HEADER,
            "`true` when this response is the replay of an earlier request with the same key.",
            {"type": "string", "enum": ["true"]},
        ),
    ),
    statuses=(
        Status(409, "A request with this Idempotency-Key is still running"),
        Status(422, "Idempotency-Key is malformed, or was used before with a different body"),
    ),
)


@dataclass
class MessagingResources:
    """What the messaging endpoints need, built by the composition root (``handlers.app``)."""

    inbox: WebhookInbox
    idempotency: IdempotencyStore
    webhook_token: str = field(repr=False)
    #: Executors of the effects messaging asks for (texts, SMS replies), registered with the relay.
    outbox_kinds: list[Executor[Any]] = field(default_factory=list)
    processor: WebhookProcessor | None = None
    #: Set when texts go through Twilio: how its incoming-message webhooks are checked.
    twilio: TwilioWebhookCheck | None = None


messaging_key: web.AppKey[MessagingResources] = web.AppKey("messaging_key", MessagingResources)


# --- Idempotency-Key --------------------------------------------------------------------------------

Outcome = tuple[int, BaseModel]


async def idempotent(
    request: web.Request,
    actor: Actor,
    operation: str,
    run: Callable[[int | None], Awaitable[Outcome]],
    recreate: Callable[[int], Awaitable[Outcome]],
    *,
    compared: bytes | None = None,
) -> web.Response:
    """Run ``run`` once per ``Idempotency-Key`` (if the request has one); every repeat gets its
    status with what it created read again (the key stores no copy of the answer).

    ``run`` gets the claim id to bind in its transaction; ``recreate`` rebuilds the response from the
    created resource, reading it as the actor may read it now: for every repeat of a completed
    request (its text may since have been recalled, or the actor lost access), and when the first
    request committed but died before storing its status.
    ``compared`` is what a repeat must match when the raw body cannot be compared (a multipart
    upload's boundary differs on every retry): by default the body itself.
    """
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        status, model = await run(None)
        return respond(model, status)
    if not 1 <= len(key) <= 255 or not key.isprintable() or not key.isascii():
        raise InvalidInput(
            [FieldError(IDEMPOTENCY_HEADER, "Must be 1 to 255 printable ASCII characters.", "header_invalid")]
        )
    store = request.app[messaging_key].idempotency
    raw = await request.read() if compared is None else compared
    claim = await store.claim(actor.user_id, key, operation, request_hash(operation, raw))
    if isinstance(claim, Replay | Recreate):
        # Read again as the caller may read it now: the key keeps no copy of what they once could.
        status, model = await recreate(claim.resource_id)
        if isinstance(claim, Replay):
            status = claim.status
        return web.json_response(
            model.model_dump(mode="json", by_alias=True),
            status=status,
            headers={REPLAYED_HEADER: "true"},
        )
    assert isinstance(claim, Claim)
    try:
        async with store.held(claim):
            status, model = await run(claim.id)
    except BaseException:
        await store.release(claim)
        raise
    await store.complete(claim, status)
    return respond(model, status)


# --- webhooks (public: authenticated by signature, not by bearer token) -----------------------------


async def _receive(request: web.Request, source: str, parse: Callable[[bytes], StoredEvent]) -> web.Response:
    raw = await request.read()  # the exact bytes: re-serialised JSON would not match the signature
    resources = request.app[messaging_key]
    if not verify_webhook_signature(raw, request.headers.get(SIGNATURE_HEADER), resources.webhook_token):
        raise Unauthenticated("The webhook signature is missing or does not match the body.", challenge=None)
    try:
        event = parse(raw)
    except BadWebhook as exc:
        raise MalformedRequest(
            [FieldError(str(exc), "Missing or not readable.", "webhook_invalid")],
            detail="Not a readable event.",
        ) from None
    new = await resources.inbox.store(source, event, raw)
    if new and resources.processor is not None:
        resources.processor.wake()
    return respond(WebhookAccepted(status="accepted" if new else "duplicate"))


async def sendbird_webhook(request: web.Request) -> web.Response:
    return await _receive(request, SENDBIRD, sendbird_event_key)


async def twilio_webhook(request: web.Request) -> web.StreamResponse:
    """An incoming SMS from Twilio: verified, stored once per MessageSid, answered with empty TwiML."""
    resources = request.app[messaging_key]
    check = resources.twilio
    if check is None:
        raise NotFound("webhook")  # texts do not go through Twilio here
    try:
        inbound = verified_inbound_message(
            await request.read(),
            request_url=str(request.url),
            signature=request.headers.get(TWILIO_SIGNATURE_HEADER),
            check=check,
        )
    except BadTwilioSignature:
        raise Unauthenticated(
            "The webhook signature is missing or does not match the request.", challenge=None
        ) from None
    except BadTwilioRequest as exc:
        raise MalformedRequest(
            [FieldError(str(exc), "Missing or not readable.", "webhook_invalid")],
            detail="Not a readable incoming message.",
        ) from None
    event, body = inbound_sms_event(
        inbound.message_sid,
        inbound.from_number,
        inbound.body,
        keyword=inbound.keyword.value if inbound.keyword else None,
        provider_answers_keywords=True,  # Twilio answers STOP/START/HELP and blocks opted-out numbers
    )
    if await resources.inbox.store(SMS, event, body) and resources.processor is not None:
        resources.processor.wake()
    return web.Response(text=EMPTY_TWIML, content_type="text/xml")


# --- webhook bodies (the providers' formats: snake_case, and fields we do not read are allowed) -----


class _ProviderEvent(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class SendbirdChannel(_ProviderEvent):
    channel_url: str = Field(description="The group channel the event happened in.")


class SendbirdSender(_ProviderEvent):
    user_id: str = Field(description="The Sendbird user id of the sender.")


class SendbirdMessagePayload(_ProviderEvent):
    message_id: int = Field(description="Sendbird's message id; the event's deduplication key.")
    message: str = Field(description="The message text.")
    created_at: int = Field(description="Milliseconds since the epoch.")
    custom_type: str | None = Field(None, description="caremsg's own messages are marked here.")


class SendbirdMessageSend(_ProviderEvent):
    """A member sent a message in a channel (staff writing from a Sendbird chat app)."""

    category: Literal["group_channel:message_send"] = Field(description="The event type.")
    type: str = Field(description="`MESG` for a user message; other types are ignored.")
    sdk: str | None = Field(None, description="`API` for messages caremsg itself sent; those are ignored.")
    custom_type: str | None = Field(None, description="caremsg's own messages are marked here.")
    payload: SendbirdMessagePayload = Field(description="The message.")
    channel: SendbirdChannel = Field(description="The channel it was sent in.")
    sender: SendbirdSender | None = Field(None, description="Absent for an admin message.")


class SendbirdReadUpdate(_ProviderEvent):
    user_id: str = Field(description="The Sendbird user id of the reader.")
    read_ts: int = Field(description="Milliseconds since the epoch: read up to this time.")


class SendbirdMessageRead(_ProviderEvent):
    """Members read a channel up to a time."""

    category: Literal["group_channel:message_read"] = Field(description="The event type.")
    channel: SendbirdChannel = Field(description="The channel read.")
    read_updates: list[SendbirdReadUpdate] = Field(description="Who read, up to when.")


class TwilioIncomingMessage(_ProviderEvent):
    """A text from a phone, as Twilio posts it (form-encoded): a reply, or STOP / START / HELP."""

    MessageSid: str = Field(min_length=1, description="Twilio's message id; the deduplication key.")
    AccountSid: str = Field(description="Must be caremsg's Twilio account.")
    From: str = Field(min_length=1, description="The sender's number, E.164.")
    To: str | None = Field(None, description="caremsg's number the text was sent to.")
    Body: str = Field("", description="The text as received.")
    OptOutType: str | None = Field(None, description="STOP, START or HELP when Twilio saw a keyword.")


SIGNATURE = Contract(
    "webhook signature",
    applies=lambda endpoint: endpoint.security == "webhookSignature",
    statuses=(Status(401, "The x-sendbird-signature header is missing or does not match the body"),),
)
TWILIO_SIGNATURE = Contract(
    "Twilio signature",
    applies=lambda endpoint: endpoint.security == "twilioSignature",
    statuses=(Status(401, "The X-Twilio-Signature header is missing or does not match the request"),),
)

_WEBHOOK_DESCRIPTION = (
    "Public: authenticated by `x-sendbird-signature`, the lowercase hex HMAC-SHA256 of the raw body "
    "keyed with the master API token (401 otherwise). Answers at once; the event is stored, "
    "deduplicated and processed in the background."
)

ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "POST",
        "/api/webhooks/sendbird",
        sendbird_webhook,
        "sendbirdWebhook",
        "Sendbird webhook events (message_send, message_read)",
        "webhooks",
        response=WebhookAccepted,
        public=True,
        errors=(400,),
        description=_WEBHOOK_DESCRIPTION + " Other categories are acknowledged and ignored.",
        contracts=(SIGNATURE,),
        security="webhookSignature",
        events=(
            ("sendbirdMessageSend", SendbirdMessageSend),
            ("sendbirdMessageRead", SendbirdMessageRead),
        ),
    ),
    Endpoint(
        "POST",
        "/api/webhooks/twilio",
        twilio_webhook,
        "twilioWebhook",
        "Incoming SMS from Twilio (replies and STOP/START/HELP), form-encoded",
        "webhooks",
        response=None,
        public=True,
        errors=(400, 404),
        description=(
            "Public: authenticated by `X-Twilio-Signature` (base64 HMAC-SHA1, keyed with the Auth Token,"
            " of the webhook URL followed by the POST parameters sorted by name; 401 otherwise). Stored"
            " once per `MessageSid` and answered at once with empty TwiML (`text/xml`); Twilio itself"
            " answers keywords, caremsg records the opt-out or opt-in (`OptOutType`)."
        ),
        contracts=(TWILIO_SIGNATURE,),
        security="twilioSignature",
        events=(("twilioIncomingMessage", TwilioIncomingMessage),),
        request_media_type="application/x-www-form-urlencoded",
        media_type="text/xml",
    ),
]
