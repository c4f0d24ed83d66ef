"""What operators watch, read from PostgreSQL at scrape and readiness time: outbox depth, delivery
states, the audit sealer's lag, the consent log's head and the schema revision.

Each reader is one small query over indexed columns, so ``GET /metrics`` and ``GET /ready`` stay
cheap. The sealer's lag is read here, in one function, so a change to how the chain is sealed
changes one query.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_OUTBOX = text(
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)"
    " FROM outbox WHERE status = 'pending'"
)
_DELIVERIES = text("SELECT state, count(*) FROM message_deliveries GROUP BY state")
_SEALER_LAG = text(
    """
    WITH head AS (SELECT coalesce((SELECT event_id FROM audit_chain ORDER BY seq DESC LIMIT 1), 0) AS id)
    SELECT count(*), coalesce(extract(epoch FROM now() - min(e.occurred_at)), 0)
    FROM audit_events e, head WHERE e.id > head.id
    """
)
_CONSENT_LOG = text(
    "SELECT coalesce(max(seq), 0), coalesce(extract(epoch FROM now() - max(changed_at)), 0)"
    " FROM consent_changes"
)
_REVISIONS = text("SELECT version_num FROM alembic_version")


@dataclass(frozen=True)
class Backlog:
    """How many are waiting, and for how long the oldest has (0 when none)."""

    count: int
    oldest_seconds: float


async def outbox_backlog(conn: AsyncConnection) -> Backlog:
    """Pending outbox entries (chat posts, texts, channel changes) and the oldest one's age."""
    count, age = (await conn.execute(_OUTBOX)).one()
    return Backlog(int(count), float(age))


async def deliveries_by_state(conn: AsyncConnection) -> dict[str, int]:
    """Per-recipient deliveries by state (queued, sent, delivered, failed)."""
    return {str(state): int(count) for state, count in (await conn.execute(_DELIVERIES)).all()}


async def sealer_lag(conn: AsyncConnection) -> Backlog:
    """Committed audit events above the sealed chain head, and how long the oldest has waited."""
    count, age = (await conn.execute(_SEALER_LAG)).one()
    return Backlog(int(count), float(age))


@dataclass(frozen=True)
class ConsentLogHead:
    """The newest consent change: its sequence number and its age (0 for an empty log)."""

    seq: int
    age_seconds: float


async def consent_log_head(conn: AsyncConnection) -> ConsentLogHead:
    seq, age = (await conn.execute(_CONSENT_LOG)).one()
    return ConsentLogHead(int(seq), float(age))


async def schema_revisions(conn: AsyncConnection) -> frozenset[str]:
    """The Alembic revisions the database is at (empty if it was never migrated)."""
    return frozenset(str(r) for r in (await conn.execute(_REVISIONS)).scalars())
