"""Fault injection: 5xx, 429, hangs and accept-then-drop, for N requests or T seconds of a clock."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from integrations.background import woken_or_after

_log = structlog.get_logger("integrations.sendbird_emulator")


FaultKind = Literal["error", "rate_limit", "hang", "drop"]


@dataclass
class Fault:
    """One injected failure, active for ``remaining`` more requests or until ``until`` (the fault clock)."""

    kind: FaultKind
    status: int = 503
    retry_after: float = 1.0
    hang_seconds: float = 0.0
    remaining: int | None = 1
    until: float | None = None
    #: Only requests of this method (None: every request); the others pass it by.
    method: str | None = None


class FaultInjector:
    """Failures for the next requests, in the order they were added.

    Each request to ``/v3`` takes the first active fault: ``error`` answers a 5xx, ``rate_limit`` a
    429 with ``X-RateLimit-RetryAfter`` and code 500910, ``hang`` waits ``hang_seconds`` and then
    processes the request (a slow server: the client has given up, the effect still happens),
    ``drop`` processes the request and closes the connection without answering. Time windows
    use the injected ``clock``, so tests move time instead of sleeping.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._faults: list[Fault] = []
        self._released = asyncio.Event()

    def fail_next(self, count: int = 1, *, status: int = 503) -> None:
        """Answer the next ``count`` requests with HTTP ``status`` (5xx)."""
        self.add(Fault("error", status=status, remaining=count))

    def fail_for(self, seconds: float, *, status: int = 503) -> None:
        """Answer every request with HTTP ``status`` (5xx) for the next ``seconds`` of the fault clock."""
        self.add(Fault("error", status=status, remaining=None, until=self._clock() + seconds))

    def rate_limit_next(self, count: int = 1, *, retry_after: float = 1.0) -> None:
        """Answer the next ``count`` requests with 429 / 500910 and this retry-after (seconds)."""
        self.add(Fault("rate_limit", retry_after=retry_after, remaining=count))

    def hang_next(self, seconds: float, *, count: int = 1, method: str | None = None) -> None:
        """Hold the next ``count`` requests (of ``method``, if given) for ``seconds`` before
        processing them."""
        self.add(Fault("hang", hang_seconds=seconds, remaining=count, method=method))

    def hang_for(self, seconds: float) -> None:
        """Hold every request arriving in the next ``seconds`` of the fault clock for as long, or
        until :meth:`release_hangs`: a provider that is slow for everyone until the test says so."""
        self.add(Fault("hang", hang_seconds=seconds, remaining=None, until=self._clock() + seconds))

    def drop_next(self, count: int = 1) -> None:
        """Process the next ``count`` requests, then close their connections without a reply."""
        self.add(Fault("drop", remaining=count))

    def drop_for(self, seconds: float) -> None:
        """Accept-then-drop every request for the next ``seconds``: processed, answer never sent."""
        self.add(Fault("drop", remaining=None, until=self._clock() + seconds))

    def add(self, fault: Fault) -> None:
        """Queue a fault after the ones already queued; ValueError if it makes no sense."""
        if fault.kind == "error" and not 500 <= fault.status <= 599:
            raise ValueError("an error fault needs a 5xx status")
        if fault.remaining is not None and fault.remaining < 1:
            raise ValueError("count must be at least 1")
        if fault.remaining is None and fault.until is None:
            raise ValueError("a fault needs a count or a duration")
        if fault.until is not None and fault.until <= self._clock():
            raise ValueError("a fault's duration must be positive")
        if fault.retry_after < 0 or fault.hang_seconds < 0:
            raise ValueError("retry_after and hang_seconds must not be negative")
        self._faults.append(fault)
        _log.info("sendbird_emulator.fault_added", kind=fault.kind, development_only=True)

    def add_from_json(self, spec: Any) -> Fault:
        """Queue a fault given as JSON; ValueError if the description is wrong.

        ``{"kind": "error" | "rate_limit" | "hang" | "drop", "count": N | "for_seconds": T,
        "status": 5xx, "retry_after": S, "hang_seconds": S}``; the last three only where they apply.
        """
        if not isinstance(spec, dict):
            raise ValueError("the fault must be a JSON object")
        unknown = set(spec) - {"kind", "count", "for_seconds", "status", "retry_after", "hang_seconds"}
        if unknown:
            raise ValueError(f"unknown fields: {sorted(unknown)}")
        kind = spec.get("kind")
        if kind not in ("error", "rate_limit", "hang", "drop"):
            raise ValueError('kind must be "error", "rate_limit", "hang" or "drop"')
        count, for_seconds = spec.get("count"), spec.get("for_seconds")
        if (count is None) == (for_seconds is None):
            raise ValueError('give exactly one of "count" or "for_seconds"')
        fault = Fault(
            kind,
            status=_json_number(spec, "status", 503, integer=True),
            retry_after=_json_number(spec, "retry_after", 1.0),
            hang_seconds=_json_number(spec, "hang_seconds", 0.0),
            remaining=None if count is None else _json_number(spec, "count", 1, integer=True),
            until=None if for_seconds is None else self._clock() + _json_number(spec, "for_seconds", 0.0),
        )
        self.add(fault)
        return fault

    def clear(self) -> None:
        """Forget every queued fault."""
        self._faults.clear()

    def pending(self) -> list[Fault]:
        """The faults that are still active, in the order they will apply."""
        self._expire()
        return list(self._faults)

    def take(self, method: str | None = None) -> Fault | None:
        """The fault for the request arriving now (of ``method``), counting it against its ``remaining``."""
        self._expire()
        fault = next((f for f in self._faults if f.method is None or f.method == method), None)
        if fault is None:
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
        return dataclasses.replace(fault)

    async def hang(self, seconds: float) -> None:
        """Wait ``seconds``, or less if :meth:`release_hangs` is called (the emulator is closing)."""
        await woken_or_after(self._released, seconds)

    def release_hangs(self) -> None:
        """End every current and future hang at once."""
        self._released.set()

    def _expire(self) -> None:
        now = self._clock()
        self._faults = [
            f
            for f in self._faults
            if (f.remaining is None or f.remaining > 0) and (f.until is None or now < f.until)
        ]


def _json_number(spec: Mapping[str, Any], key: str, default: float, *, integer: bool = False) -> Any:
    value = spec.get(key, default)
    wanted: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, wanted):
        raise ValueError(f'"{key}" must be {"an integer" if integer else "a number"}')
    return value
