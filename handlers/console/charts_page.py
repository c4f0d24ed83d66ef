"""The console's charts: decisions over time by outcome and reason (stacked bars, a bar per day or
week), and break-glass openings per week, as server-rendered SVG with a table of the same numbers.

The counts come from one workflow (``engine.workflows.audit_figures``, decided as ``audit.read``:
one's own organization only); this module only lays them out. Every series has a pattern as well as
a colour, and a label in the legend and the table, so the pictures read in print, in grey and
without colour vision; each SVG has a ``<title>`` and a ``<desc>`` that says what it shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web

from engine.audit_figures import Figures, Period
from engine.errors import FieldError, InvalidInput
from engine.model import Actor
from engine.workflows import audit_figures
from handlers.requests import services

#: Each series' look: (fill colour, pattern drawn over it in white). Dark colours: white text and
#: strokes on them keep 7:1; the pattern tells series apart where colour does not.
LOOKS: tuple[tuple[str, str], ...] = (
    ("#1b5e20", "solid"),
    ("#8a1010", "diagonal"),
    ("#0d47a1", "dots"),
    ("#4a148c", "cross"),
    ("#6d4c00", "horizontal"),
    ("#004d40", "vertical"),
    ("#880e4f", "backslash"),
    ("#263238", "grid"),
    ("#3e2723", "wide-diagonal"),
)
#: Denial reasons shown apart; the rest are summed as "denied: other reasons".
MOST_REASONS = len(LOOKS) - 3
WIDTH, HEIGHT = 760, 280
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 48
DEFAULT_WEEKS = 12
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Series:
    key: tuple[str, str | None]
    label: str
    color: str
    pattern: str
    index: int


@dataclass(frozen=True)
class Segment:
    x: float
    y: float
    width: float
    height: float
    series: Series
    count: int


@dataclass(frozen=True)
class Bar:
    start: date
    label: str
    total: int
    x: float
    width: float
    segments: tuple[Segment, ...]
    show_label: bool


@dataclass(frozen=True)
class Tick:
    y: float
    value: int


@dataclass(frozen=True)
class Chart:
    """One chart's geometry: bars (each a stack of segments), the y axis's ticks, the series."""

    bars: tuple[Bar, ...]
    series: tuple[Series, ...]
    ticks: tuple[Tick, ...]
    total: int
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    baseline: float = HEIGHT - BOTTOM


def _series_label(outcome: str, reason: str | None) -> str:
    if outcome == "success":
        return "allowed"
    if outcome == "failure":
        return "allowed, then failed"
    return f"denied: {reason or 'no reason recorded'}"


def _periods(since: datetime, until: datetime, period: Period) -> list[date]:
    """Every period that starts before ``until`` and ends after ``since``, empty ones included."""
    first = since.date()
    if period is Period.WEEK:
        first -= timedelta(days=first.weekday())
    step = timedelta(days=7 if period is Period.WEEK else 1)
    starts = []
    while datetime(first.year, first.month, first.day, tzinfo=UTC) < until:
        starts.append(first)
        first += step
    return starts


def _ticks(top: int, plot_height: float) -> tuple[int, list[Tick]]:
    """A round step (1, 2, 2.5 or 5 times a power of ten, whole) that reaches ``top`` in at most five
    ticks above zero; the axis's maximum, and its ticks."""
    steps = (int(m * 10**k) for k in range(15) for m in (1, 2, 2.5, 5) if m * 10**k == int(m * 10**k))
    step = next(s for s in steps if top <= 5 * s)
    count = max(1, -(-top // step))
    return count * step, [Tick(HEIGHT - BOTTOM - plot_height * i / count, i * step) for i in range(count + 1)]


def layout(
    starts: list[date],
    counts: dict[date, dict[tuple[str, str | None], int]],
    series: list[Series],
    period: Period,
) -> Chart:
    """Stacked bars for ``counts`` (period start -> series key -> count) over ``starts``."""
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    totals = {s: sum(counts.get(s, {}).values()) for s in starts}
    top, ticks = _ticks(max(totals.values(), default=0), plot_height)
    slot = plot_width / max(len(starts), 1)
    every = max(1, -(-len(starts) // 12))  # at most about 12 labels under the axis
    bars = []
    for i, start in enumerate(starts):
        x = LEFT + i * slot + slot * 0.15
        width = slot * 0.7
        y = float(HEIGHT - BOTTOM)
        segments = []
        for s in series:
            n = counts.get(start, {}).get(s.key, 0)
            if not n:
                continue
            h = plot_height * n / top
            y -= h
            segments.append(Segment(round(x, 2), round(y, 2), round(width, 2), round(h, 2), s, n))
        label = start.strftime("%d %b")
        bars.append(
            Bar(start, label, totals[start], round(x, 2), round(width, 2), tuple(segments), i % every == 0)
        )
    return Chart(tuple(bars), tuple(series), tuple(ticks), sum(totals.values()))


def decisions_chart(figures: Figures) -> Chart:
    """The decisions of each period stacked by series: allowed, allowed then failed, and each denial
    reason (the most frequent ones apart, the rest together), in a fixed order."""
    by_reason: dict[str, int] = {}
    for d in figures.decisions:
        if d.outcome == "denied":
            by_reason[d.reason or ""] = by_reason.get(d.reason or "", 0) + d.count
    shown = sorted(by_reason, key=lambda r: (-by_reason[r], r))[:MOST_REASONS]
    keys: list[tuple[str, str | None]] = []
    if any(d.outcome == "success" for d in figures.decisions):
        keys.append(("success", None))
    if any(d.outcome == "failure" for d in figures.decisions):
        keys.append(("failure", None))
    keys += [("denied", r or None) for r in shown]
    other = len(by_reason) > len(shown)
    if other:
        keys.append(("denied", "*"))
    series = [
        Series(
            k,
            "denied: other reasons" if k == ("denied", "*") else _series_label(*k),
            LOOKS[i % len(LOOKS)][0],
            LOOKS[i % len(LOOKS)][1],
            i,
        )
        for i, k in enumerate(keys)
    ]
    counts: dict[date, dict[tuple[str, str | None], int]] = {}
    for d in figures.decisions:
        key: tuple[str, str | None] = (d.outcome, None) if d.outcome != "denied" else ("denied", d.reason)
        if d.outcome == "denied" and (d.reason or "") not in shown:
            key = ("denied", "*")
        into = counts.setdefault(d.period_start.date(), {})
        into[key] = into.get(key, 0) + d.count
    return layout(_periods(figures.since, figures.until, figures.period), counts, series, figures.period)


def openings_chart(figures: Figures) -> Chart:
    series = Series(("break_glass", None), "break-glass sessions opened", LOOKS[1][0], LOOKS[1][1], 1)
    counts = {c.period_start.date(): {series.key: c.count} for c in figures.break_glass_openings}
    return layout(_periods(figures.since, figures.until, Period.WEEK), counts, [series], Period.WEEK)


def _date(raw: str, field: str) -> date:
    raw = raw.strip()
    try:
        if not _DATE.match(raw):
            raise ValueError(raw)
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput([FieldError(field, "Enter a date as YYYY-MM-DD.")]) from None


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def charts(request: web.Request, actor: Actor) -> tuple[int, dict[str, Any]]:
    """(status, context): the period form and both charts; the form alone with its errors."""
    svc = services(request)
    today = svc.clock().astimezone(UTC).date()
    values = {
        "from": request.query.get("from", "")
        or (today - timedelta(days=today.weekday(), weeks=DEFAULT_WEEKS - 1)).isoformat(),
        "to": request.query.get("to", "") or today.isoformat(),
        "per": request.query.get("per", "") or Period.WEEK.value,
    }
    context: dict[str, Any] = {"values": values, "errors": {}, "decisions": None, "openings": None}
    try:
        errors: dict[str, str] = {}
        if values["per"] not in {p.value for p in Period}:
            errors["per"] = "Choose day or week."
        since = until = None
        for name in ("from", "to"):
            try:
                day = _date(values[name], name)
            except InvalidInput as invalid:
                errors[name] = invalid.errors[0].message
                continue
            if name == "from":
                since = _midnight(day)
            else:
                until = _midnight(day) + timedelta(days=1)  # the day named is included
        if errors or since is None or until is None:
            raise InvalidInput([FieldError(k, v) for k, v in errors.items()])
        cmd = audit_figures.CountDecisions(since, until, Period(values["per"]))
        figures = await audit_figures.audit_figures(svc, actor, cmd)
    except InvalidInput as invalid:
        context["errors"] = {e.field: e.message for e in invalid.errors}
        return 422, context
    context["figures"] = figures
    context["last_day"] = until - timedelta(days=1)
    context["decisions"] = decisions_chart(figures)
    context["openings"] = openings_chart(figures)
    return 200, context
