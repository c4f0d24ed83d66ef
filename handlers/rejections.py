"""Requests refused for their credentials, counted in memory and audited as one summary per source
(an address, an IPv6 one by its /64: engine/sources.py) and window
(``ratelimit.rejection_summary_seconds``), not one permanent row each.

Each worker keeps its own counts and writes its own summaries: with N workers a source may get up
to N records per window. A worker killed without a clean stop loses at most one window's counts
(the log line of each refusal remains). At most ``max_sources`` sources are told apart per window;
beyond that they are counted together in one record without an address.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from engine.services import Services, utc_now
from engine.workflows.audit import RejectionSummary, record_rejection_summaries

log = structlog.get_logger("caremsg.http")


@dataclass
class _Window:
    request_id: str
    route: str
    reason: str
    first_at: datetime
    last_at: datetime
    counts: dict[str, int] = field(default_factory=dict)


class RejectionSummaries:
    def __init__(
        self,
        services: Callable[[], Services],
        *,
        window_seconds: float,
        max_sources: int = 10_000,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._services = services
        self.window_seconds = window_seconds
        self._max_sources = max_sources
        self._clock = clock
        self._windows: dict[tuple[str | None, int | None], _Window] = {}

    def count(
        self, *, source_address: str | None, actor_id: int | None, reason: str, request_id: str, route: str
    ) -> None:
        """Count one refusal; no I/O, so a flood of bad tokens never waits on the database."""
        key = (source_address, actor_id)
        if key not in self._windows and len(self._windows) >= self._max_sources:
            key = (None, None)
        now = self._clock()
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(request_id, route, reason, now, now)
        window.last_at = now
        window.counts[reason] = window.counts.get(reason, 0) + 1

    async def flush(self) -> None:
        """Write the summaries of the window that just ended (and start a new one)."""
        windows, self._windows = self._windows, {}
        summaries = [
            RejectionSummary(source, actor, w.request_id, w.route, w.reason, w.first_at, w.last_at, w.counts)
            for (source, actor), w in windows.items()
        ]
        try:
            await record_rejection_summaries(self._services(), summaries, window_seconds=self.window_seconds)
        except Exception as error:
            log.error(
                "auth.rejections_not_audited",
                summaries=len(summaries),
                refusals=sum(sum(s.counts.values()) for s in summaries),
                error=type(error).__name__,
            )

    async def run(self) -> None:
        """Flush every window until cancelled (the owner flushes once more after cancelling)."""
        while True:
            await asyncio.sleep(self.window_seconds)
            await self.flush()
