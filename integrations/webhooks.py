"""Inbound webhooks: store first, answer at once, process in the background.

Sendbird waits 5 s and retries up to 3 times (sendbird-api.md §7), so the HTTP handler only
verifies the signature, stores the raw body in ``webhook_events`` under a unique ``dedupe_key``
(a retry collides and is dropped there) and answers 200. :class:`WebhookProcessor` then claims
stored events (``FOR UPDATE SKIP LOCKED`` and a lease, like the outbox relay, so several instances
may run it), reads each into an engine event (:func:`parse_stored_event`) and hands it to the
handler it was given: the engine's ``handle_inbound`` (engine/inbound.py) decides which workflow
runs, and that workflow takes the event (``SELECT ... FOR UPDATE``: nothing is done unless it is
still pending, so an event two processors hold is handled once) and marks it done in the transaction
of its effects. What is not an event for caremsg (echoes of our own sends: ``sdk: "API"``, our
custom types; other categories) is marked ``ignored`` here. A failing event is retried with backoff,
then marked ``failed``.

Nothing here logs bodies: they carry message text and phone numbers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from engine.inbound import InboundEvent
from engine.nesting import deeper_than
from engine.sms import Keyword
from engine.workflows import messaging
from integrations.background import woken_or_after

log = structlog.get_logger("caremsg.webhooks")

#: custom_types of messages caremsg itself posts; their ``message_send`` webhooks are echoes.
OWN_CUSTOM_TYPES = frozenset(
    # the last two: effects/recalls.py, effects/messages.py
    {"caremsg_message", "caremsg_sms_reply", "caremsg_recall_notice", "caremsg_part2_notice"}
)
SENDBIRD = "sendbird"
SMS = "sms"
#: Sendbird's categories whose payload is one message (and its text): their dedupe key is
#: ``category:message id`` (:func:`sendbird_event_key`), which is how retention finds the copies.
MESSAGE_CATEGORIES = (
    "group_channel:message_send",
    "group_channel:message_update",
    "group_channel:message_delete",
)
MAX_ATTEMPTS = 10


class BadWebhook(ValueError):
    """The (correctly signed) body is not an event we can read."""


@dataclass(frozen=True)
class StoredEvent:
    category: str
    dedupe_key: str


def sendbird_event_key(raw: bytes) -> StoredEvent:
    """Category and dedupe key of a Sendbird event: category + message id, else a digest of the body."""
    event = _json_object(raw)
    category = event.get("category")
    if not isinstance(category, str) or not category or _CONTROL.search(category):
        raise BadWebhook("category")
    payload = event.get("payload")
    message_id = payload.get("message_id") if isinstance(payload, dict) else None
    if isinstance(message_id, int) and not isinstance(message_id, bool):
        return StoredEvent(category, f"{category}:{message_id}")
    # message_read and others carry no message id: the exact body identifies a retry.
    return StoredEvent(category, f"{category}:sha256:{hashlib.sha256(raw).hexdigest()}")


def inbound_sms_event(
    message_id: str, from_number: str, text: str, *, keyword: str | None, provider_answers_keywords: bool
) -> tuple[StoredEvent, bytes]:
    """An inbound SMS as it is stored, whatever provider it came from: the provider's message id is
    the dedupe key (and later the chat ``dedup_id``)."""
    body = {
        "message_id": message_id,
        "from": from_number,
        "text": text,
        "keyword": keyword,
        "provider_answers_keywords": provider_answers_keywords,
    }
    return StoredEvent("sms:inbound", sms_dedupe_key(message_id)), json.dumps(body).encode("utf-8")


def sms_dedupe_key(message_id: str) -> str:
    """The dedupe key of an inbound SMS stored under the provider's message id."""
    return f"sms:{message_id}"


#: NUL and the other control characters but tab and line breaks: PostgreSQL refuses NUL in text, and
#: the dedupe key and category are stored as text (a 500 otherwise; a 400 naming the field now).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


#: No provider's event nests more than a few levels. Deeper is refused whatever the interpreter's
#: parser manages (Python 3.11's json gives up near 1,000 levels, 3.13's past 5,000).
MAX_EVENT_DEPTH = 32


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        event = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested past the parser
        raise BadWebhook("body") from None
    if not isinstance(event, dict) or deeper_than(event, MAX_EVENT_DEPTH):
        raise BadWebhook("body")
    return event


class WebhookInbox:
    """Where verified webhook bodies wait for the processor (``webhook_events``)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def store(self, source: str, event: StoredEvent, raw: bytes) -> bool:
        """Insert the event unless its dedupe key is known; True if it is new (a retry is not)."""
        async with self._sessions() as session, session.begin():
            row = (
                await session.execute(
                    text(
                        "INSERT INTO webhook_events (source, dedupe_key, category, body)"
                        " VALUES (:source, :key, :category, :body)"
                        " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"
                    ),
                    {
                        "source": source,
                        "key": event.dedupe_key[:200],
                        "category": event.category[:64],
                        "body": raw.decode("utf-8", errors="replace"),
                    },
                )
            ).first()
        return row is not None


_CLAIM = text(
    """
    UPDATE webhook_events SET lease_until = now() + make_interval(secs => :lease), attempts = attempts + 1
    WHERE id IN (
        SELECT id FROM webhook_events
        WHERE status = 'pending' AND (lease_until IS NULL OR lease_until < now())
        ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED)
    RETURNING id, source, category, body, attempts
    """
)


#: An event of a claimed batch is leased again, for a whole lease, just before it is processed, if
#: this claim still holds it (still pending, its attempts as the claim set them); else another
#: processor claimed it since (this claim's lease ran out while earlier events were processed) and
#: it is left to that one.
_LEASE_AGAIN = text(
    """
    UPDATE webhook_events SET lease_until = now() + make_interval(secs => :lease)
    WHERE id = :id AND status = 'pending' AND attempts = :attempts
    RETURNING id
    """
)


class WebhookProcessor:
    """Works through stored webhook events until cancelled; a failing event is retried, then ``failed``.

    A claim takes up to ``batch_size`` events under one lease, and each event is leased again just
    before it is processed, so a slow batch does not let another processor take the event being
    processed; an event of the batch another processor claimed meanwhile is skipped. The workflow
    itself takes the event's row in its own transaction and does nothing unless it is still
    pending (``WebhookEventLog.take``): whatever the leases, an event is handled once.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        handle: Callable[[InboundEvent], Awaitable[str]],
        *,
        poll_interval: float = 1.0,
        lease_seconds: float = 30.0,
        batch_size: int = 50,
    ) -> None:
        self._sessions = sessions
        self._handle = handle
        self._poll_interval = poll_interval
        self._lease = lease_seconds
        self._batch = batch_size
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                done = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a database outage: wait it out
                log.warning("webhooks.cycle_failed", error=type(exc).__name__)
                done = 0
            if done == 0:
                await woken_or_after(self._wake, self._poll_interval)
                self._wake.clear()

    async def run_once(self) -> int:
        async with self._sessions() as session, session.begin():
            rows = (await session.execute(_CLAIM, {"lease": self._lease, "limit": self._batch})).all()
        for row in sorted(rows, key=lambda r: r.id):
            if not await self._still_ours(row.id, row.attempts):
                log.info("webhooks.claimed_elsewhere", event_id=row.id, category=row.category)
                continue
            try:
                status = await self._process(row.id, row.source, row.category, row.body)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._failed(row.id, row.attempts, type(exc).__name__)
                continue
            log.info("webhooks.processed", event_id=row.id, category=row.category, status=status)
        return len(rows)

    async def _still_ours(self, event_id: int, attempts: int) -> bool:
        """Lease the event again, for a whole lease, if this claim still holds it."""
        async with self._sessions() as session, session.begin():
            found = await session.execute(
                _LEASE_AGAIN, {"id": event_id, "attempts": attempts, "lease": self._lease}
            )
            return found.first() is not None

    async def _process(self, event_id: int, source: str, category: str, body: str) -> str:
        event = parse_stored_event(event_id, source, category, body)
        if event is None:
            await self._finish(event_id, messaging.IGNORED)
            return messaging.IGNORED
        return await self._handle(event)

    async def _finish(self, event_id: int, status: str) -> None:
        # An event caremsg ignores keeps no body: the echo of its own post is a copy of text it
        # holds where retention and legal holds govern it; other categories carry text it never uses.
        async with self._sessions() as session, session.begin():
            await session.execute(
                text(
                    "UPDATE webhook_events SET status = :status, processed_at = now(), lease_until = NULL,"
                    " body = CASE WHEN :ignored THEN '' ELSE body END WHERE id = :id AND status = 'pending'"
                ),
                {"status": status, "ignored": status == messaging.IGNORED, "id": event_id},
            )

    async def _failed(self, event_id: int, attempts: int, error: str) -> None:
        """Put the event back for a retry after a backoff, or mark it ``failed`` after MAX_ATTEMPTS."""
        final = attempts >= MAX_ATTEMPTS
        log.warning("webhooks.processing_failed", event_id=event_id, error=error, final=final)
        async with self._sessions() as session, session.begin():
            await session.execute(
                text(
                    "UPDATE webhook_events SET last_error = :error,"
                    " status = CASE WHEN :final THEN 'failed' ELSE status END,"
                    " lease_until = now() + make_interval(secs => :delay)"
                    # Not an event another processor handled or claimed since this one did.
                    " WHERE id = :id AND status = 'pending' AND attempts = :attempts"
                ),
                {
                    "error": error,
                    "final": final,
                    "delay": min(60.0, 0.5 * 2**attempts),
                    "id": event_id,
                    "attempts": attempts,
                },
            )


def parse_stored_event(event_id: int, source: str, category: str, body: str) -> InboundEvent | None:
    """The engine event a stored webhook carries, or None when it is nothing for caremsg to act on."""
    event = json.loads(body)
    if source == SMS:
        word = event.get("keyword")
        return messaging.InboundSms(
            event_id,
            str(event["message_id"]),
            str(event["from"]),
            str(event["text"]),
            provider_keyword=Keyword(word) if word in set(Keyword) else None,
            provider_answers_keywords=event.get("provider_answers_keywords") is True,
        )
    if category == "group_channel:message_send":
        return _posted(event_id, event)
    if category == "group_channel:message_read":
        return _read(event_id, event)
    return None


def _posted(event_id: int, event: dict[str, Any]) -> messaging.ChatMessagePosted | None:
    """A message staff posted with a chat SDK; None for echoes of our own API sends and for the rest."""
    payload, channel, sender = event.get("payload"), event.get("channel"), event.get("sender")
    if event.get("sdk") == "API" or event.get("type") != "MESG":
        return None
    if not (isinstance(payload, dict) and isinstance(channel, dict) and isinstance(sender, dict)):
        return None
    if payload.get("custom_type") in OWN_CUSTOM_TYPES or event.get("custom_type") in OWN_CUSTOM_TYPES:
        return None
    message_id, channel_url, sender_id = (
        payload.get("message_id"),
        channel.get("channel_url"),
        sender.get("user_id"),
    )
    if not (isinstance(message_id, int) and isinstance(channel_url, str) and isinstance(sender_id, str)):
        return None
    created = payload.get("created_at")
    return messaging.ChatMessagePosted(
        event_id,
        channel_url,
        sender_id,
        message_id,
        str(payload.get("message") or ""),
        created if isinstance(created, int) else 0,
    )


def _read(event_id: int, event: dict[str, Any]) -> messaging.ChatRead | None:
    channel, updates = event.get("channel"), event.get("read_updates")
    if not isinstance(channel, dict) or not isinstance(channel.get("channel_url"), str):
        return None
    reads = tuple(
        (u["user_id"], u["read_ts"])
        for u in (updates if isinstance(updates, list) else [])
        if isinstance(u, dict) and isinstance(u.get("user_id"), str) and isinstance(u.get("read_ts"), int)
    )
    return messaging.ChatRead(event_id, channel["channel_url"], reads)
