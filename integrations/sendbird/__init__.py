"""Sendbird Platform API (chat v3) client, the ``ChatGateway`` adapter on top of it, and webhook signatures.

The contract followed here is Sendbird's Platform API documentation (chat v3); the § numbers below
are the sections of docs/sendbird-api.md, the team's notes on it with a source per fact.
Three layers, each usable on its own, one module each (``wire.py`` holds what they share: error
codes, typed replies, the reply-to-error rule; ``rate.py`` the client-side token bucket):

- :class:`SendbirdClient` (``client.py``) speaks HTTP to ``{base_url}/v3/...`` over an injected
  ``httpx.AsyncClient``. Every call has a total time budget, passes a client-side token bucket
  first, retries only on rate limiting (HTTP 429 / code 500910, where Sendbird has done nothing),
  and turns every failure into an :class:`engine.errors.ChatGatewayError` subclass.
- :class:`SendbirdChatGateway` (``gateway.py``) implements :class:`engine.ports.ChatGateway` with
  "create what is missing" semantics, so the outbox relay may retry any call.
- :func:`sign_webhook` / :func:`verify_webhook_signature` (``webhooks.py``) implement the
  ``x-sendbird-signature`` rule of §7: lowercase hex HMAC-SHA256 of the raw body bytes, keyed with
  the master API token.

No exception message or log line carries message text, ``data`` or phone numbers: those may be PHI.
Provider error messages are not copied either, because they can echo request values.
"""

from integrations.sendbird.client import ListedType, MessageType, SendbirdClient
from integrations.sendbird.gateway import UNKNOWN_MESSAGE_ID, SendbirdChatGateway
from integrations.sendbird.rate import RateLimits, TokenBucket
from integrations.sendbird.webhooks import SIGNATURE_HEADER, sign_webhook, verify_webhook_signature
from integrations.sendbird.wire import (
    ALREADY_EXISTS_CODE,
    INVALID_TOKEN_CODE,
    NOT_FOUND_CODE,
    RATE_LIMITED_CODE,
    RETRY_AFTER_HEADER,
    UNAUTHORIZED_CODE,
    SendbirdGroupChannel,
    SendbirdMessage,
    SendbirdUser,
    reply_body,
)

__all__ = [
    "ALREADY_EXISTS_CODE",
    "INVALID_TOKEN_CODE",
    "NOT_FOUND_CODE",
    "RATE_LIMITED_CODE",
    "RETRY_AFTER_HEADER",
    "SIGNATURE_HEADER",
    "UNAUTHORIZED_CODE",
    "UNKNOWN_MESSAGE_ID",
    "ListedType",
    "MessageType",
    "RateLimits",
    "SendbirdChatGateway",
    "SendbirdClient",
    "SendbirdGroupChannel",
    "SendbirdMessage",
    "SendbirdUser",
    "TokenBucket",
    "reply_body",
    "sign_webhook",
    "verify_webhook_signature",
]
