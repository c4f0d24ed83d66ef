"""The outbox relay: performs the chat side effects that workflows recorded, until each one succeeds.

Several relays (in several service instances) can run at once: each claims due rows with
``FOR UPDATE SKIP LOCKED`` and takes a lease on them, so no row is worked on twice at the same time,
and a relay killed mid-delivery leaves rows that another relay picks up when the lease runs out. The
lease is short (``lease_seconds``, 10 s) and renewed by a heartbeat while the relay runs, so a crash
pauses the conversations it was delivering for seconds, however long a delivery may take.

**Reconciliation, not trust** (sendbird-api.md §8). Every chat post carries caremsg's own id of what
it posts in ``data``, a field Sendbird returns with every message. After an ambiguous outcome (a
timeout, a dropped connection, a 5xx, any error answering a repeat) and before any repeat of a
post, the relay reads the channel's recent messages (:func:`post_once`): if the post landed, its
Sendbird id is recorded and nothing is posted again. ``dedup_id`` stays as a second layer only,
because what Sendbird answers a repeated one is not documented. Channel creation and membership
changes read the channel before repeating (``repeat``). This holds as long as a post in flight
ends before its lease does (``lease_seconds`` well above the chat client's timeout): a post still
in flight cannot be seen by another relay's read.

**Chat and texts apart** (``lane``). A relay may be limited to one family of kinds: the service
runs one relay for chat effects and one for texts, each with its own claims, waves and rate budget,
so a backlog of texts never holds up chat posts. Within a family a conversation's entries keep
their order: chat posts after each other, texts after each other.

Retries use exponential backoff with full jitter; errors the chat provider calls permanent, or
running out of attempts, mark the row (and its message or conversation) ``failed`` with a reason.

**What a batch costs.** The relay runs in the service's process, next to the request handlers, so
every database round trip it saves is CPU the handlers get back. Per batch of claimed entries:

- one transaction claims the batch and, in it, reads what delivering it needs: a kind with a
  ``prepare`` hook loads its whole share of the batch with one query (a ``send_message`` entry
  then needs no read of its own);
- the batch is split into lanes, one per conversation, each in claim order (the order the entries
  were accepted in). A *wave* takes the next entry of every lane and delivers them concurrently,
  at most ``concurrency`` at a time, so conversations do not wait for each other while each
  conversation's entries go out strictly one after the other. A lane stops at an entry that must
  be retried, and its later entries are given back untried (their attempt not counted), so nothing
  of a conversation overtakes what was accepted before it. Across batches and relays the claim
  keeps the order: it lets only a conversation's oldest pending ``send_message`` in;
- each wave is settled in ONE transaction: one statement updates every outbox row of the wave and
  inserts the ``delivery.*`` audit record of each entry it finishes, and a kind with a ``settle``
  hook records all its outcomes with multi-row statements (else its per-entry hooks run).

**Why each wave is settled at once, not the batch at its end.** Between a side effect and the commit
of its settle, a relay that dies leaves an entry that is delivered again when its lease runs out.
For a chat message that costs one read (the repeat finds the post and records it). SMS through
Business Messaging has no dedup key: ``send_sms`` skips a text whose delivery row is already
settled, but a text sent and not yet settled is sent again, so for texts that window is a
duplicate window. Settling after every wave keeps it to one wave (its slowest delivery and one
commit) instead of a whole batch of waves.

**Guarantees kept for settling.** A settle only touches entries this relay still holds (status
``pending`` and the ``attempts`` its claim set: a relay whose lease ran out and was re-claimed
elsewhere settles nothing of it), so every entry gets exactly one ``delivery.*`` audit record, in
the transaction that finishes it. A settle that fails (the database went away, a deadlock) loses
nothing: the entries stay leased, their outcomes are kept and settled first thing in the next
cycle, so nothing is delivered again for it. Outcomes that cannot be settled after
``_RESETTLE_TRIES`` attempts with the database reachable are dropped and their entries given
back, to be delivered again (harmless for chat, a possible duplicate for a text). Entries leased
but not delivered when a cycle fails are given back as soon as the database answers again, not
after ``lease_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from engine.errors import ChatGatewayError, ChatRateLimited
from engine.ports import ChatGateway, SentChatMessage
from engine.workflows.conversations import ENSURE_CHANNEL, SEND_MESSAGE
from integrations.db.base import is_unavailable
from integrations.db.uow import audit_insert_sql, audit_object_sql

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
          -- and its texts go out in that order too
          AND (o.kind <> 'send_sms' OR o.conversation_id IS NULL OR NOT EXISTS (
                SELECT 1 FROM outbox e WHERE e.kind = 'send_sms' AND e.status = 'pending'
                  AND e.conversation_id = o.conversation_id AND e.id < o.id))
          AND (CAST(:only AS text[]) IS NULL OR o.kind = ANY(CAST(:only AS text[])))
          AND NOT o.kind = ANY(CAST(:except AS text[]))
        ORDER BY o.id
        LIMIT :limit
        FOR UPDATE OF o SKIP LOCKED)
    RETURNING id, kind, payload, attempts, conversation_id, message_id
    """
)

# One statement settles a wave: the outbox rows (finished, rescheduled, or given back untried) and,
# for each entry it finishes, its audit record. Only rows this relay still holds are touched: still
# pending, with the attempt count of this relay's claim (a later claim elsewhere has counted one
# more). Settling the same outcomes twice (a commit whose answer was lost) therefore changes nothing
# the second time. The relay acts for the system: audit records have no actor. Ids come back so the
# kinds record only what was settled here.
# The relay's audit records, in the one column list every audit insert uses (integrations/db/uow.py).
_DELIVERY_EVENT = audit_object_sql(
    event="'delivery'",
    workflow="'delivery.' || t.kind",
    outcome="CASE WHEN t.outcome = 'done' THEN 'success' ELSE 'failure' END",
    resource_type="CASE WHEN t.message_id IS NOT NULL THEN 'message' ELSE 'conversation' END",
    resource_id="CAST(COALESCE(t.message_id, t.conversation_id) AS text)",
    patient_id="c.patient_id",
    reason="COALESCE(t.reason, 'delivered')",
    details="jsonb_build_object('outbox_id', t.id, 'attempts', t.attempts)",
)
_DELIVERY_AUDIT = audit_insert_sql(
    f"""(SELECT coalesce(jsonb_agg({_DELIVERY_EVENT} ORDER BY t.id), '[]'::jsonb)
         FROM settled t LEFT JOIN conversations c ON c.id = t.conversation_id
         WHERE t.outcome IN ('done', 'failed'))"""  # noqa: S608 - constants; every value is bound
)

_SETTLE = text(
    f"""
    WITH s AS (
        SELECT * FROM unnest(
            CAST(:ids AS integer[]), CAST(:attempts AS integer[]), CAST(:outcomes AS text[]),
            CAST(:reasons AS text[]), CAST(:delays AS double precision[])
        ) AS s(id, attempts, outcome, reason, delay)
    ), settled AS (
        UPDATE outbox o SET
            status = CASE WHEN s.outcome IN ('done', 'failed') THEN s.outcome ELSE 'pending' END,
            lease_until = NULL,
            last_error = CASE WHEN s.outcome = 'untried' THEN o.last_error ELSE s.reason END,
            done_at = CASE WHEN s.outcome = 'done' THEN now() END,
            next_attempt_at = CASE WHEN s.outcome = 'retry'
                THEN now() + make_interval(secs => s.delay) ELSE o.next_attempt_at END,
            -- given back untried: the claim counted an attempt that was never made
            attempts = CASE WHEN s.outcome = 'untried' THEN o.attempts - 1 ELSE o.attempts END
        FROM s
        WHERE o.id = s.id AND o.status = 'pending' AND o.attempts = s.attempts
        RETURNING o.id, o.kind, o.attempts, o.conversation_id, o.message_id, s.outcome, s.reason
    ), audited AS (
        {_DELIVERY_AUDIT}
    )
    SELECT id FROM settled
    """  # noqa: S608 - assembled from constants; every value is a bound parameter
)

_RELEASE = text(
    """
    UPDATE outbox o SET lease_until = NULL
    FROM unnest(CAST(:ids AS integer[]), CAST(:attempts AS integer[])) AS s(id, attempts)
    WHERE o.id = s.id AND o.status = 'pending' AND o.attempts = s.attempts
    """
)

# The relay's heartbeat: entries it still holds keep their lease while it lives (rows it settled
# meanwhile have no lease left to renew). SKIP LOCKED: a row being settled right now needs no
# renewal, and the heartbeat never waits on a settle, so the two cannot deadlock.
_RENEW = text(
    """
    UPDATE outbox SET lease_until = now() + make_interval(secs => :lease)
    WHERE id IN (
        SELECT o.id FROM outbox o
        JOIN unnest(CAST(:ids AS integer[]), CAST(:attempts AS integer[])) AS s(id, attempts)
          ON o.id = s.id AND o.attempts = s.attempts
        WHERE o.status = 'pending' AND o.lease_until IS NOT NULL
        FOR UPDATE OF o SKIP LOCKED)
    """
)

#: How often kept outcomes are settled again, with the database reachable, before they are dropped.
_RESETTLE_TRIES = 3


@dataclass(frozen=True)
class RelaySettings:
    poll_interval: float = 1.0
    base_backoff: float = 1.0
    max_backoff: float = 300.0
    max_attempts: int = 50
    batch_size: int = 20
    #: A claim's lease, renewed every third of it while the relay runs (``run``): a relay that dies
    #: (kill -9) holds up its entries for at most this long.
    lease_seconds: float = 10.0
    #: Deliveries in flight at once (each of a different conversation).
    concurrency: int = 8
    #: Claim only these kinds (None: every kind) and none of ``skip_kinds``; the service runs one
    #: relay for texts and one for everything else.
    claim_kinds: tuple[str, ...] | None = None
    skip_kinds: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    conversation_id: int | None
    message_id: int | None
    #: What the kind's ``prepare`` loaded for this entry (None without one); ``deliver`` reads it.
    prepared: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class RelayContext:
    sessions: async_sessionmaker[AsyncSession]
    chat: ChatGateway


class OutboxKind(Protocol):
    """How to carry out one kind of outbox entry. Registered with the relay by ``kind``.

    Two hooks are optional, for kinds that see volume (see :class:`PreparingKind` and
    :class:`SettlingKind`): ``prepare`` loads a whole batch's data in one query, ``settle``
    records a whole wave's outcomes with multi-row statements.
    """

    kind: str

    async def deliver(self, entry: OutboxEntry, ctx: RelayContext) -> None:
        """Perform the side effect; raise ChatGatewayError on failure. Must be safe to repeat.

        Deliveries of different conversations run concurrently; one conversation's never do.
        """
        ...

    async def succeeded(self, entry: OutboxEntry, session: AsyncSession) -> None:
        """Record success, in the transaction that marks the entry done."""
        ...

    async def failed(self, entry: OutboxEntry, session: AsyncSession, reason: str) -> None:
        """Record a permanent failure, in the transaction that marks the entry failed."""
        ...


@runtime_checkable
class PreparingKind(Protocol):
    """An outbox kind that reads what its deliveries need for a whole batch at once."""

    async def prepare(self, entries: Sequence[OutboxEntry], session: AsyncSession) -> Mapping[int, object]:
        """Load what delivering ``entries`` needs, in as few statements as possible, by outbox id.

        Runs in the claim's transaction. Each value reaches ``deliver`` as ``entry.prepared``; an
        entry left out is delivered without (``deliver`` must then read for itself).
        """
        ...


@runtime_checkable
class SettlingKind(Protocol):
    """An outbox kind that records a wave's outcomes at once instead of entry by entry."""

    async def settle(
        self, done: Sequence[OutboxEntry], failed: Sequence[tuple[OutboxEntry, str]], session: AsyncSession
    ) -> None:
        """Record these successes and permanent failures (with reasons), in the settling transaction.

        Replaces ``succeeded`` and ``failed`` for this kind.
        """
        ...


Outcome = Literal["done", "failed", "retry", "untried"]


@dataclass(frozen=True)
class _Settled:
    """What became of one claimed entry, to be written by the wave's settle."""

    entry: OutboxEntry
    outcome: Outcome
    reason: str | None = None
    delay: float | None = None


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
        if settings.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._ctx = RelayContext(sessions, chat)
        self._settings = settings
        builtin: list[OutboxKind] = [EnsureChannel(), SendMessage()]
        self._kinds: dict[str, OutboxKind] = {k.kind: k for k in (*builtin, *kinds)}
        self._jitter = jitter
        self._wake = asyncio.Event()
        self._gate = asyncio.Semaphore(settings.concurrency)
        # Entries this relay leased but could not finish (the database went away mid-cycle), by id,
        # with the attempt count of the claim: their leases are given back as soon as the database is
        # reachable again, not after lease_seconds.
        self._unfinished: dict[int, int] = {}
        # Outcomes of deliveries whose settle failed: settled again before anything else.
        self._unsettled: list[_Settled] = []
        self._resettle_failures = 0
        #: Deliveries put back for another attempt since start (the caremsg_relay_retries metric).
        self.retries = 0

    def wake(self) -> None:
        self._wake.set()

    def backoff(self, attempts: int) -> float:
        """Full jitter: a random delay up to base·2^(attempts-1), capped."""
        cap = min(self._settings.max_backoff, self._settings.base_backoff * 2 ** max(0, attempts - 1))
        return self._jitter(cap)

    async def run(self) -> None:
        """Deliver until cancelled; database or chat outages are waited out, never fatal."""
        heartbeat = asyncio.create_task(self._keep_leases(), name="outbox-relay-leases")
        try:
            await self._run()
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _keep_leases(self) -> None:
        """Renew the lease of every entry this relay holds, every third of the lease, so a slow
        delivery keeps its entries while a relay that died frees them within one lease."""
        while True:
            await asyncio.sleep(self._settings.lease_seconds / 3)
            held = dict(self._unfinished)
            held.update((s.entry.id, s.entry.attempts) for s in self._unsettled)
            if not held:
                continue
            ids = sorted(held)
            try:
                async with self._ctx.sessions() as session, session.begin():
                    await session.execute(
                        _RENEW,
                        {
                            "ids": ids,
                            "attempts": [held[i] for i in ids],
                            "lease": self._settings.lease_seconds,
                        },
                    )
            except Exception as exc:  # the database may be away; the cycle finds out itself
                log.warning("relay.lease_renewal_failed", error=type(exc).__name__)

    async def _run(self) -> None:
        while True:
            try:
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
        """Finish what an earlier cycle left, then claim one batch of due entries and work through it
        wave by wave; returns how many entries were claimed."""
        await self._recover()
        entries = await self._claim()
        self._unfinished.update((e.id, e.attempts) for e in entries)
        lanes = _lanes(entries)
        while lanes:
            wave = [lane.popleft() for lane in lanes]
            outcomes = await asyncio.gather(*(self._attempt(entry) for entry in wave))
            still: list[deque[OutboxEntry]] = []
            given_back: list[_Settled] = []
            for lane, outcome in zip(lanes, outcomes, strict=True):
                if outcome.outcome == "retry":
                    self.retries += 1
                    given_back.extend(_Settled(entry, "untried") for entry in lane)
                elif lane:
                    still.append(lane)
            await self._settle_wave([*outcomes, *given_back])
            lanes = still
        return len(entries)

    async def _claim(self) -> list[OutboxEntry]:
        async with self._ctx.sessions() as session, session.begin():
            rows = (
                await session.execute(
                    _CLAIM,
                    {
                        "lease": self._settings.lease_seconds,
                        "limit": self._settings.batch_size,
                        "only": list(self._settings.claim_kinds) if self._settings.claim_kinds else None,
                        "except": list(self._settings.skip_kinds),
                    },
                )
            ).all()
            entries = sorted((OutboxEntry(*row) for row in rows), key=lambda e: e.id)
            by_kind: dict[str, list[OutboxEntry]] = {}
            for entry in entries:
                by_kind.setdefault(entry.kind, []).append(entry)
            prepared: dict[int, object] = {}
            for name, group in by_kind.items():
                kind = self._kinds.get(name)
                if isinstance(kind, PreparingKind):
                    prepared.update(await kind.prepare(group, session))
        return [dataclasses.replace(e, prepared=prepared[e.id]) if e.id in prepared else e for e in entries]

    async def _recover(self) -> None:
        """Settle the outcomes a failed settle kept, then give back what a failed cycle left leased."""
        if self._unsettled:
            kept = self._unsettled
            try:
                await self._settle(kept)
            except Exception as exc:
                if not is_unavailable(exc):
                    self._resettle_failures += 1
                    if self._resettle_failures >= _RESETTLE_TRIES:
                        # The statement itself keeps failing: give the entries back to be delivered
                        # again rather than hold up every other delivery behind them.
                        log.error("relay.settle_abandoned", outbox_ids=[s.entry.id for s in kept])
                        self._unsettled = []
                        self._resettle_failures = 0
                raise
            self._unsettled = []
            self._resettle_failures = 0
        if self._unfinished:
            ids = sorted(self._unfinished)
            async with self._ctx.sessions() as session, session.begin():
                await session.execute(_RELEASE, {"ids": ids, "attempts": [self._unfinished[i] for i in ids]})
            self._unfinished.clear()

    async def _attempt(self, entry: OutboxEntry) -> _Settled:
        """Deliver one entry and say what became of it; raises nothing but cancellation."""
        kind = self._kinds.get(entry.kind)
        if kind is None:
            return _Settled(entry, "failed", "unknown_kind")
        try:
            async with self._gate:
                await kind.deliver(entry, self._ctx)
        except ChatGatewayError as exc:
            if exc.retryable and entry.attempts < self._settings.max_attempts:
                delay = self.backoff(entry.attempts)
                if isinstance(exc, ChatRateLimited) and exc.retry_after:
                    delay = max(delay, exc.retry_after)
                return _Settled(entry, "retry", exc.code, delay)
            return _Settled(entry, "failed", exc.code)
        except Exception:
            # A bug or a lost database connection in the kind: the wave's other outcomes must still be
            # settled (a text already sent must not be sent again), so this one is retried with
            # backoff like any transient failure, and fails for good after max_attempts.
            log.exception("relay.delivery_error", outbox_id=entry.id, kind=entry.kind)
            if entry.attempts < self._settings.max_attempts:
                return _Settled(entry, "retry", "relay_error", self.backoff(entry.attempts))
            return _Settled(entry, "failed", "relay_error")
        return _Settled(entry, "done")

    async def _settle_wave(self, outcomes: Sequence[_Settled]) -> None:
        try:
            await self._settle(outcomes)
        except Exception:
            self._unsettled = list(outcomes)
            raise

    async def _settle(self, outcomes: Sequence[_Settled]) -> None:
        """Write a wave's outcomes, with their audit records and the kinds' records, in one transaction."""
        ordered = sorted(outcomes, key=lambda s: s.entry.id)  # one lock order for every relay
        async with self._ctx.sessions() as session, session.begin():
            settled = set(
                (
                    await session.execute(
                        _SETTLE,
                        {
                            "ids": [s.entry.id for s in ordered],
                            "attempts": [s.entry.attempts for s in ordered],
                            "outcomes": [s.outcome for s in ordered],
                            "reasons": [s.reason for s in ordered],
                            "delays": [s.delay for s in ordered],
                        },
                    )
                ).scalars()
            )
            by_kind: dict[str, tuple[list[OutboxEntry], list[tuple[OutboxEntry, str]]]] = {}
            for s in ordered:
                if s.entry.id in settled and s.outcome in ("done", "failed"):
                    done, failed = by_kind.setdefault(s.entry.kind, ([], []))
                    if s.outcome == "done":
                        done.append(s.entry)
                    else:
                        failed.append((s.entry, s.reason or "failed"))
            for name, (done, failed) in by_kind.items():
                kind = self._kinds.get(name)
                if isinstance(kind, SettlingKind):
                    await kind.settle(done, failed, session)
                elif kind is not None:
                    for entry in done:
                        await kind.succeeded(entry, session)
                    for entry, reason in failed:
                        await kind.failed(entry, session, reason)
        for s in ordered:
            self._unfinished.pop(s.entry.id, None)
            if s.entry.id not in settled:
                log.warning("relay.settle_skipped", outbox_id=s.entry.id, kind=s.entry.kind)
            elif s.outcome == "done":
                log.info(
                    "relay.delivered", outbox_id=s.entry.id, kind=s.entry.kind, attempts=s.entry.attempts
                )
            elif s.outcome == "failed":
                log.warning("relay.delivery_failed", outbox_id=s.entry.id, kind=s.entry.kind, reason=s.reason)
            elif s.outcome == "retry":
                log.info(
                    "relay.retry_scheduled",
                    outbox_id=s.entry.id,
                    kind=s.entry.kind,
                    attempts=s.entry.attempts,
                    reason=s.reason,
                    delay_seconds=round(s.delay or 0.0, 3),
                )


#: Kinds that are texts, not chat effects: they have a lane (and, in the service, a relay) of their own.
TEXT_KINDS: tuple[str, ...] = ("send_sms",)


class Relays:
    """Several relays run as one (the service's chat relay and text relay): one wake, one task."""

    def __init__(self, relays: Sequence[OutboxRelay]) -> None:
        self.relays = tuple(relays)

    @property
    def retries(self) -> int:
        """Deliveries put back for another attempt since start, by every relay together."""
        return sum(relay.retries for relay in self.relays)

    def wake(self) -> None:
        for relay in self.relays:
            relay.wake()

    async def run(self) -> None:
        """Run every relay until cancelled (each waits outages out by itself)."""
        await asyncio.gather(*(relay.run() for relay in self.relays))


def _lanes(entries: Sequence[OutboxEntry]) -> list[deque[OutboxEntry]]:
    """One lane per conversation and family (chat or texts; an entry of no conversation is a lane of
    its own), each in claim order: a text being retried never holds up the conversation's chat."""
    lanes: dict[object, deque[OutboxEntry]] = {}
    for entry in entries:
        key: object = (
            (entry.conversation_id, entry.kind in TEXT_KINDS)
            if entry.conversation_id is not None
            else ("entry", entry.id)
        )
        lanes.setdefault(key, deque()).append(entry)
    return list(lanes.values())


async def post_once(
    chat: ChatGateway,
    entry: OutboxEntry,
    channel_url: str,
    *,
    sender_id: str,
    text: str,
    dedup_id: str,
    custom_type: str,
    data: str,
) -> SentChatMessage:
    """Post a message unless it is in the channel already; what was posted (or found) either way.

    ``data`` must carry caremsg's own id of the message: it is what the channel's messages are
    searched for. Read before posting when an earlier attempt was made (it may have landed), and
    after an ambiguous failure of this post (timeout, dropped connection, 5xx) or any failure of a
    repeat, before the failure is believed. A failed read leaves the original error standing.
    """
    if entry.attempts > 1:
        landed = await chat.find_message(channel_url, sender_id=sender_id, custom_type=custom_type, data=data)
        if landed is not None:
            log.info("relay.reconciled", outbox_id=entry.id, kind=entry.kind, found="before_post")
            return landed
    try:
        return await chat.send_message(
            channel_url, sender_id=sender_id, text=text, dedup_id=dedup_id, custom_type=custom_type, data=data
        )
    except ChatGatewayError as exc:
        # A rate limit means Sendbird did nothing; any other error on a first attempt that is not
        # retryable (bad input, no channel) is believed.
        if isinstance(exc, ChatRateLimited) or not (exc.retryable or entry.attempts > 1):
            raise
        try:
            landed = await chat.find_message(
                channel_url, sender_id=sender_id, custom_type=custom_type, data=data
            )
        except ChatGatewayError:
            raise exc from None
        if landed is None:
            raise
        log.info("relay.reconciled", outbox_id=entry.id, kind=entry.kind, found="after_error")
        return landed


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
            repeat=entry.attempts > 1,  # read the channel before creating it again
        )

    async def settle(
        self, done: Sequence[OutboxEntry], failed: Sequence[tuple[OutboxEntry, str]], session: AsyncSession
    ) -> None:
        states = [(e, "ready") for e in done] + [(e, "failed") for e, _ in failed]
        await session.execute(
            text(
                "UPDATE conversations c SET channel_state = s.state"
                " FROM unnest(CAST(:ids AS integer[]), CAST(:states AS text[])) AS s(id, state)"
                " WHERE c.id = s.id"
            ),
            {"ids": [int(e.payload["conversation_id"]) for e, _ in states], "states": [s for _, s in states]},
        )

    async def succeeded(self, entry: OutboxEntry, session: AsyncSession) -> None:
        await self.settle([entry], [], session)

    async def failed(self, entry: OutboxEntry, session: AsyncSession, reason: str) -> None:
        await self.settle([], [(entry, reason)], session)


@dataclass(frozen=True)
class MessageToPost:
    """What posting one stored message needs: its text, its channel and its sender's chat id."""

    body: str = field(repr=False)
    channel_url: str
    sender_chat_id: str


_MESSAGES_TO_POST = text(
    "SELECT m.id, m.body, c.channel_url, u.chat_user_id FROM messages m"
    " JOIN conversations c ON c.id = m.conversation_id JOIN users u ON u.id = m.sender_id"
    " WHERE m.id = ANY(CAST(:ids AS integer[]))"
)

# A wave's messages and their channel delivery rows, sent or failed, in one statement. Read
# receipts compare their read_ts with the delivery row's provider_ts_ms (issue 3).
_SETTLE_MESSAGES = text(
    """
    WITH s AS (
        SELECT * FROM unnest(
            CAST(:ids AS integer[]), CAST(:states AS text[]), CAST(:chat_ids AS bigint[]),
            CAST(:ts AS bigint[]), CAST(:reasons AS text[])
        ) AS s(id, state, chat_id, ts, reason)
    ), m AS (
        UPDATE messages m SET
            state = s.state,
            chat_message_id = CASE WHEN s.state = 'sent' THEN s.chat_id ELSE m.chat_message_id END
        FROM s WHERE m.id = s.id
    )
    UPDATE message_deliveries d SET
        state = s.state,
        provider_ts_ms = CASE WHEN s.state = 'sent' THEN s.ts ELSE d.provider_ts_ms END,
        reason = CASE WHEN s.state = 'failed' THEN s.reason ELSE d.reason END,
        updated_at = now()
    FROM s
    WHERE d.message_id = s.id AND d.recipient = 'channel' AND (s.state = 'failed' OR d.state = 'queued')
    """
)


class SendMessage:
    """Post a stored message into its channel as its sender, exactly once (:func:`post_once`): its
    ``data`` carries caremsg's message id, ``dedup_id`` is a second layer."""

    kind = SEND_MESSAGE

    def __init__(self) -> None:
        # Sendbird's message id and timestamp of each post, by outbox id, for the settle.
        self._sent: dict[int, tuple[int, int]] = {}

    async def prepare(self, entries: Sequence[OutboxEntry], session: AsyncSession) -> Mapping[int, object]:
        message_ids = [int(e.payload["message_id"]) for e in entries]
        rows = await session.execute(_MESSAGES_TO_POST, {"ids": message_ids})
        found = {r.id: MessageToPost(r.body, r.channel_url, r.chat_user_id) for r in rows}
        return {e.id: found[m] for e, m in zip(entries, message_ids, strict=True) if m in found}

    async def deliver(self, entry: OutboxEntry, ctx: RelayContext) -> None:
        message_id = int(entry.payload["message_id"])
        msg = entry.prepared
        if not isinstance(msg, MessageToPost):
            async with ctx.sessions() as session:
                msg = (await self.prepare([entry], session)).get(entry.id)
            if not isinstance(msg, MessageToPost):
                raise LookupError(f"message {message_id} of outbox entry {entry.id} not found")
        sent = await post_once(
            ctx.chat,
            entry,
            msg.channel_url,
            sender_id=msg.sender_chat_id,
            text=msg.body,
            dedup_id=f"caremsg_msg_{message_id}",
            custom_type="caremsg_message",
            data=json.dumps({"message_id": message_id}),
        )
        self._sent[entry.id] = (sent.message_id, sent.created_at_ms)

    async def settle(
        self, done: Sequence[OutboxEntry], failed: Sequence[tuple[OutboxEntry, str]], session: AsyncSession
    ) -> None:
        ids: list[int] = []
        states: list[str] = []
        chat_ids: list[int | None] = []
        timestamps: list[int | None] = []
        reasons: list[str | None] = []
        for entry in done:
            chat_id, ts = self._sent.pop(entry.id, (None, None))
            ids.append(int(entry.payload["message_id"]))
            states.append("sent")
            chat_ids.append(chat_id)
            timestamps.append(ts)
            reasons.append(None)
        for entry, reason in failed:
            self._sent.pop(entry.id, None)
            ids.append(int(entry.payload["message_id"]))
            states.append("failed")
            chat_ids.append(None)
            timestamps.append(None)
            reasons.append(reason)
        await session.execute(
            _SETTLE_MESSAGES,
            {"ids": ids, "states": states, "chat_ids": chat_ids, "ts": timestamps, "reasons": reasons},
        )

    async def succeeded(self, entry: OutboxEntry, session: AsyncSession) -> None:
        await self.settle([entry], [], session)

    async def failed(self, entry: OutboxEntry, session: AsyncSession, reason: str) -> None:
        await self.settle([], [(entry, reason)], session)
