"""Sendbird Platform API (chat v3) client, the ``ChatGateway`` adapter on top of it, and webhook signatures.

The contract followed here is Sendbird's Platform API documentation (chat v3); the § numbers below
are the sections of docs/sendbird-api.md, the team's notes on it with a source per fact.
Three layers, each usable on its own:

- :class:`SendbirdClient` speaks HTTP to ``{base_url}/v3/...`` over an injected ``httpx.AsyncClient``.
  Every call has a total time budget, passes a client-side token bucket first, retries only on
  rate limiting (HTTP 429 / code 500910, where Sendbird has done nothing), and turns every failure
  into an :class:`engine.errors.ChatGatewayError` subclass.
- :class:`SendbirdChatGateway` implements :class:`engine.ports.ChatGateway` with "create what is
  missing" semantics, so the outbox relay may retry any call.
- :func:`sign_webhook` / :func:`verify_webhook_signature` implement the ``x-sendbird-signature``
  rule of §7: lowercase hex HMAC-SHA256 of the raw body bytes, keyed with the master API token.

No exception message or log line carries message text, ``data`` or phone numbers: those may be PHI.
Provider error messages are not copied either, because they can echo request values.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import quote

import httpx
import structlog

from engine.errors import (
    ChatAlreadyExists,
    ChatGatewayError,
    ChatInvalidRequest,
    ChatNotFound,
    ChatRateLimited,
    ChatUnavailable,
)
from engine.ports import SentChatMessage

_log = structlog.get_logger(__name__)

MessageType = Literal["MESG", "ADMM"]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Sendbird error codes that change what we do (§2 "Codes that matter").
NOT_FOUND_CODE: Final = 400201
ALREADY_EXISTS_CODE: Final = 400202
INVALID_TOKEN_CODE: Final = 400401
UNAUTHORIZED_CODE: Final = 400108
RATE_LIMITED_CODE: Final = 500910

RETRY_AFTER_HEADER: Final = "X-RateLimit-RetryAfter"
SIGNATURE_HEADER: Final = "x-sendbird-signature"

# What ``SendbirdChatGateway.send_message`` reports when Sendbird refused a duplicate ``dedup_id`` and
# the original message could not be found again: the message was delivered, its id is not known.
UNKNOWN_MESSAGE_ID: Final = 0

# Sendbird caps list_messages' prev_limit/next_limit at 200 (§2 "Pagination").
_MAX_MESSAGE_PAGE: Final = 200
# How far back the gateway looks for the original of a refused duplicate, and how much clock skew
# between us and Sendbird it allows for when anchoring that search at "now".
_DUPLICATE_LOOKBACK: Final = 100
# A day: a false "not posted" (anchor behind Sendbird's clock, newest messages missed) would post twice,
# while anchoring later than needed costs nothing (the page is the newest messages before it).
_CLOCK_SKEW_MS: Final = 86_400_000


# --------------------------------------------------------------------------------------------------
# Replies as small typed values
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendbirdUser:
    """A Sendbird user as the API last reported it. ``phone_number`` is kept out of ``repr``."""

    user_id: str
    nickname: str
    profile_url: str
    phone_number: str | None = field(repr=False)
    metadata: Mapping[str, str]
    is_active: bool
    created_at_ms: int


@dataclass(frozen=True)
class SendbirdGroupChannel:
    """A group channel. ``member_ids`` is empty when the reply did not list members."""

    channel_url: str
    name: str
    custom_type: str
    data: str = field(repr=False)
    member_ids: tuple[str, ...]
    operator_ids: tuple[str, ...]
    is_frozen: bool
    member_count: int
    created_at_ms: int


@dataclass(frozen=True)
class SendbirdMessage:
    """One message. ``sender_id`` is ``None`` for admin (ADMM) messages; text and data stay out of repr."""

    message_id: int
    channel_url: str
    message_type: str
    message: str = field(repr=False)
    custom_type: str
    data: str = field(repr=False)
    sender_id: str | None
    created_at_ms: int
    is_removed: bool


# --------------------------------------------------------------------------------------------------
# Client-side rate limiting
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimits:
    """Requests per second the client allows itself, per endpoint class.

    Defaults are Sendbird's free-trial plan (§2 "Rate limits": GET 10/s, POST/PUT/DELETE 5/s).
    Sendbird counts per endpoint; one bucket for all writes is stricter, hence never over any single
    endpoint's limit. ``burst`` 1 spaces calls evenly, so no one-second window sees more than the
    rate, whichever way Sendbird aligns its windows.
    """

    get_per_second: float = 10.0
    write_per_second: float = 5.0
    burst: int = 1


class TokenBucket:
    """An async token bucket: ``acquire`` returns once the caller may make one request.

    A caller reserves its slot synchronously (the bucket may go into debt) and then sleeps exactly
    once for the time that slot needs, so concurrent callers are served in arrival order without
    locks or polling. A caller cancelled while waiting forfeits its slot; later callers are not
    moved up, which errs on the side of fewer requests.
    """

    def __init__(
        self,
        rate_per_second: float,
        *,
        burst: int = 1,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not rate_per_second > 0 or burst < 1:
            raise ValueError("rate_per_second must be positive and burst at least 1")
        self._rate = rate_per_second
        self._burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self._burst
        self._updated = clock()

    def reserve(self) -> float:
        """Take one token now and return how many seconds the caller must wait before using it."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    async def acquire(self) -> None:
        """Wait until one more request fits in the budget."""
        delay = self.reserve()
        if delay > 0:
            await self._sleep(delay)


# --------------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------------


class SendbirdClient:
    """Typed calls to the Sendbird Platform API (chat v3, group channels).

    Guarantees for every method:

    - the request carries ``Api-Token`` and waits at most ``timeout`` seconds for the network
      (connect, send and reply together); waiting for the local rate limiter comes on top;
    - a 429 / 500910 reply is retried up to ``max_retries`` times after ``X-RateLimit-RetryAfter``
      seconds (else the body's ``retry_after``, else exponential backoff), each wait capped at
      ``max_retry_after``; then :class:`ChatRateLimited` is raised;
    - nothing else is retried here: a POST that timed out may have taken effect, so the caller
      (the outbox relay) decides, helped by ``dedup_id`` and the gateway's "exists" handling;
    - failures raise :class:`ChatNotFound`, :class:`ChatAlreadyExists`, :class:`ChatInvalidRequest`
      (never retryable: bad input or a bad API token), :class:`ChatRateLimited` or
      :class:`ChatUnavailable` (5xx, timeouts, dropped connections, unreadable replies).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        api_token: str,
        timeout: float = 5.0,
        rate_limits: RateLimits | None = None,
        max_retries: int = 3,
        max_retry_after: float = 30.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not base_url or not api_token:
            raise ValueError("base_url and api_token are required")
        if not timeout > 0 or max_retries < 0 or max_retry_after < 0:
            raise ValueError("timeout must be positive; max_retries and max_retry_after non-negative")
        limits = rate_limits or RateLimits()
        self._http = http
        self._api_root = base_url.rstrip("/") + "/v3"
        self._headers = {"Api-Token": api_token, "Accept": "application/json"}
        self._timeout = timeout
        self._max_retries = max_retries
        self._max_retry_after = max_retry_after
        self._sleep = sleep
        self._get_bucket = TokenBucket(limits.get_per_second, burst=limits.burst, clock=clock, sleep=sleep)
        self._write_bucket = TokenBucket(
            limits.write_per_second, burst=limits.burst, clock=clock, sleep=sleep
        )

    # ---- users ---------------------------------------------------------------------------------

    async def create_user(
        self,
        user_id: str,
        *,
        nickname: str,
        profile_url: str = "",
        phone_number: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> SendbirdUser:
        """Create a user; :class:`ChatAlreadyExists` if ``user_id`` is taken. Use opaque ids, never PII."""
        body: dict[str, Any] = {"user_id": user_id, "nickname": nickname, "profile_url": profile_url}
        if phone_number is not None:
            body["phone_number"] = phone_number
        if metadata:
            body["metadata"] = dict(metadata)
        return _user_from(await self._call("create_user", "POST", "/users", json=body))

    async def get_user(self, user_id: str) -> SendbirdUser:
        """Fetch one user; :class:`ChatNotFound` if there is none."""
        return _user_from(await self._call("get_user", "GET", f"/users/{_seg(user_id)}"))

    async def update_user(
        self,
        user_id: str,
        *,
        nickname: str | None = None,
        profile_url: str | None = None,
        phone_number: str | None = None,
        is_active: bool | None = None,
    ) -> SendbirdUser:
        """Change only the given profile fields (``phone_number`` per §8, E.164)."""
        body: dict[str, Any] = {}
        if nickname is not None:
            body["nickname"] = nickname
        if profile_url is not None:
            body["profile_url"] = profile_url
        if phone_number is not None:
            body["phone_number"] = phone_number
        if is_active is not None:
            body["is_active"] = is_active
        return _user_from(await self._call("update_user", "PUT", f"/users/{_seg(user_id)}", json=body))

    async def update_user_metadata(self, user_id: str, metadata: Mapping[str, str]) -> dict[str, str]:
        """Set these metadata keys on a user, adding missing ones (upsert); other keys stay.

        A separate endpoint because ``PUT /v3/users/{user_id}`` takes no ``metadata`` (§3).
        """
        body = {"metadata": dict(metadata), "upsert": True}
        reply = await self._call("update_user_metadata", "PUT", f"/users/{_seg(user_id)}/metadata", json=body)
        return _str_map(reply)

    # ---- group channels ------------------------------------------------------------------------

    async def create_group_channel(
        self,
        channel_url: str,
        *,
        name: str,
        user_ids: Sequence[str],
        custom_type: str = "",
        data: str = "",
        operator_ids: Sequence[str] = (),
    ) -> SendbirdGroupChannel:
        """Create a channel at our own ``channel_url``; :class:`ChatAlreadyExists` if it is taken.

        Sent with ``strict: true`` so an unknown user fails the call (400111 →
        :class:`ChatInvalidRequest`) instead of being silently left out of a care team's channel.
        """
        body: dict[str, Any] = {
            "channel_url": channel_url,
            "name": name,
            "user_ids": list(user_ids),
            "strict": True,
        }
        if custom_type:
            body["custom_type"] = custom_type
        if data:
            body["data"] = data
        if operator_ids:
            body["operator_ids"] = list(operator_ids)
        return _channel_from(await self._call("create_group_channel", "POST", "/group_channels", json=body))

    async def get_group_channel(self, channel_url: str) -> SendbirdGroupChannel:
        """Fetch a channel with its member list; :class:`ChatNotFound` if there is none."""
        reply = await self._call(
            "get_group_channel",
            "GET",
            f"/group_channels/{_seg(channel_url)}",
            params={"show_member": "true"},
        )
        return _channel_from(reply)

    async def update_group_channel(
        self,
        channel_url: str,
        *,
        name: str | None = None,
        custom_type: str | None = None,
        data: str | None = None,
    ) -> SendbirdGroupChannel:
        """Change only the given fields. Members change through invite/leave, never here (§4)."""
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if custom_type is not None:
            body["custom_type"] = custom_type
        if data is not None:
            body["data"] = data
        path = f"/group_channels/{_seg(channel_url)}"
        return _channel_from(await self._call("update_group_channel", "PUT", path, json=body))

    async def invite_members(self, channel_url: str, user_ids: Sequence[str]) -> SendbirdGroupChannel:
        """Add users to a channel (they join at once unless the app turned auto-accept off)."""
        path = f"/group_channels/{_seg(channel_url)}/invite"
        reply = await self._call("invite_members", "POST", path, json={"user_ids": list(user_ids)})
        return _channel_from(reply)

    async def leave_members(
        self,
        channel_url: str,
        user_ids: Sequence[str],
        *,
        reason: str = "admin_removed",
    ) -> None:
        """Remove users from a channel (``PUT .../leave``)."""
        path = f"/group_channels/{_seg(channel_url)}/leave"
        await self._call("leave_members", "PUT", path, json={"user_ids": list(user_ids), "reason": reason})

    async def freeze_channel(self, channel_url: str, frozen: bool) -> SendbirdGroupChannel:
        """Freeze (only operators may post) or unfreeze a channel."""
        path = f"/group_channels/{_seg(channel_url)}/freeze"
        return _channel_from(await self._call("freeze_channel", "PUT", path, json={"freeze": frozen}))

    # ---- messages ------------------------------------------------------------------------------

    async def send_message(
        self,
        channel_url: str,
        *,
        message: str,
        user_id: str | None = None,
        message_type: MessageType = "MESG",
        dedup_id: str | None = None,
        custom_type: str = "",
        data: str = "",
    ) -> SendbirdMessage:
        """Post a text (MESG, ``user_id`` required) or admin (ADMM, no sender) message.

        ``user_id`` is not sent for ADMM: the older docs say admin messages have no sender although
        the OAS marks the field required (§5, uncertainty 5). ``dedup_id`` asks Sendbird to drop a
        repeat; what a repeat returns is undocumented, see :meth:`SendbirdChatGateway.send_message`.
        """
        if message_type == "MESG" and not user_id:
            raise ValueError("a MESG message needs the sender's user_id")
        if message_type == "ADMM" and user_id is not None:
            raise ValueError("an ADMM message has no sender; leave user_id unset")
        body: dict[str, Any] = {"message_type": message_type, "message": message}
        if user_id is not None:
            body["user_id"] = user_id
        if dedup_id is not None:
            body["dedup_id"] = dedup_id
        if custom_type:
            body["custom_type"] = custom_type
        if data:
            body["data"] = data
        path = f"/group_channels/{_seg(channel_url)}/messages"
        return _message_from(await self._call("send_message", "POST", path, json=body))

    async def list_messages(
        self,
        channel_url: str,
        *,
        message_ts: int | None = None,
        message_id: int | None = None,
        prev_limit: int = 15,
        next_limit: int = 15,
        include: bool = True,
        reverse: bool = False,
        sender_ids: Sequence[str] = (),
        custom_types: Sequence[str] = (),
        message_type: MessageType | None = None,
        including_removed: bool = False,
    ) -> list[SendbirdMessage]:
        """Messages around one anchor: exactly one of ``message_ts`` (ms) or ``message_id``.

        Up to ``prev_limit`` messages before and ``next_limit`` after the anchor (0-200 each), oldest
        first unless ``reverse``; the anchor itself only if ``include``. Not token-paginated (§2).
        """
        if (message_ts is None) == (message_id is None):
            raise ValueError("pass exactly one of message_ts or message_id")
        if not (0 <= prev_limit <= _MAX_MESSAGE_PAGE and 0 <= next_limit <= _MAX_MESSAGE_PAGE):
            raise ValueError(f"prev_limit and next_limit must be within 0..{_MAX_MESSAGE_PAGE}")
        params: dict[str, str] = {
            "prev_limit": str(prev_limit),
            "next_limit": str(next_limit),
            "include": _flag(include),
            "reverse": _flag(reverse),
        }
        if message_ts is not None:
            params["message_ts"] = str(message_ts)
        if message_id is not None:
            params["message_id"] = str(message_id)
        if sender_ids:
            params["sender_ids"] = ",".join(sender_ids)
        if custom_types:
            params["custom_types"] = ",".join(custom_types)
        if message_type is not None:
            params["message_type"] = message_type
        if including_removed:
            params["including_removed"] = "true"
        path = f"/group_channels/{_seg(channel_url)}/messages"
        reply = await self._call("list_messages", "GET", path, params=params)
        items = reply.get("messages") if isinstance(reply, dict) else None
        if not isinstance(items, list):
            raise ChatUnavailable("Sendbird list_messages reply has no message list")
        return [_message_from(item) for item in items]

    async def delete_message(self, channel_url: str, message_id: int) -> None:
        """Remove a message (it stays listable only with ``including_removed``)."""
        path = f"/group_channels/{_seg(channel_url)}/messages/{message_id}"
        await self._call("delete_message", "DELETE", path)

    async def mark_as_read(self, channel_url: str, user_id: str) -> None:
        """Mark every message in the channel as read by ``user_id``."""
        path = f"/group_channels/{_seg(channel_url)}/messages/mark_as_read"
        await self._call("mark_as_read", "PUT", path, json={"user_id": user_id})

    # ---- channel metadata ----------------------------------------------------------------------

    async def create_channel_metadata(self, channel_url: str, metadata: Mapping[str, str]) -> dict[str, str]:
        """Add new metadata keys; :class:`ChatAlreadyExists` if one of them is already set."""
        path = f"/group_channels/{_seg(channel_url)}/metadata"
        reply = await self._call("create_channel_metadata", "POST", path, json={"metadata": dict(metadata)})
        # §8: this call answers {"metadata": {...}, "include_ts": ...}, not a flat map.
        return _str_map(reply.get("metadata") if isinstance(reply, dict) else None)

    async def update_channel_metadata(
        self,
        channel_url: str,
        metadata: Mapping[str, str],
        *,
        upsert: bool = True,
    ) -> dict[str, str]:
        """Set metadata keys; with ``upsert`` missing keys are added, else they are :class:`ChatNotFound`."""
        path = f"/group_channels/{_seg(channel_url)}/metadata"
        body = {"metadata": dict(metadata), "upsert": upsert}
        return _str_map(await self._call("update_channel_metadata", "PUT", path, json=body))

    async def get_channel_metadata(self, channel_url: str, keys: Sequence[str] = ()) -> dict[str, str]:
        """All metadata of a channel, or only ``keys``."""
        path = f"/group_channels/{_seg(channel_url)}/metadata"
        params = {"keys": ",".join(keys)} if keys else None
        return _str_map(await self._call("get_channel_metadata", "GET", path, params=params))

    async def delete_channel_metadata(self, channel_url: str, key: str | None = None) -> None:
        """Delete one metadata key (:class:`ChatNotFound` if unset), or all of them when ``key`` is None."""
        path = f"/group_channels/{_seg(channel_url)}/metadata"
        if key is not None:
            path = f"{path}/{_seg(key)}"
        await self._call("delete_channel_metadata", "DELETE", path)

    # ---- transport -----------------------------------------------------------------------------

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """One API call with rate limiting, the time budget and 429 retries; returns the JSON body."""
        bucket = self._get_bucket if method == "GET" else self._write_bucket
        for attempt in range(self._max_retries + 1):
            await bucket.acquire()
            response = await self._send(operation, method, path, json=json, params=params)
            try:
                return _reply_body(operation, response)
            except ChatRateLimited as exc:
                if attempt == self._max_retries:
                    raise
                wait = exc.retry_after if exc.retry_after is not None else 2.0**attempt
                wait = min(wait, self._max_retry_after)
                _log.warning("sendbird.rate_limited", operation=operation, attempt=attempt + 1, wait_s=wait)
                await self._sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _send(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None,
        params: Mapping[str, str] | None,
    ) -> httpx.Response:
        # httpx's timeout applies per phase (connect, write, each read); the asyncio deadline around
        # it makes ``timeout`` a bound on the whole exchange, whatever the injected client's defaults.
        try:
            async with asyncio.timeout(self._timeout):
                return await self._http.request(
                    method,
                    self._api_root + path,
                    json=json,
                    params=params,
                    headers=self._headers,
                    timeout=self._timeout,
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ChatUnavailable(f"Sendbird {operation} timed out") from exc
        except httpx.HTTPError as exc:
            raise ChatUnavailable(f"Sendbird {operation} failed: {type(exc).__name__}") from exc


def _reply_body(operation: str, response: httpx.Response) -> Any:
    """The JSON body of a successful reply, or the typed error the reply stands for."""
    status = response.status_code
    body = _json_or_none(response)
    code = _provider_code(body, status)
    if status == 429 or code == RATE_LIMITED_CODE:
        raise ChatRateLimited(
            f"Sendbird {operation} was rate limited",
            retry_after=_retry_after(response, body),
            provider_code=code,
            status=status,
        )
    if code is not None:
        raise _error_for_code(operation, code, status)
    if status >= 500 or body is None:
        # A 5xx, or any body that is not JSON (a proxy's HTML page, a truncated reply).
        raise ChatUnavailable(f"Sendbird {operation} failed (HTTP {status})", status=status)
    if status >= 400:
        raise ChatInvalidRequest(f"Sendbird {operation} was refused (HTTP {status})", status=status)
    return body


def _error_for_code(operation: str, code: int, status: int) -> ChatGatewayError:
    """Map a Sendbird error code (not the HTTP status, §2) to our error tree."""
    detail = f"Sendbird {operation} failed (code {code})"
    if code == NOT_FOUND_CODE:
        return ChatNotFound(detail, provider_code=code, status=status)
    if code == ALREADY_EXISTS_CODE:
        return ChatAlreadyExists(detail, provider_code=code, status=status)
    if code == INVALID_TOKEN_CODE:
        # A wrong or revoked token: retrying cannot help, an operator must fix the configuration.
        _log.error("sendbird.unauthorized", operation=operation, provider_code=code)
        return ChatInvalidRequest(
            f"Sendbird {operation} rejected our credentials (code {code})", provider_code=code, status=status
        )
    if 500000 <= code < 600000:
        return ChatUnavailable(detail, provider_code=code, status=status)
    if 400000 <= code < 500000:
        # 4001xx parameter errors and the rest of the client-error family: retrying fails the same way.
        return ChatInvalidRequest(detail, provider_code=code, status=status)
    # A code outside the documented families (the frozen-channel or non-member codes are not known,
    # §10 uncertainty 1): the HTTP status is the only remaining hint.
    if status >= 500:
        return ChatUnavailable(detail, provider_code=code, status=status)
    return ChatInvalidRequest(detail, provider_code=code, status=status)


def _json_or_none(response: httpx.Response) -> Any:
    if not response.content:
        return {}  # DELETE and some PUTs may answer with an empty body instead of ``{}``
    try:
        return response.json()
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both derive from ValueError
        return None


def _provider_code(body: Any, status: int) -> int | None:
    """The ``code`` of an error body; a 2xx only counts as an error when it says ``"error": true``."""
    if not isinstance(body, dict) or (status < 400 and body.get("error") is not True):
        return None
    code = body.get("code")
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _retry_after(response: httpx.Response, body: Any) -> float | None:
    """Seconds to wait: the ``X-RateLimit-RetryAfter`` header (§2), else the body's ``retry_after``.

    The body field's unit is not documented (C-RATE); seconds, like the header, is assumed.
    """
    from_header = _seconds(response.headers.get(RETRY_AFTER_HEADER))
    if from_header is not None:
        return from_header
    return _seconds(body.get("retry_after")) if isinstance(body, dict) else None


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


# ---- reply parsing -------------------------------------------------------------------------------


def _user_from(reply: Any) -> SendbirdUser:
    obj = _object(reply, "user")
    return SendbirdUser(
        user_id=_required_str(obj, "user_id"),
        nickname=_str(obj, "nickname"),
        profile_url=_str(obj, "profile_url"),
        phone_number=_str(obj, "phone_number") or None,
        metadata=_str_map(obj.get("metadata")),
        is_active=obj.get("is_active") is not False,
        created_at_ms=_int(obj, "created_at"),
    )


def _channel_from(reply: Any) -> SendbirdGroupChannel:
    obj = _object(reply, "channel")
    return SendbirdGroupChannel(
        channel_url=_required_str(obj, "channel_url"),
        name=_str(obj, "name"),
        custom_type=_str(obj, "custom_type"),
        data=_str(obj, "data"),
        member_ids=_user_ids(obj.get("members")),
        operator_ids=_user_ids(obj.get("operators")),
        is_frozen=obj.get("freeze") is True,
        member_count=_int(obj, "member_count"),
        created_at_ms=_int(obj, "created_at"),
    )


def _message_from(reply: Any) -> SendbirdMessage:
    obj = _object(reply, "message")
    message_id = obj.get("message_id")
    if not isinstance(message_id, int) or isinstance(message_id, bool):
        raise ChatUnavailable("Sendbird reply has no valid message_id")
    sender = obj.get("user")
    sender_id = sender.get("user_id") if isinstance(sender, dict) else None
    return SendbirdMessage(
        message_id=message_id,
        channel_url=_required_str(obj, "channel_url"),
        message_type=_str(obj, "type"),
        message=_str(obj, "message"),
        custom_type=_str(obj, "custom_type"),
        data=_str(obj, "data"),
        sender_id=sender_id if isinstance(sender_id, str) and sender_id else None,
        created_at_ms=_int(obj, "created_at"),
        is_removed=obj.get("is_removed") is True,
    )


def _object(reply: Any, what: str) -> dict[str, Any]:
    if not isinstance(reply, dict):
        raise ChatUnavailable(f"Sendbird reply is not a {what} object")
    return reply


def _required_str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ChatUnavailable(f"Sendbird reply has no valid {key}")
    return value


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _user_ids(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(
        item["user_id"] for item in value if isinstance(item, dict) and isinstance(item.get("user_id"), str)
    )


def _seg(value: str) -> str:
    """One URL path segment: user ids may hold any character, including ``/``."""
    return quote(value, safe="")


def _flag(value: bool) -> str:
    return "true" if value else "false"


# --------------------------------------------------------------------------------------------------
# The ChatGateway adapter
# --------------------------------------------------------------------------------------------------


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class SendbirdChatGateway:
    """:class:`engine.ports.ChatGateway` on Sendbird: every method is safe to call again after any failure.

    Nothing here trusts an answer Sendbird does not document (sendbird-api.md §8). Whether a call
    that failed ambiguously (timeout, dropped connection, 5xx) took effect is learned by reading:
    the channel (creation, membership) or its recent messages (:meth:`find_message`, matched on the
    caller's own id carried in ``data``, a field every message reply returns, §5).
    """

    def __init__(self, client: SendbirdClient, *, wall_clock_ms: Callable[[], int] = _wall_clock_ms) -> None:
        self._client = client
        self._wall_clock_ms = wall_clock_ms

    async def ensure_user(self, user_id: str, nickname: str, *, phone_number: str | None = None) -> None:
        """Create the user, or bring an existing one's nickname (and phone number, if given) up to date.

        A create that failed ambiguously and is repeated answers 400202 (§3, duplicate ``user_id``),
        which lands here as "update" too.
        """
        try:
            await self._client.create_user(user_id, nickname=nickname, phone_number=phone_number)
        except ChatAlreadyExists:
            await self._client.update_user(user_id, nickname=nickname, phone_number=phone_number)

    async def ensure_channel(
        self,
        channel_url: str,
        *,
        name: str,
        user_ids: Sequence[str],
        custom_type: str = "",
        data: str = "",
        repeat: bool = False,
    ) -> None:
        """Create the channel at ``channel_url``, or add the missing ``user_ids`` to the one already there.

        With ``repeat`` (an earlier attempt may have taken effect) the channel is read first and only
        what is missing is done. After an ambiguous failure of the create, the channel is read too.
        The users must exist already (:meth:`ensure_user`): creation is strict, see
        :meth:`SendbirdClient.create_group_channel`.
        """
        if repeat and await self._complete_existing(channel_url, user_ids):
            return
        try:
            await self._client.create_group_channel(
                channel_url, name=name, user_ids=user_ids, custom_type=custom_type, data=data
            )
        except ChatAlreadyExists:
            await self._complete_existing(channel_url, user_ids)
        except ChatUnavailable:
            if not await self._complete_existing(channel_url, user_ids):
                raise

    async def _complete_existing(self, channel_url: str, user_ids: Sequence[str]) -> bool:
        """If the channel exists, invite whoever of ``user_ids`` is not in it; False if there is none."""
        try:
            channel = await self._client.get_group_channel(channel_url)
        except ChatNotFound:
            return False
        missing = [u for u in _unique(user_ids) if u not in channel.member_ids]
        if missing:
            await self._client.invite_members(channel_url, missing)
        return True

    async def invite_members(self, channel_url: str, user_ids: Sequence[str]) -> None:
        """Add members to an existing channel; members already in it stay as they are."""
        if user_ids:
            await self._client.invite_members(channel_url, _unique(user_ids))

    async def remove_members(
        self, channel_url: str, user_ids: Sequence[str], *, repeat: bool = False
    ) -> None:
        """Make sure none of ``user_ids`` is a member; a missing channel or a non-member is not an error.

        How Sendbird answers "leave" for a non-member is undocumented (§8), so whenever the answer is
        not a plain success (or ``repeat`` says an earlier attempt may have done part of it), the
        member list is read and only whoever is still in is removed.
        """
        wanted = _unique(user_ids)
        if not wanted:
            return
        if not repeat:
            try:
                await self._client.leave_members(channel_url, wanted)
                return
            except (ChatNotFound, ChatInvalidRequest, ChatUnavailable):
                pass  # read below what the call did or did not do
        try:
            channel = await self._client.get_group_channel(channel_url)
        except ChatNotFound:
            return  # no channel, so nobody is a member of it
        still_in = [user_id for user_id in wanted if user_id in channel.member_ids]
        if still_in:
            await self._client.leave_members(channel_url, still_in)

    async def send_message(
        self,
        channel_url: str,
        *,
        sender_id: str,
        text: str,
        dedup_id: str,
        custom_type: str = "",
        data: str = "",
    ) -> SentChatMessage:
        """Post a text message with ``dedup_id`` as a second layer against duplicates.

        What Sendbird returns for a repeated ``dedup_id`` is undocumented (§8): the original message
        (nothing special to do), 400202, another 4xx, or a second message. Whether an earlier post
        landed is therefore learned with :meth:`find_message` by the caller (the outbox relay), not
        from this answer. Only the one answer that says so outright, "already exists", is resolved
        here: the original is looked up by ``data``; if it is not found again it is reported
        delivered with :data:`UNKNOWN_MESSAGE_ID`.
        """
        try:
            sent = await self._client.send_message(
                channel_url,
                user_id=sender_id,
                message=text,
                dedup_id=dedup_id,
                custom_type=custom_type,
                data=data,
            )
        except ChatAlreadyExists:
            found = await self.find_message(
                channel_url, sender_id=sender_id, custom_type=custom_type, data=data, text=text
            )
            if found is not None:
                _log.info("sendbird.duplicate_resolved", message_id=found.message_id)
                return found
            _log.warning("sendbird.duplicate_unresolved")
            return SentChatMessage(UNKNOWN_MESSAGE_ID, channel_url, 0)
        return SentChatMessage(sent.message_id, sent.channel_url, sent.created_at_ms)

    async def find_message(
        self, channel_url: str, *, sender_id: str, custom_type: str, data: str, text: str | None = None
    ) -> SentChatMessage | None:
        """The newest message ``sender_id`` posted with exactly this ``custom_type`` and ``data``, if it
        is among the sender's latest messages of that type in the channel; None if it is not.

        ``data`` carries the caller's own id of the message, so a match is that message. Without
        ``data`` (older posts), ``text`` must match too. Raises like any call when the read fails:
        the caller then knows nothing yet.
        """
        recent = await self._client.list_messages(
            channel_url,
            message_ts=self._wall_clock_ms() + _CLOCK_SKEW_MS,
            prev_limit=_DUPLICATE_LOOKBACK,
            next_limit=0,
            sender_ids=[sender_id],
            custom_types=[custom_type] if custom_type else (),
            message_type="MESG",
        )
        for message in reversed(recent):  # newest first: a retry follows its original closely
            if (message.sender_id, message.custom_type, message.data) != (sender_id, custom_type, data):
                continue
            if data or message.message == text:
                return SentChatMessage(message.message_id, message.channel_url, message.created_at_ms)
        return None


def _unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


# --------------------------------------------------------------------------------------------------
# Webhook signatures (§7)
# --------------------------------------------------------------------------------------------------


def sign_webhook(body: bytes, api_token: str) -> str:
    """The ``x-sendbird-signature`` of ``body``: lowercase hex HMAC-SHA256 keyed with the master API token."""
    if not api_token:
        raise ValueError("api_token is required to sign a webhook")
    return hmac.new(api_token.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_webhook_signature(body: bytes, signature: str | None, api_token: str) -> bool:
    """True only if ``signature`` matches the raw ``body`` bytes exactly as received.

    Verify before parsing: Sendbird escapes ``/`` as ``\\/``, so re-serialised JSON never matches.
    The comparison takes constant time. An empty ``api_token`` is a configuration error and raises.
    """
    expected = sign_webhook(body, api_token)
    if not signature or not signature.isascii():
        return False
    return hmac.compare_digest(expected, signature.lower())
