"""What the audit trail's pictures count: decisions per day or week by outcome and reason, and
break-glass openings per week, of one organization (the records an auditor of it may search).

Engine types only; the adapter (``integrations.db.audit_figures``) counts them in PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Period(StrEnum):
    """How long one bar lasts: a UTC day, or an ISO week (Monday to Sunday, UTC)."""

    DAY = "day"
    WEEK = "week"


@dataclass(frozen=True)
class DecisionCount:
    """Decisions of one period with one outcome (``success``, ``denied``, ``failure``) and, for a
    denial, its reason code."""

    period_start: datetime
    outcome: str
    reason: str | None
    count: int


@dataclass(frozen=True)
class PeriodCount:
    period_start: datetime
    count: int


@dataclass(frozen=True)
class Figures:
    """The counts behind the console's charts, for ``since`` (inclusive) to ``until`` (exclusive)."""

    since: datetime
    until: datetime
    period: Period
    decisions: tuple[DecisionCount, ...]
    break_glass_openings: tuple[PeriodCount, ...]
