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


E = TypeVar("E", bound=Effect, contravariant=True)


class Executor(Protocol[E]):
    """Performs effects of the types it handles, and records what became of them."""

    @property
    def handles(self) -> tuple[type[Effect], ...]:
        """The effect types this executor performs (each is registered against it)."""
        ...

    async def deliver(self, effect: E, entry: OutboxEntry, ctx: RelayContext) -> None:
        """Perform the effect; raise ChatGatewayError on failure. Must be safe to repeat.

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
        entry left out is delivered without (``deliver`` must then read for itself).
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
