"""The login throttle's counts in PostgreSQL: one row per key (an account or a source address's
failed logins, a source's registrations, an account's notices: engine/login_throttle.py).

In the database rather than process memory so that every worker and instance counts the same
failures; a failure is one upsert plus one update, in the login's own transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from engine.login_throttle import Backoff, ThrottleState, blocked_until
from integrations.db.columns import table_of
from integrations.db.tables import LoginThrottleRow

throttles_t = table_of(LoginThrottleRow)


def _count_failure(key: str, now: datetime, forget_before: datetime) -> Any:
    """Counts one failure. A key whose last failure is older than the window starts again from one,
    unless it is locked: a lock lasts until it is cleared. One upsert, so concurrent failures all count."""
    t = throttles_t.c
    statement = pg_insert(throttles_t).values(key=key, failures=1, last_failure_at=now)
    return statement.on_conflict_do_update(
        index_elements=[t.key],
        set_={
            "failures": case(
                (and_(t.locked_at.is_(None), t.last_failure_at < forget_before), 1), else_=t.failures + 1
            ),
            "last_failure_at": now,
        },
    ).returning(t.failures, t.locked_at)


def _purge(kind: str, forget_before: datetime) -> Any:
    """Forget up to 20 unlocked keys of this kind whose last failure is older than the window."""
    t = throttles_t.c
    stale = (
        select(t.key)
        .where(t.last_failure_at < forget_before, t.locked_at.is_(None), t.key.like(kind + "%"))
        .limit(20)
        .with_for_update(skip_locked=True)
    )
    return delete(throttles_t).where(t.key.in_(stale))


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
        row = (await self.session.execute(_count_failure(key, now, now - backoff.window))).one()
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
        await self.session.execute(_purge(kind, now - backoff.window))
        return ThrottleState(row.failures, until, locked)

    async def clear(self, key: str) -> bool:
        result = await self.session.execute(delete(throttles_t).where(throttles_t.c.key == key))
        return bool(result.rowcount)  # type: ignore[attr-defined]
