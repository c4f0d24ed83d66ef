"""A Sendbird Platform API emulator for development and tests: an aiohttp app on loopback only.

It implements the part of ``/v3`` that :class:`integrations.sendbird.SendbirdClient` uses, with the
request and reply shapes and error bodies of Sendbird's Platform API documentation (the § numbers
below are the sections of the team's contract notes on it, which live outside this repository).
Where that contract is unsure, the emulator takes the strict reading, so code that works here is not
relying on leniency the real service may not have: unknown users fail a strict channel
creation, leaving a channel you are not in is "not found", MESG senders must be members.

Beyond the API it offers what tests need and the real service cannot give:

- :class:`EmulatorState`, in memory and inspectable: users, channels (members, operators, frozen,
  metadata, read state), messages per channel with their ``dedup_id`` index, the ``received`` log
  of every ``/v3`` request, and the ``webhook_deliveries`` log;
- fault injection (:class:`FaultInjector`, also at ``/_emulator/faults``): 5xx for the next N
  requests or for T seconds, 429 with ``X-RateLimit-RetryAfter``, a hang, and a connection dropped
  after the request was processed (the "did it happen?" case ``dedup_id`` exists for);
- webhooks (§7): ``group_channel:message_send`` and ``group_channel:message_read`` POSTed from a
  background task, signed with ``x-sendbird-signature``, ``/`` escaped as ``\\/``, up to 3 tries.

Never point real traffic or real PHI at it: it keeps everything in memory and logs nothing useful
for production. Run it alone with ``python -m integrations.sendbird_emulator --port 8090``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hmac
import ipaddress
import json
import os
import re
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import aiohttp
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from integrations.sendbird import (
    ALREADY_EXISTS_CODE,
    INVALID_TOKEN_CODE,
    NOT_FOUND_CODE,
    RATE_LIMITED_CODE,
    RETRY_AFTER_HEADER,
    SIGNATURE_HEADER,
    sign_webhook,
)

_log = structlog.get_logger(__name__)

# Error codes (§2). The two 900xxx codes are not in the contract (§10 uncertainty 1); they are the
# values Sendbird's client SDKs use, and the client maps any unknown 4xx code to "invalid request".
STRING_EXPECTED: Final = 400100
NUMBER_EXPECTED: Final = 400101
LIST_EXPECTED: Final = 400102
JSON_EXPECTED: Final = 400103
BOOLEAN_EXPECTED: Final = 400104
MISSING_PARAMETER: Final = 400105
VALUE_TOO_LONG: Final = 400110
INVALID_VALUE: Final = 400111
NOT_A_MEMBER: Final = 900020
CHANNEL_FROZEN: Final = 900050
INTERNAL_ERROR: Final = 500901  # the body of an injected 5xx; the real body of a 5xx is unknown

MAX_MEMBERS_PER_CALL: Final = 100  # §4: user_ids, max 100 per call
MAX_MESSAGE_PAGE: Final = 200  # §2: prev_limit/next_limit 0..200
_CHANNEL_URL = re.compile(r"[A-Za-z0-9_]{4,100}")  # §2: own channel_url, 4-100 letters/digits/underscores
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")  # §3: phone_number in E.164 with country code

BM_SEND_PATH: Final = "/v1/notifications"  # §8: the documented path (a v2 variant is uncertain)
WEBHOOK_ATTEMPTS: Final = 3  # §7: Sendbird sends the same POST up to 3 times
WEBHOOK_TIMEOUT_S: Final = 5.0  # §7: and waits 5 seconds for each answer

FaultKind = Literal["error", "rate_limit", "hang", "drop"]


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _wall_clock_us() -> int:
    return time.time_ns() // 1_000


# --------------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------------


@dataclass
class EmulatedUser:
    """A user as the emulator stores it."""

    user_id: str
    nickname: str
    profile_url: str
    created_at: int
    phone_number: str = field(default="", repr=False)
    metadata: dict[str, str] = field(default_factory=dict)
    is_active: bool = True


@dataclass
class EmulatedMessage:
    """A message; ``sender_id`` is None for admin messages."""

    message_id: int
    channel_url: str
    type: str
    message: str = field(repr=False)
    custom_type: str
    data: str = field(repr=False)
    sender_id: str | None
    created_at: int
    dedup_id: str | None = None
    silent: bool = False
    is_removed: bool = False


@dataclass
class EmulatedChannel:
    """A group channel with its members, messages and the ``dedup_id`` → message index."""

    channel_url: str
    name: str
    custom_type: str
    data: str
    created_at: int
    members: list[str] = field(default_factory=list)
    operators: list[str] = field(default_factory=list)
    frozen: bool = False
    is_distinct: bool = False
    is_public: bool = False
    is_ephemeral: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    read_ts: dict[str, int] = field(default_factory=dict)
    messages: list[EmulatedMessage] = field(default_factory=list)
    dedup: dict[str, EmulatedMessage] = field(default_factory=dict)


@dataclass(frozen=True)
class EmulatedNotification:
    """One Business Messaging notification on the SMS channel: one target, its number, the variables."""

    request_id: str
    template_key: str
    user_id: str
    phone_number: str = field(repr=False)
    variables: Mapping[str, str] = field(repr=False)

    @property
    def text(self) -> str:
        """The ``message`` variable: what caremsg's SMS template shows."""
        return self.variables.get("message", "")


@dataclass(frozen=True)
class ReceivedRequest:
    """One request that reached ``/v3``, faulted or not: ``body`` is the parsed JSON or None."""

    method: str
    path: str
    query: Mapping[str, str]
    body: Any


@dataclass
class WebhookDelivery:
    """One webhook event and what each attempt got: an HTTP status, or None for no answer."""

    category: str
    body: bytes = field(repr=False)
    statuses: list[int | None] = field(default_factory=list)

    @property
    def delivered(self) -> bool:
        """True once an attempt got a 2xx."""
        return any(status is not None and 200 <= status < 300 for status in self.statuses)


@dataclass
class EmulatorState:
    """Everything the emulator knows; tests read it and inject faults through ``faults``."""

    app_id: str
    api_token: str = field(repr=False)
    faults: FaultInjector
    wall_clock_ms: Callable[[], int] = _wall_clock_ms
    users: dict[str, EmulatedUser] = field(default_factory=dict)
    channels: dict[str, EmulatedChannel] = field(default_factory=dict)
    received: list[ReceivedRequest] = field(default_factory=list)
    webhook_deliveries: list[WebhookDelivery] = field(default_factory=list)
    #: Business Messaging sends (§8): what an SMS provider was asked to text, in order.
    notifications: list[EmulatedNotification] = field(default_factory=list)
    #: Where message ids come from (microseconds since the epoch): see :meth:`next_message_id`.
    id_clock_us: Callable[[], int] = field(default=_wall_clock_us, repr=False)
    _last_message_id: int = field(default=0, repr=False)
    _last_ms: int = field(default=0, repr=False)

    def messages(self, channel_url: str) -> list[EmulatedMessage]:
        """Every message ever sent to the channel (removed ones included), oldest first."""
        channel = self.channels.get(channel_url)
        return list(channel.messages) if channel else []

    def requests(self, method: str, path: str) -> list[ReceivedRequest]:
        """The received requests with this method and exact path."""
        return [r for r in self.received if r.method == method and r.path == path]

    def now_ms(self) -> int:
        """Milliseconds since the epoch, never going backwards, so message order follows send order."""
        self._last_ms = max(self._last_ms, self.wall_clock_ms())
        return self._last_ms

    def next_message_id(self) -> int:
        """A fresh message id: microseconds since the epoch, or the last id plus one if that is not larger.

        Real ids are unique per application and never reused, and caremsg deduplicates webhooks by
        message id across its whole database: an emulator started later (``caremsg serve`` restarted
        on the same data) must not repeat an id an earlier one handed out, as counting from 1 in each
        emulator did. Ids run ahead of the clock only when taken faster than one per microsecond,
        which sends over HTTP never are. About 1.8e15 today: int64 (§5), and below 2**53 (exact as a
        JSON double) until the year 2255.
        """
        self._last_message_id = max(self._last_message_id + 1, self.id_clock_us())
        return self._last_message_id


# --------------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """One injected failure, active for ``remaining`` more requests or until ``until`` (the fault clock)."""

    kind: FaultKind
    status: int = 503
    retry_after: float = 1.0
    hang_seconds: float = 0.0
    remaining: int | None = 1
    until: float | None = None


class FaultInjector:
    """Failures for the next requests, in the order they were added.

    Each request to ``/v3`` takes the first active fault: ``error`` answers a 5xx, ``rate_limit`` a
    429 with ``X-RateLimit-RetryAfter`` and code 500910, ``hang`` waits ``hang_seconds`` and then
    processes the request (a slow server: the client has given up, the effect still happens),
    ``drop`` processes the request and closes the connection without answering. Time windows
    use the injected ``clock``, so tests move time instead of sleeping.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._faults: list[Fault] = []
        self._released = asyncio.Event()

    def fail_next(self, count: int = 1, *, status: int = 503) -> None:
        """Answer the next ``count`` requests with HTTP ``status`` (5xx)."""
        self.add(Fault("error", status=status, remaining=count))

    def fail_for(self, seconds: float, *, status: int = 503) -> None:
        """Answer every request with HTTP ``status`` (5xx) for the next ``seconds`` of the fault clock."""
        self.add(Fault("error", status=status, remaining=None, until=self._clock() + seconds))

    def rate_limit_next(self, count: int = 1, *, retry_after: float = 1.0) -> None:
        """Answer the next ``count`` requests with 429 / 500910 and this retry-after (seconds)."""
        self.add(Fault("rate_limit", retry_after=retry_after, remaining=count))

    def hang_next(self, seconds: float, *, count: int = 1) -> None:
        """Hold the next ``count`` requests for ``seconds`` before processing them."""
        self.add(Fault("hang", hang_seconds=seconds, remaining=count))

    def drop_next(self, count: int = 1) -> None:
        """Process the next ``count`` requests, then close their connections without a reply."""
        self.add(Fault("drop", remaining=count))

    def add(self, fault: Fault) -> None:
        """Queue a fault after the ones already queued; ValueError if it makes no sense."""
        if fault.kind == "error" and not 500 <= fault.status <= 599:
            raise ValueError("an error fault needs a 5xx status")
        if fault.remaining is not None and fault.remaining < 1:
            raise ValueError("count must be at least 1")
        if fault.remaining is None and fault.until is None:
            raise ValueError("a fault needs a count or a duration")
        if fault.until is not None and fault.until <= self._clock():
            raise ValueError("a fault's duration must be positive")
        if fault.retry_after < 0 or fault.hang_seconds < 0:
            raise ValueError("retry_after and hang_seconds must not be negative")
        self._faults.append(fault)
        _log.info("sendbird_emulator.fault_added", kind=fault.kind, development_only=True)

    def add_from_json(self, spec: Any) -> Fault:
        """Queue a fault given as JSON; ValueError if the description is wrong.

        ``{"kind": "error" | "rate_limit" | "hang" | "drop", "count": N | "for_seconds": T,
        "status": 5xx, "retry_after": S, "hang_seconds": S}``; the last three only where they apply.
        """
        if not isinstance(spec, dict):
            raise ValueError("the fault must be a JSON object")
        unknown = set(spec) - {"kind", "count", "for_seconds", "status", "retry_after", "hang_seconds"}
        if unknown:
            raise ValueError(f"unknown fields: {sorted(unknown)}")
        kind = spec.get("kind")
        if kind not in ("error", "rate_limit", "hang", "drop"):
            raise ValueError('kind must be "error", "rate_limit", "hang" or "drop"')
        count, for_seconds = spec.get("count"), spec.get("for_seconds")
        if (count is None) == (for_seconds is None):
            raise ValueError('give exactly one of "count" or "for_seconds"')
        fault = Fault(
            kind,
            status=_json_number(spec, "status", 503, integer=True),
            retry_after=_json_number(spec, "retry_after", 1.0),
            hang_seconds=_json_number(spec, "hang_seconds", 0.0),
            remaining=None if count is None else _json_number(spec, "count", 1, integer=True),
            until=None if for_seconds is None else self._clock() + _json_number(spec, "for_seconds", 0.0),
        )
        self.add(fault)
        return fault

    def clear(self) -> None:
        """Forget every queued fault."""
        self._faults.clear()

    def pending(self) -> list[Fault]:
        """The faults that are still active, in the order they will apply."""
        self._expire()
        return list(self._faults)

    def take(self) -> Fault | None:
        """The fault for the request arriving now, counting it against its ``remaining``."""
        self._expire()
        if not self._faults:
            return None
        fault = self._faults[0]
        if fault.remaining is not None:
            fault.remaining -= 1
        return dataclasses.replace(fault)

    async def hang(self, seconds: float) -> None:
        """Wait ``seconds``, or less if :meth:`release_hangs` is called (the emulator is closing)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._released.wait(), timeout=seconds)

    def release_hangs(self) -> None:
        """End every current and future hang at once."""
        self._released.set()

    def _expire(self) -> None:
        now = self._clock()
        self._faults = [
            f
            for f in self._faults
            if (f.remaining is None or f.remaining > 0) and (f.until is None or now < f.until)
        ]


def _json_number(spec: Mapping[str, Any], key: str, default: float, *, integer: bool = False) -> Any:
    value = spec.get(key, default)
    wanted: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, wanted):
        raise ValueError(f'"{key}" must be {"an integer" if integer else "a number"}')
    return value


# --------------------------------------------------------------------------------------------------
# JSON the way Sendbird writes it
# --------------------------------------------------------------------------------------------------


def sendbird_json(value: Any) -> bytes:
    """Compact JSON with non-ASCII as ``\\uXXXX`` and ``/`` as ``\\/``, like the real service (§7).

    After ``ensure_ascii`` a ``/`` can only stand inside a string, where ``\\/`` is a valid escape
    for it, so the replacement never changes the value, only the bytes a signature covers.
    """
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text.replace("/", "\\/").encode("ascii")


def _json_response(
    value: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=sendbird_json(value), status=status, headers=headers, content_type="application/json"
    )


def _error_response(
    code: int, message: str, *, status: int = 400, headers: Mapping[str, str] | None = None
) -> web.Response:
    return _json_response({"error": True, "code": code, "message": message}, status=status, headers=headers)


class _ApiError(Exception):
    """Raised by a handler; the middleware turns it into Sendbird's error body (§2)."""

    def __init__(self, code: int, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


# --------------------------------------------------------------------------------------------------
# Request parameters
# --------------------------------------------------------------------------------------------------


class _Params:
    """Typed access to a JSON request body, failing with Sendbird's parameter error codes."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def raw(self, key: str) -> Any:
        return self._data.get(key)

    def text(self, key: str, *, default: str | None = None, max_length: int | None = None) -> str:
        value = self._data.get(key)
        if value is None:
            if default is None:
                raise _ApiError(MISSING_PARAMETER, f'"{key}" is required.')
            return default
        if not isinstance(value, str):
            raise _ApiError(STRING_EXPECTED, f'"{key}" must be a string.')
        if max_length is not None and len(value) > max_length:
            raise _ApiError(VALUE_TOO_LONG, f'"{key}" is longer than {max_length} characters.')
        return value

    def flag(self, key: str, *, default: bool | None = None) -> bool:
        value = self._data.get(key)
        if value is None:
            if default is None:
                raise _ApiError(MISSING_PARAMETER, f'"{key}" is required.')
            return default
        if not isinstance(value, bool):
            raise _ApiError(BOOLEAN_EXPECTED, f'"{key}" must be a boolean.')
        return value

    def text_list(self, key: str) -> list[str]:
        value = self._data.get(key)
        if value is None:
            raise _ApiError(MISSING_PARAMETER, f'"{key}" is required.')
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise _ApiError(LIST_EXPECTED, f'"{key}" must be a list of strings.')
        return list(dict.fromkeys(value))

    def text_map(self, key: str) -> dict[str, str]:
        value = self._data.get(key)
        if value is None:
            raise _ApiError(MISSING_PARAMETER, f'"{key}" is required.')
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise _ApiError(JSON_EXPECTED, f'"{key}" must be an object of strings.')
        return dict(value)


async def _params(request: web.Request) -> _Params:
    raw = await request.read()
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        raise _ApiError(JSON_EXPECTED, "The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise _ApiError(JSON_EXPECTED, "The body must be a JSON object.")
    return _Params(data)


def _query_int(
    request: web.Request, key: str, *, default: int | None = None, low: int, high: int
) -> int | None:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _ApiError(NUMBER_EXPECTED, f'"{key}" must be a number.') from None
    if not low <= value <= high:
        raise _ApiError(INVALID_VALUE, f'"{key}" must be within {low}..{high}.')
    return value


def _query_flag(request: web.Request, key: str, default: bool) -> bool:
    raw = request.query.get(key)
    if raw is None:
        return default
    if raw.lower() not in ("true", "false"):
        raise _ApiError(BOOLEAN_EXPECTED, f'"{key}" must be true or false.')
    return raw.lower() == "true"


def _query_list(request: web.Request, key: str) -> list[str]:
    raw = request.query.get(key, "")
    return [item for item in raw.split(",") if item]


# --------------------------------------------------------------------------------------------------
# Reply shapes (§3, §4, §5)
# --------------------------------------------------------------------------------------------------


def _user_json(user: EmulatedUser) -> dict[str, Any]:
    return {
        "user_id": user.user_id,
        "nickname": user.nickname,
        "profile_url": user.profile_url,
        "access_token": "",
        "is_active": user.is_active,
        "is_online": False,
        "last_seen_at": 0,
        "created_at": user.created_at,
        "metadata": dict(user.metadata),
        "phone_number": user.phone_number,
    }


def _sender_json(user: EmulatedUser) -> dict[str, Any]:
    return {
        "user_id": user.user_id,
        "nickname": user.nickname,
        "profile_url": user.profile_url,
        "metadata": dict(user.metadata),
    }


def _message_json(state: EmulatorState, message: EmulatedMessage) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "message_id": message.message_id,
        "type": message.type,
        "message": message.message,
        "custom_type": message.custom_type,
        "data": message.data,
        "channel_url": message.channel_url,
        "channel_type": "group",
        "created_at": message.created_at,
        "updated_at": 0,
        "mention_type": "users",
        "mentioned_users": [],
        "is_removed": message.is_removed,
        "silent": message.silent,
        "translations": {},
        "sorted_metaarray": [],
        "message_survival_seconds": -1,
    }
    sender = state.users.get(message.sender_id) if message.sender_id else None
    if sender is not None:  # admin messages have no "user"
        reply["user"] = _sender_json(sender)
    return reply


def _channel_json(
    state: EmulatorState,
    channel: EmulatedChannel,
    *,
    show_member: bool = True,
    show_read_receipt: bool = False,
) -> dict[str, Any]:
    last = next((m for m in reversed(channel.messages) if not m.is_removed), None)
    reply: dict[str, Any] = {
        "channel_url": channel.channel_url,
        "name": channel.name,
        "custom_type": channel.custom_type,
        "data": channel.data,
        "cover_url": "",
        "created_at": channel.created_at,
        "member_count": len(channel.members),
        "joined_member_count": len(channel.members),
        "operators": [_sender_json(state.users[u]) for u in channel.operators if u in state.users],
        "freeze": channel.frozen,
        "is_distinct": channel.is_distinct,
        "is_public": channel.is_public,
        "is_super": False,
        "is_ephemeral": channel.is_ephemeral,
        "last_message": _message_json(state, last) if last else None,
        "unread_message_count": 0,
    }
    if show_member:
        reply["members"] = [_member_json(state, channel, u) for u in channel.members if u in state.users]
    if show_read_receipt:
        reply["read_receipt"] = dict(channel.read_ts)
    return reply


def _member_json(state: EmulatorState, channel: EmulatedChannel, user_id: str) -> dict[str, Any]:
    user = state.users[user_id]
    return {
        **_sender_json(user),
        "state": "joined",
        "role": "operator" if user_id in channel.operators else "",
        "is_online": False,
        "push_enabled": False,
        "read_ts": channel.read_ts.get(user_id, 0),
        "unread_message_count": _total_unread(state, user_id),
        "channel_unread_message_count": _unread(channel, user_id),
    }


def _unread(channel: EmulatedChannel, user_id: str) -> int:
    read_ts = channel.read_ts.get(user_id, 0)
    return sum(
        1 for m in channel.messages if not m.is_removed and m.sender_id != user_id and m.created_at > read_ts
    )


def _total_unread(state: EmulatorState, user_id: str) -> int:
    return sum(_unread(c, user_id) for c in state.channels.values() if user_id in c.members)


def _webhook_channel_json(channel: EmulatedChannel) -> dict[str, Any]:
    return {
        "channel_url": channel.channel_url,
        "name": channel.name,
        "custom_type": channel.custom_type,
        "data": channel.data,
        "is_distinct": channel.is_distinct,
        "is_public": channel.is_public,
        "is_super": False,
        "is_ephemeral": channel.is_ephemeral,
        "is_discoverable": channel.is_public,
    }


# --------------------------------------------------------------------------------------------------
# Webhooks (§7)
# --------------------------------------------------------------------------------------------------


class WebhookSender:
    """Posts webhook events from background tasks, so an API reply never waits for the receiver.

    Every attempt sends the same bytes and signature. An attempt fails on no answer within 5 s or
    a non-2xx answer (retrying on non-2xx too is the strict reading of §7, which only says
    "until it gets a response"); after 3 failed attempts the event is given up.
    """

    def __init__(
        self,
        state: EmulatorState,
        url: str | None,
        *,
        include_members: bool = False,
        retry_delay: float = 0.5,
    ) -> None:
        self._state = state
        self._url = url
        self.include_members = include_members
        self._retry_delay = retry_delay
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Open the HTTP session (inside the running loop, never at import)."""
        if self._url is not None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S))

    async def close(self) -> None:
        """Abandon deliveries still in flight and close the session."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def drain(self) -> None:
        """Wait until every delivery started so far has succeeded or been given up."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    def set_url(self, url: str | None) -> None:
        """Post future events to ``url`` (None: stop sending)."""
        self._url = url
        if url is not None and self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S))

    def send(self, category: str, payload: Mapping[str, Any], *, url: str | None = None) -> None:
        """Schedule delivery of one event (does nothing when no webhook URL is configured)."""
        target = url or self._url
        if target is None:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S))
        delivery = WebhookDelivery(category, sendbird_json(payload))
        self._state.webhook_deliveries.append(delivery)
        task = asyncio.create_task(self._deliver(self._session, target, delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, session: aiohttp.ClientSession, url: str, delivery: WebhookDelivery) -> None:
        signature = sign_webhook(delivery.body, self._state.api_token)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "SendBird",
            SIGNATURE_HEADER: signature,
            "x-signature": signature,  # seen next to x-sendbird-signature in a captured request (§7)
            "unicode-escaped": "true",
        }
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            status: int | None = None
            try:
                async with session.post(url, data=delivery.body, headers=headers) as response:
                    status = response.status
                    await response.read()
            except (aiohttp.ClientError, TimeoutError):
                status = None
            delivery.statuses.append(status)
            if delivery.delivered:
                _log.info(
                    "sendbird_emulator.webhook_delivered",
                    category=delivery.category,
                    attempt=attempt,
                    development_only=True,
                )
                return
            if attempt < WEBHOOK_ATTEMPTS:
                await asyncio.sleep(self._retry_delay)
        _log.warning(
            "sendbird_emulator.webhook_given_up",
            category=delivery.category,
            statuses=delivery.statuses,
            development_only=True,
        )


# --------------------------------------------------------------------------------------------------
# The API
# --------------------------------------------------------------------------------------------------


class _Api:
    """The ``/v3`` handlers. Each validates, changes ``state`` and answers like §3-§6 describe."""

    def __init__(self, state: EmulatorState, webhooks: WebhookSender) -> None:
        self.state = state
        self.webhooks = webhooks

    def routes(self) -> list[web.RouteDef]:
        channel = "/v3/group_channels/{channel_url}"
        return [
            web.post("/v3/users", self.create_user),
            web.get("/v3/users/{user_id}", self.get_user),
            web.put("/v3/users/{user_id}", self.update_user),
            web.put("/v3/users/{user_id}/metadata", self.update_user_metadata),
            web.post("/v3/group_channels", self.create_channel),
            web.get(channel, self.get_channel),
            web.put(channel, self.update_channel),
            web.post(f"{channel}/invite", self.invite),
            web.put(f"{channel}/leave", self.leave),
            web.put(f"{channel}/freeze", self.freeze),
            web.post(f"{channel}/messages", self.send_message),
            web.get(f"{channel}/messages", self.list_messages),
            web.put(f"{channel}/messages/mark_as_read", self.mark_as_read),
            web.delete(f"{channel}/messages/{{message_id:[0-9]+}}", self.delete_message),
            web.post(f"{channel}/metadata", self.create_metadata),
            web.put(f"{channel}/metadata", self.update_metadata),
            web.get(f"{channel}/metadata", self.get_metadata),
            web.delete(f"{channel}/metadata", self.delete_metadata),
            web.delete(f"{channel}/metadata/{{key}}", self.delete_metadata_key),
            # Business Messaging (§8) is another host in reality (api-{app_id}.notifications...);
            # here it shares the origin, and the API token stands in for the BM token.
            web.post(BM_SEND_PATH, self.send_notification),
        ]

    # ---- lookups -------------------------------------------------------------------------------

    def _user(self, user_id: str) -> EmulatedUser:
        user = self.state.users.get(user_id)
        if user is None:
            raise _ApiError(NOT_FOUND_CODE, "User not found.")
        return user

    def _channel(self, request: web.Request) -> EmulatedChannel:
        channel = self.state.channels.get(request.match_info["channel_url"])
        if channel is None:
            raise _ApiError(NOT_FOUND_CODE, "Channel not found.")
        return channel

    # ---- users (§3) ----------------------------------------------------------------------------

    async def create_user(self, request: web.Request) -> web.Response:
        p = await _params(request)
        user_id = p.text("user_id", max_length=80)
        if not user_id:
            raise _ApiError(INVALID_VALUE, '"user_id" must not be empty.')
        if "nickname" not in p:  # required, but may be null
            raise _ApiError(MISSING_PARAMETER, '"nickname" is required.')
        nickname = p.text("nickname", default="", max_length=80)
        profile_url = p.text("profile_url", max_length=2048)
        phone_number = _phone_number(p)
        metadata = p.text_map("metadata") if "metadata" in p else {}
        if user_id in self.state.users:
            raise _ApiError(ALREADY_EXISTS_CODE, "User already exists.")
        user = EmulatedUser(user_id, nickname, profile_url, self.state.now_ms(), phone_number, metadata)
        self.state.users[user_id] = user
        return _json_response(_user_json(user))

    async def get_user(self, request: web.Request) -> web.Response:
        return _json_response(_user_json(self._user(request.match_info["user_id"])))

    async def update_user(self, request: web.Request) -> web.Response:
        user = self._user(request.match_info["user_id"])
        p = await _params(request)
        nickname = p.text("nickname", default=user.nickname, max_length=80)
        profile_url = p.text("profile_url", default=user.profile_url, max_length=2048)
        phone_number = _phone_number(p) if "phone_number" in p else user.phone_number
        is_active = p.flag("is_active", default=user.is_active)
        user.nickname, user.profile_url, user.phone_number, user.is_active = (
            nickname,
            profile_url,
            phone_number,
            is_active,
        )
        return _json_response(_user_json(user))

    async def update_user_metadata(self, request: web.Request) -> web.Response:
        user = self._user(request.match_info["user_id"])
        p = await _params(request)
        changes = _metadata_changes(p, user.metadata)
        user.metadata.update(changes)
        return _json_response(changes)

    # ---- group channels (§4) -------------------------------------------------------------------

    async def create_channel(self, request: web.Request) -> web.Response:
        p = await _params(request)
        user_ids = _member_ids(p)
        channel_url = p.text("channel_url", default="") or f"sendbird_group_channel_{secrets.token_hex(12)}"
        if not _CHANNEL_URL.fullmatch(channel_url):
            raise _ApiError(INVALID_VALUE, '"channel_url" must be 4-100 letters, digits or underscores.')
        name = p.text("name", default="", max_length=191)
        custom_type = p.text("custom_type", default="", max_length=128)
        data = p.text("data", default="")
        operator_ids = p.text_list("operator_ids") if "operator_ids" in p else []
        flags = {
            key: p.flag(key, default=False) for key in ("strict", "is_distinct", "is_public", "is_ephemeral")
        }
        if len(user_ids) > MAX_MEMBERS_PER_CALL:
            raise _ApiError(INVALID_VALUE, f"At most {MAX_MEMBERS_PER_CALL} users per call.")
        members = [u for u in user_ids if u in self.state.users]
        if flags["strict"] and len(members) < len(user_ids):
            raise _ApiError(INVALID_VALUE, "A user in user_ids does not exist.")
        if any(op not in members for op in operator_ids):
            raise _ApiError(INVALID_VALUE, "Operators must also be members.")
        if channel_url in self.state.channels:
            raise _ApiError(ALREADY_EXISTS_CODE, "Channel already exists.")
        channel = EmulatedChannel(
            channel_url,
            name,
            custom_type,
            data,
            self.state.now_ms(),
            members=members,
            operators=operator_ids,
            is_distinct=flags["is_distinct"],
            is_public=flags["is_public"],
            is_ephemeral=flags["is_ephemeral"],
        )
        self.state.channels[channel_url] = channel
        return _json_response(_channel_json(self.state, channel))

    async def get_channel(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        reply = _channel_json(
            self.state,
            channel,
            show_member=_query_flag(request, "show_member", False),
            show_read_receipt=_query_flag(request, "show_read_receipt", False),
        )
        return _json_response(reply)

    async def update_channel(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        p = await _params(request)
        name = p.text("name", default=channel.name, max_length=191)
        custom_type = p.text("custom_type", default=channel.custom_type, max_length=128)
        data = p.text("data", default=channel.data)
        channel.name, channel.custom_type, channel.data = name, custom_type, data
        return _json_response(_channel_json(self.state, channel))

    async def invite(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        user_ids = (await _params(request)).text_list("user_ids")
        if not user_ids:
            raise _ApiError(MISSING_PARAMETER, '"user_ids" must not be empty.')
        if any(u not in self.state.users for u in user_ids):
            raise _ApiError(NOT_FOUND_CODE, "A user in user_ids does not exist.")
        channel.members.extend(u for u in user_ids if u not in channel.members)
        return _json_response(_channel_json(self.state, channel))

    async def leave(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        p = await _params(request)
        user_ids = p.text_list("user_ids")
        p.text(
            "reason", default=""
        )  # checked for its type like Sendbird would; the emulator keeps no history
        remove_operator = p.flag("should_remove_operator_status", default=False)
        # Real behaviour for a non-member is undocumented; failing the whole call, with no one
        # removed, is the strictest reading and keeps the gateway's fallback honest.
        if any(u not in channel.members for u in user_ids):
            raise _ApiError(NOT_FOUND_CODE, "A user in user_ids is not a member.")
        channel.members = [u for u in channel.members if u not in user_ids]
        if remove_operator:
            channel.operators = [u for u in channel.operators if u not in user_ids]
        for user_id in user_ids:
            channel.read_ts.pop(user_id, None)
        return _json_response({})

    async def freeze(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        channel.frozen = (await _params(request)).flag("freeze")
        return _json_response(_channel_json(self.state, channel))

    # ---- messages (§5) -------------------------------------------------------------------------

    async def send_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        p = await _params(request)
        message_type = p.text("message_type")
        if message_type not in ("MESG", "ADMM"):
            raise _ApiError(INVALID_VALUE, "message_type must be MESG or ADMM here (FILE is not emulated).")
        text = p.text("message")
        custom_type = p.text("custom_type", default="", max_length=128)
        data = p.text("data", default="")
        dedup_id = p.text("dedup_id", default="") or None
        silent = p.flag("is_silent", default=False)
        sender_id = p.text("user_id") if message_type == "MESG" else None
        # A repeat returns the original before any other check, so a retry stays a no-op even if the
        # sender left or the channel froze in between. The real reply to a repeat is undocumented
        # (§10 uncertainty 2); the client-side gateway also copes with an error reply.
        if dedup_id is not None and dedup_id in channel.dedup:
            _log.info("sendbird_emulator.duplicate_dedup_id", development_only=True)
            return _json_response(_message_json(self.state, channel.dedup[dedup_id]))
        if sender_id is not None:
            self._user(sender_id)
            if sender_id not in channel.members:
                raise _ApiError(NOT_A_MEMBER, "The sender is not a member of the channel.")
            if channel.frozen and sender_id not in channel.operators:
                raise _ApiError(CHANNEL_FROZEN, "The channel is frozen.")
        message = EmulatedMessage(
            self.state.next_message_id(),
            channel.channel_url,
            message_type,
            text,
            custom_type,
            data,
            sender_id,
            self.state.now_ms(),
            dedup_id=dedup_id,
            silent=silent,
        )
        channel.messages.append(message)
        if dedup_id is not None:
            channel.dedup[dedup_id] = message
        self.webhooks.send("group_channel:message_send", self._message_send_event(channel, message, request))
        return _json_response(_message_json(self.state, message))

    async def list_messages(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        message_ts = _query_int(request, "message_ts", low=0, high=2**63 - 1)
        message_id = _query_int(request, "message_id", low=0, high=2**63 - 1)
        prev_limit = _query_int(request, "prev_limit", default=15, low=0, high=MAX_MESSAGE_PAGE) or 0
        next_limit = _query_int(request, "next_limit", default=15, low=0, high=MAX_MESSAGE_PAGE) or 0
        include = _query_flag(request, "include", True)
        reverse = _query_flag(request, "reverse", False)
        by_id = message_id is not None
        anchor = message_id if message_id is not None else message_ts
        if anchor is None:
            raise _ApiError(MISSING_PARAMETER, '"message_ts" or "message_id" is required.')
        positioned = [
            (m.message_id if by_id else m.created_at, m) for m in _filtered_messages(channel, request)
        ]
        before = [m for pos, m in positioned if pos < anchor]
        at = [m for pos, m in positioned if pos == anchor]
        after = [m for pos, m in positioned if pos > anchor]
        page = (before[-prev_limit:] if prev_limit else []) + (at if include else []) + after[:next_limit]
        if reverse:
            page.reverse()
        return _json_response({"messages": [_message_json(self.state, m) for m in page]})

    async def delete_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        message_id = int(request.match_info["message_id"])
        message = next((m for m in channel.messages if m.message_id == message_id and not m.is_removed), None)
        if message is None:
            raise _ApiError(NOT_FOUND_CODE, "Message not found.")
        message.is_removed = True
        return _json_response({})

    async def mark_as_read(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        user_id = (await _params(request)).text("user_id")
        self._user(user_id)
        if user_id not in channel.members:
            raise _ApiError(NOT_A_MEMBER, "The user is not a member of the channel.")
        channel.read_ts[user_id] = self.state.now_ms()
        self.webhooks.send("group_channel:message_read", self._message_read_event(channel, user_id))
        return _json_response({})

    # ---- channel metadata (§4) -----------------------------------------------------------------

    async def create_metadata(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        metadata = (await _params(request)).text_map("metadata")
        if any(key in channel.metadata for key in metadata):
            raise _ApiError(ALREADY_EXISTS_CODE, "A metadata key already exists.")
        channel.metadata.update(metadata)
        return _json_response(metadata)

    async def update_metadata(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        changes = _metadata_changes(await _params(request), channel.metadata)
        channel.metadata.update(changes)
        return _json_response(changes)

    async def get_metadata(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        keys = _query_list(request, "keys")
        if keys:
            return _json_response({k: channel.metadata[k] for k in keys if k in channel.metadata})
        return _json_response(dict(channel.metadata))

    async def delete_metadata(self, request: web.Request) -> web.Response:
        self._channel(request).metadata.clear()
        return _json_response({})

    async def delete_metadata_key(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel.metadata.pop(request.match_info["key"], None) is None:
            raise _ApiError(NOT_FOUND_CODE, "Metadata key not found.")
        return _json_response({})

    # ---- Business Messaging (§8) ---------------------------------------------------------------

    async def send_notification(self, request: web.Request) -> web.Response:
        """``POST /v1/notifications``: ``template.key``, ``targets`` (user ids), ``mode``, variables.

        Strict readings of an unverified contract: realtime mode takes exactly one target; every
        target must be a user carrying ``phone_number`` (else 400111, the number is never echoed).
        The reply shape is undocumented; ``request_id`` is this emulator's choice.
        """
        p = await _params(request)
        template = p.raw("template")
        if not isinstance(template, dict) or not isinstance(template.get("key"), str) or not template["key"]:
            raise _ApiError(MISSING_PARAMETER, '"template.key" is required.')
        targets = p.text_list("targets")
        mode = p.text("mode", default="realtime")
        if mode not in ("realtime", "batch"):
            raise _ApiError(INVALID_VALUE, '"mode" must be realtime or batch.')
        if not targets or (mode == "realtime" and len(targets) != 1):
            raise _ApiError(INVALID_VALUE, "realtime mode sends to exactly one target.")
        variables = template.get("variables") or {}
        if not isinstance(variables, dict):
            raise _ApiError(JSON_EXPECTED, '"template.variables" must be an object.')
        request_id = secrets.token_hex(12)
        for user_id in targets:
            user = self._user(user_id)
            if not user.phone_number:
                raise _ApiError(INVALID_VALUE, "A target has no phone_number for the SMS channel.")
            own = variables.get(user_id) or {}
            self.state.notifications.append(
                EmulatedNotification(
                    request_id,
                    template["key"],
                    user_id,
                    user.phone_number,
                    {k: v for k, v in own.items() if isinstance(k, str) and isinstance(v, str)},
                )
            )
        return _json_response({"request_id": request_id})

    # ---- webhook payloads (§7) -----------------------------------------------------------------

    def _message_send_event(
        self, channel: EmulatedChannel, message: EmulatedMessage, request: web.Request
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "category": "group_channel:message_send",
            "app_id": self.state.app_id,
            "type": message.type,
            "custom_type": message.custom_type,
            "silent": message.silent,
            "mention_type": "users",
            "mentioned_users": [],
            "sender_ip_addr": request.remote or "",
            "sdk": "API",
            "payload": {
                "message_id": message.message_id,
                "message": message.message,
                "custom_type": message.custom_type,
                "data": message.data,
                "created_at": message.created_at,
                "translations": {},
            },
            "channel": _webhook_channel_json(channel),
        }
        if message.sender_id is not None:  # an admin message has no sender; the key is left out
            event["sender"] = _sender_json(self.state.users[message.sender_id])
        if self.webhooks.include_members:
            event["members"] = [_member_json(self.state, channel, u) for u in channel.members]
        return event

    def _message_read_event(self, channel: EmulatedChannel, user_id: str) -> dict[str, Any]:
        return {
            "category": "group_channel:message_read",
            "app_id": self.state.app_id,
            "channel": _webhook_channel_json(channel),
            "members": [_member_json(self.state, channel, u) for u in channel.members],
            "read_updates": [
                {
                    "user_id": user_id,
                    "read_ts": channel.read_ts[user_id],
                    "channel_unread_message_count": _unread(channel, user_id),
                    "total_unread_message_count": _total_unread(self.state, user_id),
                }
            ],
        }


def _phone_number(p: _Params) -> str:
    phone_number = p.text("phone_number", default="")
    if phone_number and not _E164.fullmatch(phone_number):
        # The value is never echoed back: it may be a real person's number.
        raise _ApiError(INVALID_VALUE, '"phone_number" must be in E.164 format.')
    return phone_number


def _member_ids(p: _Params) -> list[str]:
    """``user_ids``, or the ids in ``users`` (§4: one of the two is required)."""
    if "user_ids" in p or "users" not in p:
        return p.text_list("user_ids")
    users = p.raw("users")
    if not isinstance(users, list) or not all(
        isinstance(u, dict) and isinstance(u.get("user_id"), str) for u in users
    ):
        raise _ApiError(LIST_EXPECTED, '"users" must be a list of objects with a "user_id".')
    return list(dict.fromkeys(u["user_id"] for u in users))


def _metadata_changes(p: _Params, current: Mapping[str, str]) -> dict[str, str]:
    """The ``metadata`` of a PUT; without ``upsert`` every key must exist already (§4)."""
    changes = p.text_map("metadata")
    if not p.flag("upsert", default=False) and any(key not in current for key in changes):
        raise _ApiError(NOT_FOUND_CODE, "Metadata key not found.")
    return changes


def _filtered_messages(channel: EmulatedChannel, request: web.Request) -> list[EmulatedMessage]:
    including_removed = _query_flag(request, "including_removed", False)
    senders = set(_query_list(request, "sender_ids") + _query_list(request, "sender_id"))
    custom_types = set(_query_list(request, "custom_types")) - {"*"}
    message_type = request.query.get("message_type")
    return [
        m
        for m in channel.messages
        if (including_removed or not m.is_removed)
        and (not senders or m.sender_id in senders)
        and (not custom_types or m.custom_type in custom_types)
        and (message_type is None or m.type == message_type)
    ]


# --------------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------------

emulator_state_key = web.AppKey("emulator_state", EmulatorState)
webhook_sender_key = web.AppKey("webhook_sender", WebhookSender)


def _api_middleware(state: EmulatorState) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(("/v3/", "/v1/")):
            return await handler(request)
        state.received.append(
            ReceivedRequest(request.method, request.path, dict(request.query), await _logged_body(request))
        )
        fault = state.faults.take()
        if fault is not None:
            _log.info(
                "sendbird_emulator.fault_applied", kind=fault.kind, path=request.path, development_only=True
            )
            if fault.kind == "error":
                return _error_response(INTERNAL_ERROR, "Internal server error.", status=fault.status)
            if fault.kind == "rate_limit":
                return _error_response(
                    RATE_LIMITED_CODE,
                    "Too many requests.",
                    status=429,
                    headers={RETRY_AFTER_HEADER: f"{fault.retry_after:g}"},
                )
            if fault.kind == "hang":
                await state.faults.hang(fault.hang_seconds)
        response = await _authorised(request, handler, state.api_token)
        if fault is not None and fault.kind == "drop" and request.transport is not None:
            # The effect has happened; closing now means the client never learns it did.
            request.transport.close()
        return response

    return middleware


async def _authorised(request: web.Request, handler: Handler, api_token: str) -> web.StreamResponse:
    given = request.headers.get("Api-Token", "")
    if not hmac.compare_digest(given.encode(), api_token.encode()):
        return _error_response(INVALID_TOKEN_CODE, "Invalid API token.", status=401)
    try:
        return await handler(request)
    except _ApiError as exc:
        return _error_response(exc.code, exc.message, status=exc.status)


async def _logged_body(request: web.Request) -> Any:
    raw = await request.read()  # aiohttp keeps the bytes, so the handler can read them again
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


async def _faults_admin(request: web.Request) -> web.Response:
    """``GET`` lists the active faults, ``POST`` adds one (see ``add_from_json``), ``DELETE`` clears them."""
    faults = request.app[emulator_state_key].faults
    if request.method == "POST":
        try:
            fault = faults.add_from_json(await request.json())
        except ValueError as exc:  # includes a body that is not JSON
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"fault": dataclasses.asdict(fault)}, status=201)
    if request.method == "DELETE":
        faults.clear()
    return web.json_response({"faults": [dataclasses.asdict(f) for f in faults.pending()]})


def create_emulator_app(
    *,
    app_id: str,
    api_token: str,
    webhook_url: str | None = None,
    include_members: bool = False,
    webhook_retry_delay: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    wall_clock_ms: Callable[[], int] = _wall_clock_ms,
) -> web.Application:
    """A fresh emulator app with empty state, answering ``/v3/...`` for ``app_id`` and ``api_token``.

    ``clock`` drives fault time windows; ``wall_clock_ms`` stamps ``created_at``. With
    ``webhook_url`` set, message sends and mark-as-read post signed events there.
    """
    if not api_token:
        raise ValueError("the emulator needs an api_token to check and to sign webhooks with")
    state = EmulatorState(app_id, api_token, FaultInjector(clock), wall_clock_ms=wall_clock_ms)
    webhooks = WebhookSender(
        state, webhook_url, include_members=include_members, retry_delay=webhook_retry_delay
    )
    app = web.Application(middlewares=[_api_middleware(state)])
    app[emulator_state_key] = state
    app[webhook_sender_key] = webhooks
    app.add_routes(_Api(state, webhooks).routes())
    for method in ("GET", "POST", "DELETE"):
        app.router.add_route(method, "/_emulator/faults", _faults_admin)

    async def webhook_session(app: web.Application) -> AsyncIterator[None]:
        await webhooks.start()
        yield
        await webhooks.close()

    app.cleanup_ctx.append(webhook_session)
    return app


@dataclass
class RunningEmulator:
    """An emulator serving on loopback. ``base_url`` is the origin; the client adds ``/v3``."""

    base_url: str
    state: EmulatorState
    _runner: web.AppRunner = field(repr=False)
    sms_webhook_url: str | None = None

    async def drain_webhooks(self) -> None:
        """Wait until every webhook started so far was delivered or given up."""
        await self._runner.app[webhook_sender_key].drain()

    def set_webhook_urls(self, chat_url: str | None, sms_url: str | None = None) -> None:
        """Where chat events (signed, §7) and inbound SMS (the provider this emulator plays) go."""
        self._runner.app[webhook_sender_key].set_url(chat_url)
        self.sms_webhook_url = sms_url

    def receive_sms(self, from_number: str, text: str, *, message_id: str | None = None) -> str:
        """Play the SMS provider: a person at ``from_number`` texted ``text``. Returns the message id.

        Posted to the SMS webhook URL, signed like Sendbird's webhooks (same header and scheme).
        Sending the same ``message_id`` again plays a provider retry.
        """
        if self.sms_webhook_url is None:
            raise ValueError("no SMS webhook URL is configured")
        message_id = message_id or f"SM{secrets.token_hex(16)}"
        event = {
            "category": "sms:inbound",
            "message_id": message_id,
            "from": from_number,
            "text": text,
            "received_at": self.state.now_ms(),
        }
        self._runner.app[webhook_sender_key].send("sms:inbound", event, url=self.sms_webhook_url)
        return message_id

    async def close(self) -> None:
        """Stop serving: hung requests are released, webhooks still in flight are abandoned."""
        self.state.faults.release_hangs()
        await self._runner.cleanup()
        _log.info("sendbird_emulator.stopped", base_url=self.base_url, development_only=True)


async def start_emulator(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    app_id: str = "emulator",
    api_token: str,
    webhook_url: str | None = None,
    include_members: bool = False,
    webhook_retry_delay: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    wall_clock_ms: Callable[[], int] = _wall_clock_ms,
) -> RunningEmulator:
    """Serve a new emulator on ``host`` (loopback only, else ValueError); ``port`` 0 picks a free port."""
    if not _is_loopback(host):
        raise ValueError("the emulator binds loopback addresses only")
    app = create_emulator_app(
        app_id=app_id,
        api_token=api_token,
        webhook_url=webhook_url,
        include_members=include_members,
        webhook_retry_delay=webhook_retry_delay,
        clock=clock,
        wall_clock_ms=wall_clock_ms,
    )
    # Hung requests are released on close, so a short shutdown grace is enough.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound_port = runner.addresses[0][1]
    url_host = f"[{host}]" if ":" in host else host
    running = RunningEmulator(f"http://{url_host}:{bound_port}", app[emulator_state_key], runner)
    _log.info(
        "sendbird_emulator.started",
        base_url=running.base_url,
        app_id=app_id,
        webhooks=webhook_url is not None,
        development_only=True,
    )
    return running


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------------
# python -m integrations.sendbird_emulator
# --------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """Run the emulator until interrupted. The API token comes from ``--api-token`` or the environment."""
    parser = argparse.ArgumentParser(prog="python -m integrations.sendbird_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--app-id", default="emulator")
    parser.add_argument(
        "--api-token",
        default=os.environ.get("SENDBIRD_EMULATOR_API_TOKEN"),
        help="the token clients must send (default: $SENDBIRD_EMULATOR_API_TOKEN)",
    )
    parser.add_argument("--webhook-url", default=None, help="where to POST signed webhook events")
    args = parser.parse_args(argv)
    if not args.api_token:
        parser.error("--api-token or SENDBIRD_EMULATOR_API_TOKEN is required")
    asyncio.run(_serve(args.host, args.port, args.app_id, args.api_token, args.webhook_url))


async def _serve(host: str, port: int, app_id: str, api_token: str, webhook_url: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    running = await start_emulator(
        host=host, port=port, app_id=app_id, api_token=api_token, webhook_url=webhook_url
    )
    try:
        await stop.wait()
    finally:
        await running.close()


if __name__ == "__main__":
    main()
