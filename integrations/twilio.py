"""``SmsGateway`` on Twilio Programmable Messaging: texts out, replies and keywords in.

Twilio documents both directions, which Sendbird Business Messaging does not (sendbird-api.md §8:
BM has no inbound SMS event), so this is the two-way SMS adapter. What is relied on, from Twilio's
documentation (twilio.com/docs/messaging/api/message-resource, /docs/usage/security,
/docs/messaging/guides/webhook-request, help.twilio.com "Advanced Opt-Out" and "OptOutType"):

- **Send**: ``POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json``, HTTP Basic auth
  (Account SID : Auth Token), form-encoded ``To`` (E.164), ``From`` (a Twilio number) or
  ``MessagingServiceSid``, ``Body``. 201 with the Message resource (``sid``, ``status``...). Errors
  are ``{"code", "message", "more_info", "status"}``: 21610 the recipient texted STOP (Twilio
  blocks every later text to them), 21211/21614 not a valid (mobile) number, 20003 bad credentials,
  20005 the account is not active (twilio.com/docs/api/errors/20005), 429/20429 too many
  requests. There is no idempotency key: a text retried after an ambiguous failure may arrive
  twice (at least once, never lost).
- **Receive**: Twilio POSTs the inbound message form-encoded to the number's (or Messaging
  Service's) webhook: ``MessageSid``, ``AccountSid``, ``From``, ``To``, ``Body``, ... and, with
  Advanced Opt-Out on a Messaging Service, ``OptOutType`` = ``STOP`` | ``START`` | ``HELP`` when the
  whole body is a keyword. Twilio itself answers keywords and blocks an opted-out number, so
  caremsg records the opt-out (or opt-in) and texts nothing back.
- **Signature** ``X-Twilio-Signature``: base64 of HMAC-SHA1, keyed with the Auth Token, of the full
  URL Twilio called (scheme, host, path, query) followed by every POST parameter sorted by name, as
  name + value with no separators. The URL must be the one Twilio used: behind a proxy, configure it
  (``messaging.twilio_webhook_url``). As Twilio's own helper libraries do, the URL is also tried
  with and without the default port.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx

from engine.errors import (
    ChatCredentialsRejected,
    ChatGatewayError,
    ChatInvalidRequest,
    ChatRateLimited,
    ChatUnavailable,
)
from engine.sms import Keyword
from integrations.sendbird import TokenBucket

DEFAULT_BASE_URL: Final = "https://api.twilio.com"
API_VERSION: Final = "2010-04-01"
SIGNATURE_HEADER: Final = "X-Twilio-Signature"

UNSUBSCRIBED_RECIPIENT: Final = 21610  # the recipient texted STOP: Twilio refuses every later text
INVALID_TO_NUMBER: Final = 21211
NOT_A_MOBILE_NUMBER: Final = 21614
AUTHENTICATION_FAILED: Final = 20003
ACCOUNT_NOT_ACTIVE: Final = 20005  # suspended, or out of funds: no text goes out until it is fixed
TOO_MANY_REQUESTS: Final = 20429

#: ``OptOutType`` values (Advanced Opt-Out) and what they mean to caremsg.
OPT_OUT_TYPES: Final[Mapping[str, Keyword]] = {
    "STOP": Keyword.STOP,
    "START": Keyword.START,
    "HELP": Keyword.HELP,
}


def messages_path(account_sid: str) -> str:
    """The Messages list resource of an account (create = POST)."""
    return f"/{API_VERSION}/Accounts/{account_sid}/Messages.json"


class TwilioSmsGateway:
    """:class:`engine.ports.SmsGateway` over Twilio's Messages API, on an injected ``httpx.AsyncClient``.

    Texts go out ``From`` one number or through a Messaging Service (which is what Advanced Opt-Out
    needs). Its rate budget is its own (``per_second``), apart from the chat API's.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str = "",
        messaging_service_sid: str = "",
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 5.0,
        per_second: float = 5.0,
    ) -> None:
        if not account_sid or not auth_token:
            raise ValueError("account_sid and auth_token are required")
        if not (from_number or messaging_service_sid):
            raise ValueError("from_number or messaging_service_sid is required")
        self._http = http
        self._url = base_url.rstrip("/") + messages_path(account_sid)
        self._auth = httpx.BasicAuth(account_sid, auth_token)
        self._sender = (
            {"MessagingServiceSid": messaging_service_sid} if messaging_service_sid else {"From": from_number}
        )
        self._timeout = timeout
        self._bucket = TokenBucket(per_second)

    async def send_sms(self, *, recipient_user_id: str, phone_number: str, text: str) -> str:
        """Text ``phone_number``; returns the Message SID. ``recipient_user_id`` is not needed by Twilio."""
        form = {"To": phone_number, **self._sender, "Body": text}
        await self._bucket.acquire()
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._http.post(
                    self._url,
                    data=form,
                    auth=self._auth,
                    headers={"Accept": "application/json"},
                    timeout=self._timeout,
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ChatUnavailable("Twilio send timed out") from exc
        except httpx.HTTPError as exc:
            raise ChatUnavailable(f"Twilio send failed: {type(exc).__name__}") from exc
        reply = _json_or_none(response)
        if response.status_code in (200, 201) and isinstance(reply, dict):
            sid = reply.get("sid")
            if isinstance(sid, str) and sid:
                return sid
            raise ChatUnavailable("Twilio reply has no message sid")
        raise _error_for(response.status_code, reply)


class SmsNotSent(ChatGatewayError):
    """Twilio refused this text for good: ``code`` is the delivery's reason (opted_out, invalid_number)."""

    retryable = False

    def __init__(self, reason: str, *, provider_code: int | None, status: int) -> None:
        super().__init__(f"Twilio refused the text: {reason}", provider_code=provider_code, status=status)
        self.code = reason


def _error_for(status: int, reply: Any) -> ChatGatewayError:
    """Map a Twilio error reply (its ``code`` first, then the HTTP status) to the error tree.

    The error's ``message`` is not copied: it can echo the phone number.
    """
    code = reply.get("code") if isinstance(reply, dict) else None
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    if status == 429 or code == TOO_MANY_REQUESTS:
        return ChatRateLimited("Twilio send was rate limited", provider_code=code, status=status)
    if code == UNSUBSCRIBED_RECIPIENT:
        return SmsNotSent("opted_out", provider_code=code, status=status)
    if code in (INVALID_TO_NUMBER, NOT_A_MOBILE_NUMBER):
        return SmsNotSent("invalid_number", provider_code=code, status=status)
    if code in (AUTHENTICATION_FAILED, ACCOUNT_NOT_ACTIVE) or (code is None and status in (401, 403)):
        # Our account or its credentials are refused, whatever the text: Twilio is out of reach for
        # caremsg until an operator fixes them, so the text waits as in an outage (not refused).
        return ChatCredentialsRejected(
            f"Twilio refused our credentials (code {code}, HTTP {status})",
            provider="twilio",
            provider_code=code,
            status=status,
        )
    if status >= 500 or reply is None:
        return ChatUnavailable(f"Twilio send failed (HTTP {status})", provider_code=code, status=status)
    return ChatInvalidRequest(f"Twilio send was refused (code {code})", provider_code=code, status=status)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------------
# X-Twilio-Signature
# --------------------------------------------------------------------------------------------------


def _pairs(params: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    items = params.items() if isinstance(params, Mapping) else params
    return [(str(k), str(v)) for k, v in items]


def sign_request(url: str, params: Mapping[str, str] | Iterable[tuple[str, str]], auth_token: str) -> str:
    """The ``X-Twilio-Signature`` of a form POST to ``url`` with ``params``.

    base64(HMAC-SHA1(auth token, url + name1 + value1 + name2 + value2 ...)), parameters sorted by
    name (a repeated name: its values sorted too, as Twilio's helper libraries do).
    """
    if not auth_token:
        raise ValueError("auth_token is required to sign a Twilio request")
    payload = url + "".join(k + v for k, v in sorted(set(_pairs(params))))
    digest = hmac.new(auth_token.encode("utf-8"), payload.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_request(
    url: str,
    params: Mapping[str, str] | Iterable[tuple[str, str]],
    signature: str | None,
    auth_token: str,
) -> bool:
    """True only if ``signature`` is the one Twilio computes for this URL and these POST parameters.

    The URL is also tried with its default port added or removed (Twilio's helpers do the same:
    what Twilio signed depends on how the webhook URL was written). Constant-time comparison.
    """
    if not signature:
        return False
    pairs = _pairs(params)
    expected = signature.encode("ascii", errors="replace")
    return any(
        hmac.compare_digest(sign_request(candidate, pairs, auth_token).encode("ascii"), expected)
        for candidate in _url_variants(url)
    )


def _url_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    variants = [url]
    if default is None or parts.hostname is None:
        return variants
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if parts.port is None:
        variants.append(urlunsplit(parts._replace(netloc=f"{host}:{default}")))
    elif parts.port == default:
        variants.append(urlunsplit(parts._replace(netloc=host)))
    return variants


# --------------------------------------------------------------------------------------------------
# Inbound messages
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TwilioInbound:
    """What caremsg reads of an incoming-message webhook."""

    message_sid: str
    from_number: str = ""
    body: str = ""
    #: Twilio's own reading of a keyword (``OptOutType``, Advanced Opt-Out), if it sent one.
    keyword: Keyword | None = None


@dataclass(frozen=True)
class TwilioWebhookCheck:
    """What checking an incoming-message webhook needs: the account, its Auth Token, and the webhook
    URL exactly as configured at Twilio (empty: the URL the request arrived at)."""

    account_sid: str
    auth_token: str = field(repr=False)
    webhook_url: str = ""


class BadTwilioRequest(ValueError):
    """A correctly signed request that is not an incoming message: ``str(exc)`` names the field."""


class BadTwilioSignature(ValueError):
    """``X-Twilio-Signature`` is missing or does not match the URL and parameters."""


def verified_inbound_message(
    raw: bytes, *, request_url: str, signature: str | None, check: TwilioWebhookCheck
) -> TwilioInbound:
    """The incoming message of a webhook request body, after its signature is checked.

    :class:`BadTwilioSignature` if the signature does not hold (for ``check.webhook_url``, else the
    URL the request arrived at), :class:`BadTwilioRequest` naming the field if it is no message.
    """
    try:
        params = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        params = []
    if not verify_request(check.webhook_url or request_url, params, signature, check.auth_token):
        raise BadTwilioSignature("X-Twilio-Signature")
    # The signature covers a repeated parameter's values sorted, not their order, while a dict keeps
    # the last one: reordering them would keep the signature and change what is read. Twilio sends
    # each parameter once, so a repeat is refused.
    seen: set[str] = set()
    for name, _ in params:
        if name in seen:
            raise BadTwilioRequest(name if not _CONTROL.search(name) else "body")
        seen.add(name)
    return inbound_message(dict(params), account_sid=check.account_sid)


def inbound_message(params: Mapping[str, str], *, account_sid: str) -> TwilioInbound:
    """The incoming message a (verified) webhook carries; :class:`BadTwilioRequest` naming the field."""
    sid = params.get("MessageSid") or params.get("SmsMessageSid") or ""
    if not sid or _CONTROL.search(sid):
        raise BadTwilioRequest("MessageSid")
    if params.get("AccountSid") != account_sid:
        raise BadTwilioRequest("AccountSid")
    from_number = params.get("From", "")
    if not from_number or _CONTROL.search(from_number):
        raise BadTwilioRequest("From")
    opt_out_type = params.get("OptOutType", "").upper()
    # A text is kept, but not the control characters PostgreSQL cannot store (NUL) or a reader
    # cannot see: only tab and line breaks survive.
    body = _CONTROL.sub("", params.get("Body", ""))
    return TwilioInbound(sid, from_number, body, OPT_OUT_TYPES.get(opt_out_type))


#: NUL and the other control characters but tab and line breaks.
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


#: What Twilio expects back from a messaging webhook when it should send no reply: empty TwiML.
EMPTY_TWIML: Final = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
