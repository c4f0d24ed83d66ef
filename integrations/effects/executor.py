"""The executor contract, and the registry the relay dispatches on: effect type -> its executor.

An executor performs one family of effects (all the texts, say) and records their outcomes. It is
registered against each effect type it performs (:meth:`Executors.register`); the relay finds an
entry's executor by the type of the entry's effect, never by a string. An entry whose type has no
executor is dead-lettered (``no_executor``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from engine.effects import Effect
from engine.ports import ChatGateway
from integrations.effects.outbox import OutboxEntry


@dataclass(frozen=True)
class RelayContext:
    """What an executor may use while delivering: its own short sessions, and the chat gateway."""

    sessions: async_sessionmaker[AsyncSession]
    chat: ChatGateway


class EffectCancelled(Exception):
    """Raised by ``deliver`` when the effect is no longer to be performed at all (its message was
    recalled after the entry was claimed): nothing was done, nothing will be. The relay settles the
    entry ``cancelled`` with ``code`` as its reason, as the recall's own cancel leaves the entries it
    reaches before any relay, and hands it to the executor's ``settle`` among the failed ones with
    that reason; never retried."""

    code = "cancelled"


E = TypeVar("E", bound=Effect, contravariant=True)


class Executor(Protocol[E]):
    """Performs effects of the types it handles, and records what became of them."""

    @property
    def handles(self) -> tuple[type[Effect], ...]:
        """The effect types this executor performs (each is registered against it)."""
        ...

    async def deliver(self, effect: E, entry: OutboxEntry, ctx: RelayContext) -> None:
        """Perform the effect; raise ChatGatewayError on failure, :class:`EffectCancelled` when it is
        no longer to be performed. Must be safe to repeat.

        Deliveries of different conversations run concurrently; one conversation's never do.
        """
        ...

    async def settle(
        self, done: Sequence[OutboxEntry], failed: Sequence[tuple[OutboxEntry, str]], session: AsyncSession
    ) -> None:
        """Record these successes and permanent failures (with reasons), in the settling transaction.

        Called once per wave with every entry of this executor that the wave finished (a retry is
        not finished: it is not passed). The relay has written each entry's own row and audit record.
        """
        ...


@runtime_checkable
class Preparing(Protocol):
    """An executor that reads what its deliveries need for a whole batch at once."""

    async def prepare(self, entries: Sequence[OutboxEntry], session: AsyncSession) -> Mapping[int, object]:
        """Load what delivering ``entries`` needs, in as few statements as possible, by outbox id.

        Runs in the claim's transaction. Each value reaches ``deliver`` as ``entry.prepared``; an
        entry left out is delivered without (``deliver`` must then read for itself). An entry that
        does not go out right after the claim (a later wave, unless :class:`Rechecking` brought it
        up to date; one that waited for a delivery slot) arrives with ``entry.fresh`` False:
        ``deliver`` must then check again what may have changed since and matters (a recall),
        right before it acts.
        """
        ...


@runtime_checkable
class Rechecking(Protocol):
    """A :class:`Preparing` executor that can bring what ``prepare`` read up to date for entries that
    waited since the claim (behind their conversation's earlier entries), with one cheap statement."""

    async def recheck(self, entries: Sequence[OutboxEntry], session: AsyncSession) -> Mapping[int, object]:
        """What ``entries`` need, as ``prepare`` read it (``entry.prepared``) brought up to date with
        what may have changed since and matters (a recall), by outbox id.

        Runs in the transaction that settles the wave before theirs, right before they go out; an
        entry left out is delivered with ``entry.fresh`` False (``deliver`` checks for itself).
        """
        ...


class Executors:
    """Effect type -> executor: built once, by the composition root or the relay's defaults."""

    def __init__(self, executors: Iterable[Executor[Any]] = ()) -> None:
        self._by_type: dict[type[Effect], Executor[Any]] = {}
        for executor in executors:
            self.register(executor)

    def register(self, executor: Executor[Any]) -> None:
        """Make ``executor`` the one that performs each type it handles (a later one replaces it)."""
        for effect_type in executor.handles:
            self._by_type[effect_type] = executor

    def for_entry(self, entry: OutboxEntry) -> Executor[Any] | None:
        """The executor of the entry's effect type; None for an unreadable entry or an unknown type."""
        return self._by_type.get(type(entry.effect))  # type: ignore[arg-type]

    def grouped(self, entries: Iterable[OutboxEntry]) -> dict[Executor[Any], list[OutboxEntry]]:
        """``entries`` by executor, each group in the given order (entries without one left out)."""
        groups: dict[Executor[Any], list[OutboxEntry]] = {}
        for entry in entries:
            executor = self.for_entry(entry)
            if executor is not None:
                groups.setdefault(executor, []).append(entry)
        return groups
