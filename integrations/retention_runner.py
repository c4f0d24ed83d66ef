"""Database side of ``caremsg retention plan|run``: the retention workflows
(:mod:`engine.workflows.retention`) on the configured database, outside the service.

``run`` writes what a scheduled sweep writes (the emptied content, its audit records, the outbox
entries that delete the channels' copies); a running service's relay delivers those entries.
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


class _NoDelivery:
    def wake(self, queued: Collection[type[Effect]] | None = None) -> None:
        """The service's relay finds the entries on its own (it polls the outbox)."""


@asynccontextmanager
async def retention_services(database_url: str, policy: Policy) -> AsyncIterator[Services]:
    """Services enough for the retention workflows, on ``database_url`` under ``policy``."""
    engine = create_async_engine(database_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        yield Services(
            uow=lambda: SqlUnitOfWork(sessions),
            policy=PolicyHolder(policy),
            passwords=None,  # type: ignore[arg-type]  # never used: nobody logs in
            tokens=None,  # type: ignore[arg-type]
            delivery=_NoDelivery(),
            consents=ConsentIndex(),
        )
    finally:
        await engine.dispose()
