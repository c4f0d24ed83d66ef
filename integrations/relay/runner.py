"""The relay's loop: claim a batch, deliver it wave by wave, settle each wave, keep the leases alive.

See the package docstring (``integrations/relay/__init__.py``) for what it guarantees and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from engine.effects import TEXTS, Effect, kinds
from engine.errors import ChatGatewayError
from engine.ports import ChatGateway
from integrations.background import woken_or_after
from integrations.db.base import is_unavailable
from integrations.effects.channels import CreateChannelExecutor
from integrations.effects.executor import (
    EffectCancelled,
    Executor,
    Executors,
    Preparing,
    Rechecking,
    RelayContext,
)
from integrations.effects.messages import PostMessageExecutor
from integrations.effects.outbox import OutboxEntry, Unreadable, effect_from
from integrations.relay.failures import Failure, classify
from integrations.relay.outcomes import Cancelled, Dead, Done, GivenBack, Outcome, RetryAt, logged, settle
from integrations.relay.statements import RELEASE, RENEW, claim, claim_parameters, due_after_credentials

log = structlog.get_logger("caremsg.relay")

#: The stored kinds of texts: the service gives them a relay of their own (``claim_kinds``).
TEXT_KINDS: tuple[str, ...] = kinds(TEXTS)

#: How often kept outcomes are settled again, with the database reachable, before they are dropped.
_RESETTLE_TRIES = 3

#: The backoff's exponent at most: 2^64 times any sensible base is far past any cap.
_MAX_EXPONENT = 64


@dataclass(frozen=True)
class RelaySettings:
    poll_interval: float = 1.0
    base_backoff: float = 1.0
    max_backoff: float = 300.0
    #: Attempts for a failure that is neither an outage nor a refusal (an unexpected error in an
    #: executor): after these it is dead-lettered. An outage (the provider unavailable, timing out,
    #: answering 5xx, rate limiting or refusing our credentials; the database unreachable) never
    #: uses them up: it is retried at the backoff's cap for as long as it lasts (``_retry_or_dead``).
    max_attempts: int = 50
    batch_size: int = 20
    #: A claim's lease, renewed every third of it while the relay runs (``run``): a relay that dies
    #: (kill -9) holds up its entries for at most this long.
    lease_seconds: float = 10.0
    #: Deliveries in flight at once (each of a different conversation).
    concurrency: int = 8
    #: Claim only these stored kinds (None: every kind) and none of ``skip_kinds``; the service runs
    #: one relay for texts (:data:`TEXT_KINDS`) and one for everything else.
    claim_kinds: tuple[str, ...] | None = None
    skip_kinds: tuple[str, ...] = ()


class OutboxRelay:
    """Performs the effects workflows recorded, each by the executor registered for its type."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        chat: ChatGateway,
        settings: RelaySettings = RelaySettings(),
        *,
        executors: Sequence[Executor[Any]] = (),
        jitter: Callable[[float], float] = lambda cap: random.uniform(0, cap),  # noqa: S311 - not crypto
        on_retry: Callable[[], None] = lambda: None,
        on_credentials_rejected: Callable[[str, int | None], None] = lambda provider, code: None,
    ) -> None:
        if settings.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._ctx = RelayContext(sessions, chat)
        self._settings = settings
        self._executors = Executors([CreateChannelExecutor(), PostMessageExecutor(), *executors])
        self._jitter = jitter
        self._wake = asyncio.Event()
        self._gate = asyncio.Semaphore(settings.concurrency)
        # Entries this relay leased but could not finish (the database went away mid-cycle), by id,
        # with the attempt count of the claim: their leases are given back as soon as the database is
        # reachable again, not after lease_seconds.
        self._unfinished: dict[int, int] = {}
        # Outcomes of deliveries whose settle failed: settled again before anything else.
        self._unsettled: list[Outcome] = []
        self._resettle_failures = 0
        #: Deliveries put back for another attempt since start; each is also told to ``on_retry``
        #: (the caremsg_relay_retries metric).
        self.retries = 0
        self._on_retry = on_retry
        #: Told (provider, code) of each delivery refused for caremsg's credentials (a metric).
        self._on_credentials_rejected = on_credentials_rejected
        # When (event-loop time) the earliest retry this relay scheduled falls due: an idle relay
        # wakes then rather than at its next poll, so a retry's backoff is what it says it is.
        self._next_retry: float | None = None

    def wake(self) -> None:
        self._wake.set()

    def claims(self, kind: str) -> bool:
        """Whether this relay claims entries of the stored ``kind``."""
        asked, skipped = self._settings.claim_kinds, self._settings.skip_kinds
        return (asked is None or kind in asked) and kind not in skipped

    def backoff(self, attempts: int) -> float:
        """Full jitter: a random delay up to base·2^(attempts-1), capped. The exponent is bounded, so
        an entry retried through a long outage (thousands of attempts) stays at the cap rather than
        overflow a float."""
        exponent = min(max(0, attempts - 1), _MAX_EXPONENT)
        cap = min(self._settings.max_backoff, self._settings.base_backoff * 2.0**exponent)
        return self._jitter(cap)

    async def run(self) -> None:
        """Deliver until cancelled; database or chat outages are waited out, never fatal. What an
        earlier run held for refused credentials goes out at once (``due_after_credentials``)."""
        try:
            async with self._ctx.sessions() as session, session.begin():
                await due_after_credentials(session, self._settings.claim_kinds, self._settings.skip_kinds)
        except Exception as exc:  # the database may be away: they are tried at their time instead
            log.warning("relay.credential_holds_not_released", error=type(exc).__name__)
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
            held.update((o.entry.id, o.entry.attempts) for o in self._unsettled)
            if not held:
                continue
            ids = sorted(held)
            try:
                async with self._ctx.sessions() as session, session.begin():
                    await session.execute(
                        RENEW,
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
                await woken_or_after(self._wake, self._idle_wait())
                self._wake.clear()

    def _idle_wait(self) -> float:
        """How long an idle relay waits for a wake-up: until its next poll, or until the earliest
        retry it scheduled falls due if that comes first (then that retry is forgotten: the claim
        made when it falls due finds it, or a later one does)."""
        wait = self._settings.poll_interval
        if self._next_retry is not None:
            until = self._next_retry - asyncio.get_running_loop().time()
            if until <= wait:
                self._next_retry = None
                wait = max(until, 0.0)
        return wait

    async def run_once(self) -> int:
        """Finish what an earlier cycle left, then claim one batch of due entries and work through it
        wave by wave; returns how many entries were claimed."""
        await self._recover()
        entries = await self._claim()
        self._unfinished.update((e.id, e.attempts) for e in entries)
        lanes = _lanes(entries)
        # What was read for the entries of the next wave right before it (None: the claim's read).
        rechecked: dict[int, OutboxEntry] | None = None
        while lanes:
            wave = [lane.popleft() for lane in lanes]
            if rechecked is not None:
                # Behind the waves before it, what the claim read may have changed (a recall): an
                # entry the last settle read again is as fresh as the claim's was; any other checks
                # again right before it is delivered (its executor, told it is not fresh).
                wave = [rechecked.get(e.id) or dataclasses.replace(e, fresh=False) for e in wave]
            attempted = await asyncio.gather(*(self.attempt(entry) for entry in wave))
            given_back: list[Outcome] = []
            still: list[deque[OutboxEntry]] = []
            for lane, outcome in zip(lanes, attempted, strict=True):
                if isinstance(outcome, RetryAt):
                    # Nothing of a conversation overtakes what was accepted before it.
                    self.retries += 1
                    self._on_retry()
                    given_back.extend(GivenBack(entry) for entry in lane)
                elif lane:
                    still.append(lane)
            # The next wave's entries that get a delivery slot at once are read again in the same
            # transaction (a wave starts with every slot free; the others wait and check their own).
            upcoming = [lane[0] for lane in still][: self._settings.concurrency]
            rechecked = await self._settle_wave([*attempted, *given_back], upcoming)
            lanes = still
        return len(entries)

    async def _claim(self) -> list[OutboxEntry]:
        """Lease a batch of due entries and, in the same transaction, let executors read for it."""
        parameters = claim_parameters(
            lease=self._settings.lease_seconds,
            limit=self._settings.batch_size,
            only=self._settings.claim_kinds,
            skip=self._settings.skip_kinds,
        )
        async with self._ctx.sessions() as session, session.begin():
            rows = await claim(session, parameters)
            entries = sorted(
                (
                    OutboxEntry(
                        r.id,
                        r.kind,
                        effect_from(r.kind, r.payload, r.conversation_id, r.message_id),
                        r.attempts,
                    )
                    for r in rows
                ),
                key=lambda e: e.id,
            )
            prepared: dict[int, object] = {}
            for executor, group in self._executors.grouped(entries).items():
                if isinstance(executor, Preparing):
                    prepared.update(await executor.prepare(group, session))
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
                        log.error("relay.settle_abandoned", outbox_ids=[o.entry.id for o in kept])
                        self._unsettled = []
                        self._resettle_failures = 0
                raise
            self._unsettled = []
            self._resettle_failures = 0
        if self._unfinished:
            ids = sorted(self._unfinished)
            async with self._ctx.sessions() as session, session.begin():
                await session.execute(RELEASE, {"ids": ids, "attempts": [self._unfinished[i] for i in ids]})
            self._unfinished.clear()

    async def attempt(self, entry: OutboxEntry) -> Outcome:
        """Deliver one entry by the executor registered for its effect's type and say what became of
        it (nothing is written: the wave's settle does that); raises nothing but cancellation."""
        executor = self._executors.for_entry(entry)
        if executor is None:
            unreadable = entry.effect if isinstance(entry.effect, Unreadable) else None
            return Dead(entry, unreadable.reason if unreadable else "unknown_kind")
        try:
            waits = self._gate.locked()
            async with self._gate:
                if waits and entry.fresh:
                    # What the claim read for it is older than its turn (a recall may have come
                    # since): its executor checks again right before delivering.
                    entry = dataclasses.replace(entry, fresh=False)
                await executor.deliver(entry.effect, entry, self._ctx)
        except EffectCancelled as exc:
            return Cancelled(entry, exc.code)
        except Exception as exc:
            # Whatever failed, the wave's other outcomes must still be settled (a text already sent
            # must not be sent again): what this failure means for the entry is classify's to say.
            failure = classify(exc)
            if failure.kind == "credentials":
                # Only an operator can end this: told at error level and counted, without PHI.
                log.error(
                    "relay.provider_credentials_rejected",
                    provider=failure.provider,
                    provider_code=failure.provider_code,
                    outbox_id=entry.id,
                    kind=entry.kind,
                    attempts=entry.attempts,
                )
                self._on_credentials_rejected(failure.provider or "", failure.provider_code)
            elif not isinstance(exc, ChatGatewayError):  # a bug, or the database lost, in the executor
                log.exception("relay.delivery_error", outbox_id=entry.id, kind=entry.kind)
            return self._retry_or_dead(entry, failure)
        return Done(entry)

    def _retry_or_dead(self, entry: OutboxEntry, failure: Failure) -> Outcome:
        """A refusal is dead at once; the rest is retried after a backoff (at least what a rate
        limit asked for). An outage, a refusal of our credentials too, is retried for as long as it
        lasts, at the backoff's cap once reached: nothing acknowledged is dropped because a provider
        was away (the backlog shows in ``caremsg_outbox_oldest_age_seconds``). Caremsg's own errors
        are dead after ``max_attempts``."""
        if failure.final or (not failure.outage and entry.attempts >= self._settings.max_attempts):
            return Dead(entry, failure.reason)
        return RetryAt(entry, failure.reason, max(self.backoff(entry.attempts), failure.retry_after or 0.0))

    async def _settle_wave(
        self, outcomes: Sequence[Outcome], upcoming: Sequence[OutboxEntry]
    ) -> dict[int, OutboxEntry]:
        try:
            return await self._settle(outcomes, upcoming)
        except Exception:
            self._unsettled = list(outcomes)
            raise

    async def _settle(
        self, outcomes: Sequence[Outcome], upcoming: Sequence[OutboxEntry] = ()
    ) -> dict[int, OutboxEntry]:
        """Write a wave's outcomes in one transaction (the entries are then no longer this relay's)
        and, in it, let executors read again for the ``upcoming`` entries (:class:`Rechecking`):
        those they brought up to date, by id."""
        async with self._ctx.sessions() as session, session.begin():
            settled = await settle(session, outcomes, self._executors)
            rechecked: dict[int, OutboxEntry] = {}
            for executor, group in self._executors.grouped(upcoming).items():
                if isinstance(executor, Rechecking):
                    fresh = await executor.recheck(group, session)
                    rechecked.update(
                        (e.id, dataclasses.replace(e, prepared=fresh[e.id])) for e in group if e.id in fresh
                    )
        for outcome in outcomes:
            self._unfinished.pop(outcome.entry.id, None)
        delays = [o.delay for o in outcomes if isinstance(o, RetryAt)]
        if delays:
            due = asyncio.get_running_loop().time() + min(delays)
            self._next_retry = due if self._next_retry is None else min(self._next_retry, due)
        logged(outcomes, settled)
        return rechecked


class Relays:
    """Several relays run as one (the service's chat relay and text relay): one task, and one wake
    that reaches the relays claiming what was queued."""

    def __init__(self, relays: Sequence[OutboxRelay]) -> None:
        self.relays = tuple(relays)
        #: The task running them, once :meth:`run` has started (the app's, which it stops).
        self.task: asyncio.Task[None] | None = None

    def wake(self, queued: Collection[type[Effect]] | None = None) -> None:
        """Wake the relays that claim any of the ``queued`` effect types (every relay when None):
        a send that queued a chat post alone leaves the text relay asleep, where it would otherwise
        run its claims over the chat backlog only to find nothing of its own."""
        queued_kinds = None if queued is None else kinds(tuple(queued))
        for relay in self.relays:
            if queued_kinds is None or any(relay.claims(kind) for kind in queued_kinds):
                relay.wake()

    async def run(self) -> None:
        """Run every relay until cancelled (each waits outages out by itself)."""
        self.task = asyncio.current_task()
        await asyncio.gather(*(relay.run() for relay in self.relays))


def _lanes(entries: Sequence[OutboxEntry]) -> list[deque[OutboxEntry]]:
    """One lane per conversation and family (chat or texts; an entry of no conversation is a lane of
    its own), each in claim order: a text being retried never holds up the conversation's chat."""
    lanes: dict[object, deque[OutboxEntry]] = {}
    for entry in entries:
        conversation = _conversation_of(entry)
        key: object = (
            (conversation, isinstance(entry.effect, TEXTS))
            if conversation is not None
            else ("entry", entry.id)
        )
        lanes.setdefault(key, deque()).append(entry)
    return list(lanes.values())


def _conversation_of(entry: OutboxEntry) -> int | None:
    return getattr(entry.effect, "conversation_id", None)
