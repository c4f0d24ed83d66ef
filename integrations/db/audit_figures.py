"""The counts behind the console's charts, in PostgreSQL: one grouped query each, over the records
an auditor of the organization may search (its staff's, and any about one of its patients).

Periods are UTC days or ISO weeks (``date_trunc`` on the UTC time). Both read the time range from
``ix_audit_events_occurred_at_visible`` alone (migration 0017): it holds whose record it is and
every column counted here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from engine.audit_figures import DecisionCount, Period, PeriodCount
from integrations.db.columns import table_of
from integrations.db.tables import AuditEventRow, PatientRow

events_t = table_of(AuditEventRow)
patients_t = table_of(PatientRow)


def _visible(organization_id: int) -> Any:
    e = events_t.c
    own_patients = select(patients_t.c.id).where(patients_t.c.organization_id == organization_id)
    return or_(e.organization_id == organization_id, e.patient_id.in_(own_patients))


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
                _visible(organization_id),
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
                _visible(organization_id),
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
