"""What a failed delivery means for its entry: the one rule every executor's failure goes through.

Every effect the relay performs (a message or file post, a channel's creation, a member's removal,
a recall's delete, an SMS reply's post, a text) fails by raising, and :func:`classify` alone says
what that failure is:

- ``outage``: the provider or the database is out of reach (the gateway's retryable errors: 5xx,
  timeouts, dropped connections, rate limits; the database unreachable). Retried for as long as it
  lasts; never ends the entry.
- ``credentials``: the provider refused caremsg's own credentials
  (:class:`engine.errors.ChatCredentialsRejected`: a token rotated badly, revoked, mistyped). Held
  exactly like an outage, since nothing about the entry is wrong, and reported to the operator (an
  error-level line and a metric), who alone can end it.
- ``refusal``: the provider refused this entry for good (bad input, no such channel, a refused
  number, not allowed to this resource). Dead at once.
- ``own_error``: anything else, a fault of caremsg's own. Retried, and dead after
  ``outbox.max_attempts``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine.errors import ChatCredentialsRejected, ChatGatewayError, ChatRateLimited
from integrations.db.base import is_unavailable

Kind = Literal["outage", "credentials", "refusal", "own_error"]


@dataclass(frozen=True)
class Failure:
    """A failed delivery, classified: its ``kind``, the ``reason`` recorded with it, how long a rate
    limit asked to wait (seconds, if it said) and, for ``credentials``, whose and which refusal."""

    kind: Kind
    reason: str
    retry_after: float | None = None
    #: For ``credentials``: the provider that refused them, and its error code (else the HTTP status).
    provider: str | None = None
    provider_code: int | None = None

    @property
    def outage(self) -> bool:
        """Retried for as long as it lasts: it says nothing about the entry itself."""
        return self.kind in ("outage", "credentials")

    @property
    def final(self) -> bool:
        """Ends the entry at once, whatever its attempts."""
        return self.kind == "refusal"


def classify(exc: Exception) -> Failure:
    """What ``exc``, raised by an executor's delivery, means for its entry (see the module docstring)."""
    if isinstance(exc, ChatCredentialsRejected):
        code = exc.provider_code if exc.provider_code is not None else exc.status
        return Failure("credentials", exc.code, provider=exc.provider, provider_code=code)
    if isinstance(exc, ChatGatewayError):
        if not exc.retryable:
            return Failure("refusal", exc.code)
        return Failure("outage", exc.code, exc.retry_after if isinstance(exc, ChatRateLimited) else None)
    return Failure("outage" if is_unavailable(exc) else "own_error", "relay_error")
