"""The console's session cookie and CSRF tokens.

The cookie carries the access token the login workflow issued (a JWT naming the account and when it
was issued), the time of the last request, and an HMAC over both, keyed from ``auth.jwt_secret``.
So the session means something on the server: every request verifies the token and re-checks the
account (``sessions_valid_after``: signing out, an admin ending its sessions, a deactivation or a
role change all end it), refuses it past the idle timeout (since the last request) and past the
absolute timeout (since sign-in, and never past the token's own expiry).

CSRF: every POST form carries a token that is an HMAC of the session's access token (the sign-in
form: of a random pre-session cookie), so a page elsewhere can neither read nor forge it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SESSION_COOKIE = "caremsg_console"
LOGIN_COOKIE = "caremsg_console_login"
CSRF_FIELD = "csrf_token"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True)
class OpenSession:
    """A session cookie whose signature holds and whose idle time has not run out."""

    token: str
    last_seen: int


class SessionCodec:
    """Seals and opens session cookies; makes and checks CSRF tokens."""

    def __init__(self, secret: str, *, idle_seconds: int, absolute_seconds: int) -> None:
        self._key = hashlib.sha256(b"caremsg-console\0" + secret.encode()).digest()
        self.idle_seconds = idle_seconds
        self.absolute_seconds = absolute_seconds

    def _mac(self, purpose: str, value: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}\0{value}".encode(), hashlib.sha256).digest())

    def seal(self, token: str, now: float) -> str:
        payload = f"{int(now)}:{token}"
        return f"{self._mac('session', payload)}:{payload}"

    def open(self, value: str | None, now: float) -> OpenSession | None:
        """The session in ``value``, or None when it is missing, forged, or idle for too long."""
        if not value:
            return None
        mac, _, payload = value.partition(":")
        seen_text, _, token = payload.partition(":")
        if not token or not seen_text.isdigit():
            return None
        if not hmac.compare_digest(mac, self._mac("session", payload)):
            return None
        seen = int(seen_text)
        if now - seen > self.idle_seconds or seen > now + 60:
            return None
        return OpenSession(token, seen)

    def csrf_for(self, binding: str) -> str:
        """The CSRF token of a session (bound to its access token) or of a sign-in form (its nonce)."""
        return self._mac("csrf", binding)

    def csrf_ok(self, binding: str | None, submitted: str | None) -> bool:
        return bool(binding and submitted) and hmac.compare_digest(
            self.csrf_for(binding or ""), submitted or ""
        )

    @staticmethod
    def new_nonce() -> str:
        return secrets.token_urlsafe(24)
