"""What the service does on a timetable rather than on a request, one cleanup context each (the
composition root, ``handlers/app.py``, starts them after the engine's services):

- ``consent_expiry``: once a consent's expiry passes, its grants (channel memberships, SMS
  admissions) are swept out as a revocation would (engine/workflows/consents.py).
- ``retention_sweep``: message content whose lifespan (policies/retention.toml) has ended and that
  no legal hold covers is deleted (engine/workflows/retention.py).

Each job is safe with several service instances (its workflow claims its rows with ``SKIP LOCKED``),
works in batches of short transactions, and logs a failed round and tries again at the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from engine.workflows.consents import sweep_expired_consents
from engine.workflows.retention import sweep_retention
from handlers.keys import services_key, settings_key

log = structlog.get_logger("caremsg.schedules")


async def consent_expiry(app: web.Application) -> AsyncIterator[None]:
    """Sweep expired consents' grants every ``consents.expiry_sweep_interval_seconds``."""
    consents = app[settings_key].consents
    services = app[services_key]
    batch = consents.expiry_sweep_batch_size

    async def sweep_forever() -> None:
        while True:
            try:
                # A full batch means there may be more; each batch is its own short transaction.
                while await sweep_expired_consents(services, limit=batch) == batch:
                    pass
            except Exception:  # the next round tries again; the cause is logged
                log.exception("consents.expiry_sweep_failed")
            await asyncio.sleep(consents.expiry_sweep_interval_seconds)

    task = asyncio.create_task(sweep_forever(), name="consent-expiry")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def retention_sweep(app: web.Application) -> AsyncIterator[None]:
    """Delete expired message content every ``retention.sweep_interval_seconds``."""
    retention = app[settings_key].retention
    services = app[services_key]
    batch = retention.sweep_batch_size

    async def sweep_forever() -> None:
        while True:
            try:
                # A full batch means there may be more; each batch is its own short transaction,
                # waiting on the database, so requests are served in between.
                while await sweep_retention(services, limit=batch) == batch:
                    pass
            except Exception:  # the next round tries again; the cause is logged
                log.exception("retention.sweep_failed")
            await asyncio.sleep(retention.sweep_interval_seconds)

    task = asyncio.create_task(sweep_forever(), name="retention-sweep")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
