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
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web

from engine.workflows.consents import sweep_expired_consents
from engine.workflows.retention import sweep_retention
from handlers.keys import services_key, settings_key

log = structlog.get_logger("caremsg.schedules")


def wait_after(batch_seconds: float, duty_cycle: float) -> float:
    """How long a sweep waits after a batch that took ``batch_seconds`` to be busy ``duty_cycle`` of
    its time (0 < duty_cycle <= 1; 1: no wait)."""
    return batch_seconds * (1 - duty_cycle) / duty_cycle


async def _batches_every(
    name: str,
    interval: float,
    sweep: Callable[[int], Awaitable[int]],
    batch: int,
    duty_cycle: float = 1.0,
) -> AsyncIterator[None]:
    """Run ``sweep`` (one short transaction of at most ``batch`` rows, returning how many it took)
    every ``interval`` seconds, batch after batch while batches come back full, for as long as the
    app runs, busy at most ``duty_cycle`` of the time. A failed round is logged and tried again at
    the next one."""

    async def forever() -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                # A full batch means there may be more; each is its own short transaction, waiting
                # on the database, so requests are served in between. The wait after each leaves
                # the database and the CPU to them (a backlog of a million kept a core of a 2-core
                # machine busy and halved send throughput: bench/README.md).
                while True:
                    started = loop.time()
                    if await sweep(batch) < batch:
                        break
                    if duty_cycle < 1:
                        await asyncio.sleep(wait_after(loop.time() - started, duty_cycle))
            except Exception:  # the next round tries again; the cause is logged
                log.exception("schedule.round_failed", schedule=name)
            await asyncio.sleep(interval)

    task = asyncio.create_task(forever(), name=name)
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def consent_expiry(app: web.Application) -> AsyncIterator[None]:
    """Sweep expired consents' grants every ``consents.expiry_sweep_interval_seconds``."""
    consents, services = app[settings_key].consents, app[services_key]

    async def sweep(limit: int) -> int:
        return await sweep_expired_consents(services, limit=limit)

    async for _ in _batches_every(
        "consents.expiry_sweep",
        consents.expiry_sweep_interval_seconds,
        sweep,
        consents.expiry_sweep_batch_size,
    ):
        yield


async def retention_sweep(app: web.Application) -> AsyncIterator[None]:
    """Delete expired message content every ``retention.sweep_interval_seconds``."""
    retention, services = app[settings_key].retention, app[services_key]

    async def sweep(limit: int) -> int:
        return await sweep_retention(services, limit=limit)

    async for _ in _batches_every(
        "retention-sweep",
        retention.sweep_interval_seconds,
        sweep,
        retention.sweep_batch_size,
        retention.sweep_duty_cycle,
    ):
        yield
