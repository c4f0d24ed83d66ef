"""REST endpoints for the messaging capability (see README): message status, signed webhooks, and the
``Idempotency-Key`` handling the two creating endpoints of ``handlers.api`` use."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from engine.errors import FieldError, InvalidInput, MalformedRequest, NotFound, Unauthenticated
from engine.model import Actor
from engine.workflows import messaging
from handlers.routing import Endpoint, path_id, respond, services
from handlers.schemas import MessagePublic, WebhookAccepted
from integrations.idempotency import Claim, IdempotencyStore, Recreate, Replay, request_hash
from integrations.relay import OutboxKind
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
    WebhookProcessor,
    inbound_sms_event,
    sendbird_event_key,
    store_event,
)

IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass
class MessagingResources:
    """What the messaging endpoints need, built by the composition root (``handlers.app``)."""

    sessions: async_sessionmaker[AsyncSession]
    idempotency: IdempotencyStore
    webhook_token: str = field(repr=False)
    outbox_kinds: list[OutboxKind] = field(default_factory=list)
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
) -> web.Response:
    """Run ``run`` once per ``Idempotency-Key`` (if the request has one) and replay its response.

    ``run`` gets the claim id to bind in its transaction; ``recreate`` rebuilds the response from the
    created resource when the first request committed but died before storing its response.
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
    claim = await store.claim(actor.user_id, key, operation, request_hash(operation, await request.read()))
    if isinstance(claim, Replay):
        return web.json_response(claim.body, status=claim.status, headers={"Idempotent-Replayed": "true"})
    if isinstance(claim, Recreate):
        status, model = await recreate(claim.resource_id)
        return web.json_response(
            model.model_dump(mode="json", by_alias=True),
            status=status,
            headers={"Idempotent-Replayed": "true"},
        )
    assert isinstance(claim, Claim)
    try:
        async with store.held(claim):
            status, model = await run(claim.id)
    except BaseException:
        await store.release(claim)
        raise
    body = model.model_dump(mode="json", by_alias=True)
    await store.complete(claim, status, body)
    return web.json_response(body, status=status)


# --- message status ---------------------------------------------------------------------------------


async def get_message(request: web.Request, actor: Actor) -> web.Response:
    message = await messaging.get_message(services(request), actor, path_id(request, "id"))
    return respond(MessagePublic.of(message))


# --- webhooks (public: authenticated by signature, not by bearer token) -----------------------------


async def _receive(request: web.Request, source: str, parse: Callable[[bytes], StoredEvent]) -> web.Response:
    raw = await request.read()  # the exact bytes: re-serialised JSON would not match the signature
    resources = request.app[messaging_key]
    if not verify_webhook_signature(raw, request.headers.get(SIGNATURE_HEADER), resources.webhook_token):
        raise Unauthenticated("The webhook signature is missing or does not match the body.")
    try:
        event = parse(raw)
    except BadWebhook as exc:
        raise MalformedRequest(
            [FieldError(str(exc), "Missing or not readable.", "webhook_invalid")],
            detail="Not a readable event.",
        ) from None
    new = await store_event(resources.sessions, source, event, raw)
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
        raise Unauthenticated("The webhook signature is missing or does not match the request.") from None
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
    if await store_event(resources.sessions, SMS, event, body) and resources.processor is not None:
        resources.processor.wake()
    return web.Response(text=EMPTY_TWIML, content_type="text/xml")


_WEBHOOK_DESCRIPTION = (
    "Public: authenticated by `x-sendbird-signature`, the lowercase hex HMAC-SHA256 of the raw body "
    "keyed with the master API token (401 otherwise). Answers at once; the event is stored, "
    "deduplicated and processed in the background."
)

ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "GET",
        "/api/messages/{id}",
        get_message,
        "getMessage",
        "A message and its delivery state per recipient",
        "conversations",
        response=MessagePublic,
        errors=(401, 403, 404, 422),
        description="Decided as conversation.read on the message's conversation.",
    ),
    Endpoint(
        "POST",
        "/api/webhooks/sendbird",
        sendbird_webhook,
        "sendbirdWebhook",
        "Sendbird webhook events (message_send, message_read)",
        "webhooks",
        response=WebhookAccepted,
        public=True,
        errors=(400, 401),
        description=_WEBHOOK_DESCRIPTION,
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
        errors=(400, 401, 404),
        description=(
            "Public: authenticated by `X-Twilio-Signature` (base64 HMAC-SHA1, keyed with the Auth Token,"
            " of the webhook URL followed by the POST parameters sorted by name; 401 otherwise). Stored"
            " once per `MessageSid` and answered at once with empty TwiML (`text/xml`); Twilio itself"
            " answers keywords, caremsg records the opt-out or opt-in (`OptOutType`)."
        ),
    ),
]
