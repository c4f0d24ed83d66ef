"""The login throttle's counts in PostgreSQL: one row per account key or source address.

In the database rather than process memory so that every worker and instance counts the same
failures; a failure is one upsert plus one update, in the login's own transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from engine.login_throttle import Backoff, ThrottleState, blocked_until
from integrations.db.columns import table_of
from integrations.db.tables import LoginThrottleRow

throttles_t = table_of(LoginThrottleRow)

# Counts one failure. A key whose last failure is older than the window starts again from one,
# unless it is locked: a lock lasts until it is cleared.
_COUNT_FAILURE = text(
    """
    INSERT INTO login_throttles AS t (key, failures, last_failure_at)
    VALUES (:key, 1, :now)
    ON CONFLICT (key) DO UPDATE SET
        failures = CASE
            WHEN t.locked_at IS NULL AND t.last_failure_at < :forget_before THEN 1
            ELSE t.failures + 1
        END,
        last_failure_at = :now
    RETURNING failures, locked_at
    """
)


_PURGE = text(
    """
    DELETE FROM login_throttles WHERE key IN (
        SELECT key FROM login_throttles
        WHERE last_failure_at < :forget_before AND locked_at IS NULL AND key LIKE :kind
        LIMIT 20 FOR UPDATE SKIP LOCKED
    )
    """
)


class SqlLoginThrottleRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def states(self, keys: Sequence[str]) -> dict[str, ThrottleState]:
        query = select(throttles_t).where(throttles_t.c.key.in_(list(keys)))
        rows = (await self.session.execute(query)).all()
        return {
            row.key: ThrottleState(row.failures, row.blocked_until, row.locked_at is not None) for row in rows
        }

    async def record_failure(self, key: str, now: datetime, backoff: Backoff) -> ThrottleState:
        params = {"key": key, "now": now, "forget_before": now - backoff.window}
        row = (await self.session.execute(_COUNT_FAILURE, params)).one()
        until = blocked_until(backoff, row.failures, now)
        locked = row.locked_at is not None or backoff.locks(row.failures)
        await self.session.execute(
            update(throttles_t)
            .where(throttles_t.c.key == key)
            .values(blocked_until=until, locked_at=row.locked_at or (now if locked else None))
        )
        # Keys of this kind nobody failed on for a whole window hold nothing worth keeping (locks
        # excepted): the table stays as small as the failures of the last window. Rows another
        # login holds are skipped (no lock waits, no deadlocks); a few per failure is enough.
        kind = key.partition(":")[0] + ":"
        await self.session.execute(_PURGE, {"kind": kind + "%", "forget_before": now - backoff.window})
        return ThrottleState(row.failures, until, locked)

    async def clear(self, key: str) -> bool:
        result = await self.session.execute(delete(throttles_t).where(throttles_t.c.key == key))
        return bool(result.rowcount)  # type: ignore[attr-defined]
