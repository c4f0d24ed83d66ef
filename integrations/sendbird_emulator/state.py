"""What the emulator knows: users, channels, messages, the request and webhook logs (in memory).

``dedup_mode`` picks how a repeated ``dedup_id`` is answered (each reading the documentation allows).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from integrations.sendbird_emulator.faults import FaultInjector

#: How the emulator answers a ``dedup_id`` it has seen in the channel. UNDOCUMENTED BEHAVIOUR: no
#: Sendbird source says (§2, §8, §10 uncertainty 2), so each reading the documentation allows is a mode:
#: ``original`` (200 with the first message), ``already_exists`` (400202), ``invalid`` (another 4xx:
#: 400111) and ``ignored`` (the repeat is stored as a second message, as outside a migration).
DedupMode = Literal["original", "already_exists", "invalid", "ignored"]
DEDUP_MODES: Final[tuple[DedupMode, ...]] = ("original", "already_exists", "invalid", "ignored")


def system_clock_ms() -> int:
    """Wall-clock milliseconds: what ``created_at`` is stamped with unless a test injects a clock."""
    return time.time_ns() // 1_000_000


def system_clock_us() -> int:
    """Wall-clock microseconds: where message ids come from unless a test injects a clock."""
    return time.time_ns() // 1_000


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
    #: A FILE message's file (name, content type, bytes); None for text and admin messages.
    file: EmulatedFile | None = None


@dataclass(frozen=True)
class EmulatedFile:
    """The file of a FILE message, as uploaded in the multipart part ``file``."""

    name: str
    type: str
    content: bytes = field(repr=False)


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
    wall_clock_ms: Callable[[], int] = system_clock_ms
    users: dict[str, EmulatedUser] = field(default_factory=dict)
    channels: dict[str, EmulatedChannel] = field(default_factory=dict)
    received: list[ReceivedRequest] = field(default_factory=list)
    webhook_deliveries: list[WebhookDelivery] = field(default_factory=list)
    #: Business Messaging sends (§8): what an SMS provider was asked to text, in order.
    notifications: list[EmulatedNotification] = field(default_factory=list)
    #: The answer to a repeated ``dedup_id`` (see :data:`DedupMode`); tests switch it at will.
    dedup_mode: DedupMode = "original"
    #: Where message ids come from (microseconds since the epoch): see :meth:`next_message_id`.
    id_clock_us: Callable[[], int] = field(default=system_clock_us, repr=False)
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
