"""What every repository shares: the session it works in, keyset pages, conflict-free unique inserts,
and telling "the database is unreachable" from "this statement failed"."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from engine.errors import Conflict
from engine.model import (
    Page,
)

T = TypeVar("T")


def page(items: Sequence[T], limit: int, key: Callable[[T], int]) -> Page[T]:
    """Keyset pagination: we fetched limit+1 rows; the extra one says there is a next page."""
    if len(items) > limit:
        kept = tuple(items[:limit])
        return Page(kept, key(kept[-1]))
    return Page(tuple(items), None)


async def insert_unique(
    session: AsyncSession, table: Any, values: Mapping[str, Any], *, constraint: str, conflict: str
) -> Any:
    """Insert one row and return it; a clash on ``constraint`` is a :class:`Conflict` with that message.

    ``ON CONFLICT ON CONSTRAINT ... DO NOTHING``, not a caught unique violation: a violation is an
    error PostgreSQL writes to its own log with a DETAIL line quoting the key, which for
    ``uq_users_email`` is an email address (PHI in the server log). Nothing is raised this way, so
    nothing is logged, and the caller's transaction stays usable without a savepoint.
    """
    statement = (
        pg_insert(table).values(**values).on_conflict_do_nothing(constraint=constraint).returning(table)
    )
    row = (await session.execute(statement)).one_or_none()
    if row is None:
        raise Conflict(conflict)
    return row


class Repository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session


def is_unavailable(exc: BaseException) -> bool:
    """True for errors that mean the database cannot be reached right now (not a bad statement)."""
    if isinstance(exc, (OSError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError))
    ):
        return True
    # SQLAlchemy wraps what asyncpg raises on a new connection ("the database system is shutting
    # down", 57P03) as a plain DBAPIError: the SQLSTATE of the error underneath decides.
    return any(_unavailable_sqlstate(cause) for cause in _causes(exc))


#: SQLSTATE classes that mean "not now" rather than "not this statement": 08 the connection failed or
#: is gone, 53 too many connections or out of memory, 57 shutdown, restart, cannot connect now, or
#: statement timeout. asyncpg raises them as PostgresConnectionError, InsufficientResourcesError and
#: OperatorInterventionError where it is used directly (the send path).
_UNAVAILABLE_CLASSES = ("08", "53", "57")


def _unavailable_sqlstate(exc: BaseException) -> bool:
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in _UNAVAILABLE_CLASSES


def _causes(exc: BaseException) -> list[BaseException]:
    """The error, what SQLAlchemy wraps (``orig``) and what each was raised from (``__cause__``: the
    asyncpg error under SQLAlchemy's), without cycles. Not ``__context__``: an unrelated error raised
    while handling a connection error is not itself "unavailable"."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending and len(seen) < 10:
        current = pending.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        orig = getattr(current, "orig", None)
        pending.extend([orig if isinstance(orig, BaseException) else None, current.__cause__])
    return seen
