"""Client-side rate limiting: Sendbird's limits per endpoint class, and the token bucket kept to."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RateLimits:
    """Requests per second the client allows itself, per endpoint class.

    Defaults are Sendbird's free-trial plan (§2 "Rate limits": GET 10/s, POST/PUT/DELETE 5/s).
    Sendbird counts per endpoint; one bucket for all writes is stricter, hence never over any single
    endpoint's limit. ``burst`` 1 spaces calls evenly, so no one-second window sees more than the
    rate, whichever way Sendbird aligns its windows.
    """

    get_per_second: float = 10.0
    write_per_second: float = 5.0
    burst: int = 1


class TokenBucket:
    """An async token bucket: ``acquire`` returns once the caller may make one request.

    A caller reserves its slot synchronously (the bucket may go into debt) and then sleeps exactly
    once for the time that slot needs, so concurrent callers are served in arrival order without
    locks or polling. A caller cancelled while waiting forfeits its slot; later callers are not
    moved up, which errs on the side of fewer requests.
    """

    def __init__(
        self,
        rate_per_second: float,
        *,
        burst: int = 1,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not rate_per_second > 0 or burst < 1:
            raise ValueError("rate_per_second must be positive and burst at least 1")
        self._rate = rate_per_second
        self._burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self._burst
        self._updated = clock()

    def reserve(self) -> float:
        """Take one token now and return how many seconds the caller must wait before using it."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    async def acquire(self) -> None:
        """Wait until one more request fits in the budget."""
        delay = self.reserve()
        if delay > 0:
            await self._sleep(delay)
