"""What became of each claimed entry, and how a wave's outcomes are settled in one transaction.

Five outcomes, one type each: :class:`Done` (delivered), :class:`RetryAt` (a transient failure: tried
again after a delay; an outage always is), :class:`Dead` (a permanent failure, or an unexpected one
out of attempts: dead-lettered with a reason), :class:`Cancelled` (no longer to be done: its message
was recalled after the claim) and :class:`GivenBack` (never tried: a lane stopped before it). Each
knows the row it writes (:meth:`row`) and what it logs once settled (:meth:`logged`); :func:`settle`
writes a whole wave with one statement and hands what it finished to the executors, in the same
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from integrations.effects.executor import Executor, Executors
from integrations.effects.outbox import OutboxEntry
from integrations.relay.statements import SETTLE

log = structlog.get_logger("caremsg.relay")

#: The outcome codes :data:`integrations.relay.statements.SETTLE` writes.
Code = Literal["done", "failed", "cancelled", "retry", "untried"]
Row = tuple[Code, str | None, float | None]  # (code, reason, delay in seconds)


@dataclass(frozen=True)
class Done:
    """Delivered: the row is done, audited as a success, and its executor records it."""

    entry: OutboxEntry

    def row(self) -> Row:
        return ("done", None, None)

    def logged(self) -> None:
        e = self.entry
        log.info("relay.delivered", outbox_id=e.id, kind=e.kind, attempts=e.attempts)


@dataclass(frozen=True)
class RetryAt:
    """Failed for now: the row stays pending, tried again after ``delay`` seconds; not audited yet."""

    entry: OutboxEntry
    reason: str
    delay: float

    def row(self) -> Row:
        return ("retry", self.reason, self.delay)

    def logged(self) -> None:
        e = self.entry
        log.info(
            "relay.retry_scheduled",
            outbox_id=e.id,
            kind=e.kind,
            attempts=e.attempts,
            reason=self.reason,
            delay_seconds=round(self.delay, 3),
        )


@dataclass(frozen=True)
class Dead:
    """Failed for good: the row is failed with ``reason``, audited as a failure, its executor told."""

    entry: OutboxEntry
    reason: str

    def row(self) -> Row:
        return ("failed", self.reason, None)

    def logged(self) -> None:
        log.warning(
            "relay.delivery_failed", outbox_id=self.entry.id, kind=self.entry.kind, reason=self.reason
        )


@dataclass(frozen=True)
class Cancelled:
    """Not done and never to be (the executor raised :class:`EffectCancelled`: its message was
    recalled after the claim): the row is ``cancelled`` with ``reason``, as a recall's own cancel
    leaves it; audited as a failure with that reason, its executor told as of a failure."""

    entry: OutboxEntry
    reason: str

    def row(self) -> Row:
        return ("cancelled", self.reason, None)

    def logged(self) -> None:
        log.info(
            "relay.delivery_cancelled", outbox_id=self.entry.id, kind=self.entry.kind, reason=self.reason
        )


@dataclass(frozen=True)
class GivenBack:
    """Never tried (its lane stopped first): the row's lease and the claim's attempt are given back."""

    entry: OutboxEntry

    def row(self) -> Row:
        return ("untried", None, None)

    def logged(self) -> None:
        """Nothing happened to it worth a line."""


Outcome = Done | RetryAt | Dead | Cancelled | GivenBack


Finished = dict[Executor[Any], tuple[list[OutboxEntry], list[tuple[OutboxEntry, str]]]]


def settle_params(outcomes: Sequence[Outcome]) -> dict[str, list[Any]]:
    """The bind parameters of :data:`SETTLE` for a wave: one row per outcome, in id order (one lock
    order for every relay)."""
    ordered = sorted(outcomes, key=lambda o: o.entry.id)
    rows = [o.row() for o in ordered]
    return {
        "ids": [o.entry.id for o in ordered],
        "attempts": [o.entry.attempts for o in ordered],
        "outcomes": [code for code, _, _ in rows],
        "reasons": [reason for _, reason, _ in rows],
        "delays": [delay for _, _, delay in rows],
    }


def finished(outcomes: Sequence[Outcome], settled: set[int], executors: Executors) -> Finished:
    """What each executor must record: the entries this settle finished (done, or dead or cancelled
    with a reason), by executor, in id order. A retry or a give-back is not finished; an entry not
    ``settled`` here (another relay holds it by now) is left to that relay."""
    by_executor: Finished = {}
    for o in sorted(outcomes, key=lambda o: o.entry.id):
        executor = executors.for_entry(o.entry)
        if executor is None or o.entry.id not in settled or not isinstance(o, Done | Dead | Cancelled):
            continue
        done, dead = by_executor.setdefault(executor, ([], []))
        if isinstance(o, Done):
            done.append(o.entry)
        else:
            dead.append((o.entry, o.reason))
    return by_executor


async def settle(session: AsyncSession, outcomes: Sequence[Outcome], executors: Executors) -> set[int]:
    """Write a wave's outcomes, their audit records and the executors' records, in ``session``'s
    transaction; the ids of the entries this relay still held (the others are left alone)."""
    settled = set((await session.execute(SETTLE, settle_params(outcomes))).scalars())
    for executor, (done, dead) in finished(outcomes, settled, executors).items():
        await executor.settle(done, dead, session)
    return settled


def logged(outcomes: Sequence[Outcome], settled: set[int]) -> None:
    """One line per outcome of a settled wave; an entry another relay holds by now was skipped."""
    for outcome in sorted(outcomes, key=lambda o: o.entry.id):
        if outcome.entry.id in settled:
            outcome.logged()
        else:
            log.warning("relay.settle_skipped", outbox_id=outcome.entry.id, kind=outcome.entry.kind)
