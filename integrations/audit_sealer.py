"""The background sealer: appends committed audit events to the hash chain, in batches, in id order.

Requests never wait on the chain. The only coordination with them is the *horizon*: the sealer must
not seal event 11 while the transaction holding event 10 has yet to commit (10 would then land
below the sealed head and look inserted). So:

- every statement that inserts audit events takes ``pg_advisory_xact_lock_shared`` on
  :data:`AUDIT_WRITE_LOCK`, by a statement-level BEFORE INSERT trigger (migration 0006), which fires
  before any row draws its id from the sequence. Shared locks never wait on one another; the lock
  is held from the audit insert to the commit, which follow each other immediately (the unit of
  work inserts its events last). Being a trigger, it covers every writer, not just caremsg's code,
  and costs no extra round trip;
- the sealer, for an instant, takes the same lock exclusively in a transaction of its own: once it
  has it, every writer that could hold an id below the current maximum has committed or rolled
  back, and every later writer draws a higher id. That maximum is the horizon.

Writers may wait behind that instant (milliseconds, once per sealing round), never behind one
another or behind hashing. Sealing itself runs under :data:`SEAL_LOCK`, so several service
instances can run a sealer: one seals a batch while the others wait, then finds nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.audit_chain import extend
from integrations.audit_store import CONTENT_COLUMNS, chain_head, chain_t, content_of, events_t

log = structlog.get_logger("caremsg.audit_sealer")

#: Shared by every statement that inserts audit events (a trigger takes it: migration 0006), taken
#: exclusively by the sealer for an instant. An arbitrary constant unique to caremsg: 'cmaw'.
AUDIT_WRITE_LOCK = 0x636D6177
#: Serialises sealers of several instances: 'cmas'.
SEAL_LOCK = 0x636D6173
#: How long the sealer waits for in-flight writers before skipping a round.
HORIZON_LOCK_TIMEOUT_MS = 500


class AuditSealer:
    """Seals what is sealable now (``seal_pending``) or keeps doing so in the background (``run``)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch_size: int = 1000,
        interval: float = 1.0,
        horizon_timeout_ms: int = HORIZON_LOCK_TIMEOUT_MS,
    ) -> None:
        self._engine = engine
        self.horizon_timeout_ms = int(horizon_timeout_ms)
        self.batch_size = batch_size
        self.interval = interval
        self._wake = asyncio.Event()

    async def horizon(self) -> int:
        """The highest event id below which no uncommitted audit event can still appear."""
        async with self._engine.begin() as conn:
            # Writers queue behind this request while it waits: if some writer holds its shared lock
            # for long, give up (and try next round) rather than stall every request behind it.
            await conn.execute(text(f"SET LOCAL lock_timeout = '{self.horizon_timeout_ms}ms'"))
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_WRITE_LOCK})
            return int((await conn.execute(select(func.coalesce(func.max(events_t.c.id), 0)))).scalar_one())

    async def seal_pending(self) -> int:
        """Seal every event committed before this call; returns how many were sealed."""
        horizon = await self.horizon()
        total = 0
        while True:
            sealed = await self._seal_batch(horizon)
            total += sealed
            if sealed < self.batch_size:
                return total

    async def _seal_batch(self, horizon: int) -> int:
        async with self._engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SEAL_LOCK})
            head = await chain_head(conn)
            rows = (
                await conn.execute(
                    select(events_t.c.id, *CONTENT_COLUMNS)
                    .where(events_t.c.id > head.event_id, events_t.c.id <= horizon)
                    .order_by(events_t.c.id)
                    .limit(self.batch_size)
                )
            ).all()
            if not rows:
                return 0
            entries = extend(head, [(row.id, content_of(row)) for row in rows])
            await conn.execute(
                insert(chain_t),
                [
                    {
                        "seq": x.seq,
                        "event_id": x.event_id,
                        "digest": x.digest,
                        "prev_hash": x.prev_hash,
                        "hash": x.hash,
                    }
                    for x in entries
                ],
            )
        return len(entries)

    def wake(self) -> None:
        """Seal now rather than at the next interval (a hint)."""
        self._wake.set()

    async def run(self) -> None:
        """Seal every ``interval`` seconds until cancelled; a failed round is logged and retried."""
        while True:
            try:
                sealed = await self.seal_pending()
                if sealed:
                    log.debug("audit.sealed", events=sealed)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database may be away; the next round tries again
                log.warning("audit.seal_failed", error=type(error).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            self._wake.clear()
