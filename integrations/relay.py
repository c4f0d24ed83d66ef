"""The outbox relay: performs the chat side effects that workflows recorded, until each one succeeds.

Several relays (in several service instances) can run at once: each claims due rows with
``FOR UPDATE SKIP LOCKED`` and takes a lease on them, so no row is worked on twice at the same time,
and a relay killed mid-delivery leaves rows that another relay picks up when the lease runs out.
Messages carry ``dedup_id = caremsg_msg_<id>`` so a retry after an ambiguous failure (the request
reached Sendbird, the answer did not reach us) does not post the message twice.

Retries use exponential backoff with full jitter; errors the chat provider calls permanent, or
running out of attempts, mark the row (and its message or conversation) ``failed`` with a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from engine.errors import ChatGatewayError, ChatRateLimited
from engine.ports import ChatGateway
from engine.workflows.conversations import ENSURE_CHANNEL, SEND_MESSAGE

log = structlog.get_logger("caremsg.relay")

_CLAIM = text(
    """
    UPDATE outbox SET lease_until = now() + make_interval(secs => :lease), attempts = attempts + 1
    WHERE id IN (
        SELECT o.id FROM outbox o LEFT JOIN conversations c ON c.id = o.conversation_id
        WHERE o.status = 'pending' AND o.next_attempt_at <= now()
          AND (o.lease_until IS NULL OR o.lease_until < now())
          -- everything about a conversation waits until its channel exists
          AND (o.kind = 'ensure_channel' OR o.conversation_id IS NULL OR c.channel_state = 'ready')
          -- a conversation's messages are posted in the order they were accepted, even after an
          -- outage (retries with jitter would shuffle them): each waits for the earlier ones
          AND (o.kind <> 'send_message' OR NOT EXISTS (
                SELECT 1 FROM outbox e WHERE e.kind = 'send_message' AND e.status = 'pending'
                  AND e.conversation_id = o.conversation_id AND e.id < o.id))
        ORDER BY o.id
        LIMIT :limit
        FOR UPDATE OF o SKIP LOCKED)
    RETURNING id, kind, payload, attempts, conversation_id, message_id
    """
)


# Every delivery's final outcome is one audit record, written in the transaction that settles the
# outbox entry (so a retried delivery is recorded once). The relay acts for the system: no actor.
_AUDIT_OUTCOME = text(
    """
    INSERT INTO audit_events
        (event, workflow, outcome, resource_type, resource_id, patient_id, reason, details)
    SELECT 'delivery', :workflow, :outcome, :resource_type, :resource_id,
           (SELECT patient_id FROM conversations WHERE id = :conversation_id), :reason,
           CAST(:details AS jsonb)
    """
)


def _audit_outcome_params(entry: OutboxEntry, status: str, reason: str | None) -> dict[str, Any]:
    resource_type: str
    resource_id: str | None
    if entry.message_id is not None:
        resource_type, resource_id = "message", str(entry.message_id)
    else:
        resource_type = "conversation"
        resource_id = None if entry.conversation_id is None else str(entry.conversation_id)
    return {
        "workflow": f"delivery.{entry.kind}",
        "outcome": "success" if status == "done" else "failure",
        "resource_type": resource_type,
        "resource_id": resource_id,
        "conversation_id": entry.conversation_id,
        "reason": reason or "delivered",
        "details": json.dumps({"outbox_id": entry.id, "attempts": entry.attempts}),
    }


@dataclass(frozen=True)
class RelaySettings:
    poll_interval: float = 1.0
    base_backoff: float = 1.0
    max_backoff: float = 300.0
    max_attempts: int = 50
    batch_size: int = 20
    lease_seconds: float = 60.0


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    conversation_id: int | None
    message_id: int | None


@dataclass(frozen=True)
class RelayContext:
    sessions: async_sessionmaker[AsyncSession]
    chat: ChatGateway


class OutboxKind(Protocol):
    """How to carry out one kind of outbox entry. Registered with the relay by ``kind``."""

    kind: str

    async def deliver(self, entry: OutboxEntry, ctx: RelayContext) -> None:
        """Perform the side effect; raise ChatGatewayError on failure. Must be safe to repeat."""
        ...

    async def succeeded(self, entry: OutboxEntry, session: AsyncSession) -> None:
        """Record success, in the transaction that marks the entry done."""
        ...

    async def failed(self, entry: OutboxEntry, session: AsyncSession, reason: str) -> None:
        """Record a permanent failure, in the transaction that marks the entry failed."""
        ...


class OutboxRelay:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        chat: ChatGateway,
        settings: RelaySettings = RelaySettings(),
        *,
        kinds: Sequence[OutboxKind] = (),
        jitter: Callable[[float], float] = lambda cap: random.uniform(0, cap),  # noqa: S311 - not crypto
    ) -> None:
        self._ctx = RelayContext(sessions, chat)
        self._settings = settings
        builtin: list[OutboxKind] = [EnsureChannel(), SendMessage()]
        self._kinds: dict[str, OutboxKind] = {k.kind: k for k in (*builtin, *kinds)}
        self._jitter = jitter
        self._wake = asyncio.Event()
        # Entries this relay leased but could not finish (the database went away mid-cycle): their
        # leases are given back as soon as it is reachable again, not after lease_seconds.
        self._unfinished: set[int] = set()

    def wake(self) -> None:
        self._wake.set()

    def backoff(self, attempts: int) -> float:
        """Full jitter: a random delay up to base·2^(attempts-1), capped."""
        cap = min(self._settings.max_backoff, self._settings.base_backoff * 2 ** max(0, attempts - 1))
        return self._jitter(cap)

    async def run(self) -> None:
        """Deliver until cancelled; database or chat outages are waited out, never fatal."""
        while True:
            try:
                await self._release_unfinished()
                done = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("relay.cycle_failed", error=type(exc).__name__)
                done = 0
            if done == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._settings.poll_interval)
                self._wake.clear()

    async def run_once(self) -> int:
        """Claim one batch of due entries and work through it; returns how many were attempted."""
        async with self._ctx.sessions() as session, session.begin():
            rows = (
                await session.execute(
                    _CLAIM, {"lease": self._settings.lease_seconds, "limit": self._settings.batch_size}
                )
            ).all()
        entries = sorted((OutboxEntry(*row) for row in rows), key=lambda e: e.id)
        self._unfinished.update(e.id for e in entries)
        for entry in entries:
            await self._attempt(entry)
            self._unfinished.discard(entry.id)
        return len(entries)

    async def _release_unfinished(self) -> None:
        if not self._unfinished:
            return
        async with self._ctx.sessions() as session, session.begin():
            await session.execute(
                text("UPDATE outbox SET lease_until = NULL WHERE id = ANY(:ids) AND status = 'pending'"),
                {"ids": sorted(self._unfinished)},
            )
        self._unfinished.clear()

    async def _attempt(self, entry: OutboxEntry) -> None:
        kind = self._kinds.get(entry.kind)
        if kind is None:
            await self._finish(entry, "failed", "unknown_kind", None)
            return
        try:
            await kind.deliver(entry, self._ctx)
        except ChatGatewayError as exc:
            if exc.retryable and entry.attempts < self._settings.max_attempts:
                delay = self.backoff(entry.attempts)
                if isinstance(exc, ChatRateLimited) and exc.retry_after:
                    delay = max(delay, exc.retry_after)
                await self._retry(entry, exc.code, delay)
            else:
                await self._finish(entry, "failed", exc.code, kind)
            return
        await self._finish(entry, "done", None, kind)

    async def _finish(
        self, entry: OutboxEntry, status: str, reason: str | None, kind: OutboxKind | None
    ) -> None:
        async with self._ctx.sessions() as session, session.begin():
            await session.execute(
                text(
                    "UPDATE outbox SET status = :status, lease_until = NULL, last_error = :reason,"
                    " done_at = CASE WHEN :done THEN now() END WHERE id = :id"
                ),
                # A separate flag: one parameter used as both varchar and text makes PostgreSQL
                # refuse the statement ("inconsistent types deduced for parameter").
                {"status": status, "reason": reason, "id": entry.id, "done": status == "done"},
            )
            if kind is not None and status == "done":
                await kind.succeeded(entry, session)
            elif kind is not None:
                await kind.failed(entry, session, reason or "failed")
            await session.execute(_AUDIT_OUTCOME, _audit_outcome_params(entry, status, reason))
        if status == "done":
            log.info("relay.delivered", outbox_id=entry.id, kind=entry.kind, attempts=entry.attempts)
        else:
            log.warning("relay.delivery_failed", outbox_id=entry.id, kind=entry.kind, reason=reason)

    async def _retry(self, entry: OutboxEntry, reason: str, delay: float) -> None:
        async with self._ctx.sessions() as session, session.begin():
            await session.execute(
                text(
                    "UPDATE outbox SET next_attempt_at = now() + make_interval(secs => :delay),"
                    " lease_until = NULL, last_error = :reason WHERE id = :id"
                ),
                {"delay": delay, "reason": reason, "id": entry.id},
            )
        log.info(
            "relay.retry_scheduled",
            outbox_id=entry.id,
            kind=entry.kind,
            attempts=entry.attempts,
            reason=reason,
            delay_seconds=round(delay, 3),
        )


class EnsureChannel:
    """Create a conversation's group channel with every member (users created first as needed)."""

    kind = ENSURE_CHANNEL

    async def deliver(self, entry: OutboxEntry, ctx: RelayContext) -> None:
        conversation_id = int(entry.payload["conversation_id"])
        async with ctx.sessions() as session:
            conv = (
                await session.execute(
                    text("SELECT id, title, channel_url FROM conversations WHERE id = :id"),
                    {"id": conversation_id},
                )
            ).one()
            staff = (
                await session.execute(
                    text(
                        "SELECT u.chat_user_id, u.first_name, u.last_name FROM conversation_members m"
                        " JOIN users u ON u.id = m.user_id WHERE m.conversation_id = :id ORDER BY u.id"
                    ),
                    {"id": conversation_id},
                )
            ).all()
            external = (
                await session.execute(
                    text(
                        "SELECT chat_user_id, phone_number FROM external_participants"
                        " WHERE conversation_id = :id ORDER BY id"
                    ),
                    {"id": conversation_id},
                )
            ).all()
        for user in staff:
            # Sendbird caps nicknames at 80 characters (sendbird-api.md §3).
            nickname = f"{user.first_name} {user.last_name[:1]}."
            await ctx.chat.ensure_user(user.chat_user_id, nickname[:80])
        for ext in external:
            await ctx.chat.ensure_user(
                ext.chat_user_id, "External participant", phone_number=ext.phone_number
            )
        await ctx.chat.ensure_channel(
            conv.channel_url,
            name=conv.title[:191],  # Sendbird caps channel names at 191 characters (§4)
            user_ids=[u.chat_user_id for u in staff] + [e.chat_user_id for e in external],
            custom_type="caremsg_conversation",
            data=json.dumps({"conversation_id": conversation_id}),
        )

    async def succeeded(self, entry: OutboxEntry, session: AsyncSession) -> None:
        await session.execute(
            text("UPDATE conversations SET channel_state = 'ready' WHERE id = :id"),
            {"id": entry.payload["conversation_id"]},
        )

    async def failed(self, entry: OutboxEntry, session: AsyncSession, reason: str) -> None:
        await session.execute(
            text("UPDATE conversations SET channel_state = 'failed' WHERE id = :id"),
            {"id": entry.payload["conversation_id"]},
        )


class SendMessage:
    """Post a stored message into its channel as its sender, with ``dedup_id`` against duplicates."""

    kind = SEND_MESSAGE

    async def deliver(self, entry: OutboxEntry, ctx: RelayContext) -> None:
        message_id = int(entry.payload["message_id"])
        async with ctx.sessions() as session:
            msg = (
                await session.execute(
                    text(
                        "SELECT m.id, m.body, c.channel_url, u.chat_user_id FROM messages m"
                        " JOIN conversations c ON c.id = m.conversation_id JOIN users u ON u.id = m.sender_id"
                        " WHERE m.id = :id"
                    ),
                    {"id": message_id},
                )
            ).one()
        sent = await ctx.chat.send_message(
            msg.channel_url,
            sender_id=msg.chat_user_id,
            text=msg.body,
            dedup_id=f"caremsg_msg_{message_id}",
            custom_type="caremsg_message",
            data=json.dumps({"message_id": message_id}),
        )
        # Remembered for succeeded(), which runs in the completion transaction.
        self._sent[entry.id] = sent.message_id
        self._sent_ts[entry.id] = sent.created_at_ms

    def __init__(self) -> None:
        self._sent: dict[int, int] = {}
        self._sent_ts: dict[int, int] = {}

    async def succeeded(self, entry: OutboxEntry, session: AsyncSession) -> None:
        await session.execute(
            text("UPDATE messages SET state = 'sent', chat_message_id = :cid WHERE id = :id"),
            {"cid": self._sent.pop(entry.id, None), "id": entry.payload["message_id"]},
        )
        # The channel's delivery row (issue 3); read receipts compare their read_ts with provider_ts_ms.
        await session.execute(
            text(
                "UPDATE message_deliveries SET state = 'sent', provider_ts_ms = :ts, updated_at = now()"
                " WHERE message_id = :id AND recipient = 'channel' AND state = 'queued'"
            ),
            {"ts": self._sent_ts.pop(entry.id, None), "id": entry.payload["message_id"]},
        )

    async def failed(self, entry: OutboxEntry, session: AsyncSession, reason: str) -> None:
        self._sent.pop(entry.id, None)
        self._sent_ts.pop(entry.id, None)
        await session.execute(
            text("UPDATE messages SET state = 'failed' WHERE id = :id"), {"id": entry.payload["message_id"]}
        )
        await session.execute(
            text(
                "UPDATE message_deliveries SET state = 'failed', reason = :reason, updated_at = now()"
                " WHERE message_id = :id AND recipient = 'channel'"
            ),
            {"reason": reason, "id": entry.payload["message_id"]},
        )
