"""Login throttling: exponential back-off after failed logins, per account and per source address,
and the lockout of an account after too many (ASVS 5.0 V6.3.1). The same counts pace
self-registration: per source (each registration counts, so one source cannot mint accounts or
burn the password hasher's CPU without end), and the notices an account's owner gets when someone
tries to register their address (one per window, so nobody can fill an inbox through caremsg).

The counts live in the database (``LoginThrottleRepository``) so that every worker and instance sees
them; the arithmetic lives here. An account is counted by the keyed hash of the email it was tried
with, never by whether that email has an account: an unknown email backs off and locks exactly
like a known one, so throttling answers nothing about which accounts exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

ACCOUNT_PREFIX = "account:"
ADDRESS_PREFIX = "address:"
REGISTRATION_PREFIX = "registration:"
NOTICE_PREFIX = "notice:"


@dataclass(frozen=True)
class Backoff:
    """How failures are paid for: ``free_failures`` cost nothing; each one after doubles the wait,
    from ``base_seconds`` up to ``max_seconds``. Failures are forgotten after ``window`` without one.
    With ``lock_after``, that many failures lock the key until it is cleared (an admin's unlock)."""

    free_failures: int
    base_seconds: float
    max_seconds: float
    window: timedelta
    lock_after: int | None = None

    def delay(self, failures: int) -> float:
        """Seconds to refuse further attempts after the ``failures``-th failure in a row."""
        over = failures - self.free_failures
        if over <= 0:
            return 0.0
        return float(min(self.max_seconds, self.base_seconds * 2 ** min(over - 1, 62)))

    def locks(self, failures: int) -> bool:
        return self.lock_after is not None and failures >= self.lock_after


@dataclass(frozen=True)
class ThrottleState:
    """What one key has earned: blocked until a moment, or locked until cleared."""

    failures: int
    blocked_until: datetime | None = None
    locked: bool = False

    def retry_after(self, now: datetime) -> float | None:
        """Seconds until an attempt is heard again; None if it is heard now (or never: see locked)."""
        if self.blocked_until is None or self.blocked_until <= now:
            return None
        return (self.blocked_until - now).total_seconds()


def blocked_until(backoff: Backoff, failures: int, now: datetime) -> datetime | None:
    delay = backoff.delay(failures)
    return now + timedelta(seconds=delay) if delay > 0 else None


#: The defaults of ``auth.*`` (config.toml): an account backs off after 3 failures and locks at 10;
#: a source address (a clinic's shared NAT included) backs off after 20.
ACCOUNT_BACKOFF = Backoff(3, 1.0, 900.0, timedelta(minutes=15), lock_after=10)
ADDRESS_BACKOFF = Backoff(20, 1.0, 900.0, timedelta(minutes=15))
#: 20 registrations from a source within the hour, then a minute's wait doubling up to an hour.
REGISTRATION_BACKOFF = Backoff(20, 60.0, 3600.0, timedelta(hours=1))


def once_per(window: timedelta) -> Backoff:
    """Each one counted silences the next ones for ``window`` (the notices about attempts on an
    account's address)."""
    seconds = window.total_seconds()
    return Backoff(0, seconds, seconds, window)


NOTICE_BACKOFF = once_per(timedelta(hours=1))
