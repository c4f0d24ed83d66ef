"""The counts behind the console's charts, in PostgreSQL: one grouped query each, over the records
an auditor of the organization may search (:func:`integrations.db.audit.visible_to`).

Periods are UTC days or ISO weeks (``date_trunc`` on the UTC time). Both read the time range from
``ix_audit_events_occurred_at_visible`` (migration 0017): it holds whose record it is and every
column counted here; the organization's own records are also read for what their staff were not
told (``details.answered``), which the index does not hold.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from engine.audit_figures import DecisionCount, Period, PeriodCount
from integrations.db.audit import visible_to
from integrations.db.columns import table_of
from integrations.db.tables import AuditEventRow

events_t = table_of(AuditEventRow)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class SqlAuditFigures:
    """The :class:`engine.ports.AuditFigures` adapter, on the unit of work's session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def decisions(
        self, organization_id: int, since: datetime, until: datetime, period: Period
    ) -> list[DecisionCount]:
        e = events_t.c
        start = func.date_trunc(period.value, func.timezone("UTC", e.occurred_at)).label("start")
        reason = case((e.outcome == "denied", e.reason), else_=None).label("reason")
        query = (
            select(start, e.outcome, reason, func.count().label("n"))
            .where(
                visible_to(organization_id),
                e.decision.is_not(None),
                e.occurred_at >= since,
                e.occurred_at < until,
            )
            .group_by(start, e.outcome, reason)
            .order_by(start, e.outcome, reason)
        )
        rows = (await self.session.execute(query)).all()
        return [DecisionCount(_utc(r.start), r.outcome, r.reason, int(r.n)) for r in rows]

    async def break_glass_openings(
        self, organization_id: int, since: datetime, until: datetime
    ) -> list[PeriodCount]:
        e = events_t.c
        start = func.date_trunc("week", func.timezone("UTC", e.occurred_at)).label("start")
        query = (
            select(start, func.count().label("n"))
            .where(
                visible_to(organization_id),
                e.workflow == "break_glass.open",  # a decision: only decisions have one
                e.decision == "allow",
                e.outcome == "success",
                e.occurred_at >= since,
                e.occurred_at < until,
            )
            .group_by(start)
            .order_by(start)
        )
        rows = (await self.session.execute(query)).all()
        return [PeriodCount(_utc(r.start), int(r.n)) for r in rows]
