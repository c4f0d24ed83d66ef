"""The engine's services for a command run outside the service (``caremsg retention``, ``caremsg
policy explain``): its workflows on the configured database, with no relay, no logins and no tokens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from engine.consent_index import ConsentIndex
from engine.effects import Effect
from engine.policy import Policy, PolicyHolder
from engine.services import Services
from integrations.db.uow import SqlUnitOfWork


class NoDelivery:
    """A delivery trigger that wakes nobody: what such a command queues, a running service's relay
    finds on its own (it polls the outbox)."""

    def wake(self, queued: Collection[type[Effect]] | None = None) -> None:
        return None


@asynccontextmanager
async def offline_services(
    database_url: str, policy: Policy, consents: ConsentIndex | None = None
) -> AsyncIterator[Services]:
    """Services on ``database_url`` under ``policy``, with ``consents`` (default: an empty index)."""
    engine = create_async_engine(database_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        yield Services(
            uow=lambda: SqlUnitOfWork(sessions),
            policy=PolicyHolder(policy),
            passwords=None,  # type: ignore[arg-type]  # never used: nobody logs in
            tokens=None,  # type: ignore[arg-type]
            delivery=NoDelivery(),
            consents=ConsentIndex() if consents is None else consents,
        )
    finally:
        await engine.dispose()
