"""Password hashing (argon2id, off the event loop) and JWT access tokens (joserfc, HS256 only)."""

from __future__ import annotations

import asyncio
import functools
import math
import os
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from engine.errors import Unauthenticated
from engine.model import Actor, Role, User
from engine.ports import IssuedToken

ALGORITHMS = ["HS256"]
TOKEN_TYPE = "access"  # noqa: S105 - a claim value, not a secret
#: Seconds of clock skew allowed on the time-bound claims.
_LEEWAY = 5


@functools.cache
def _no_account_hash(time_cost: int, memory_kib: int) -> str:
    """What an unknown email is verified against: a hash of this cost, so it costs what a real
    account's costs (a fixed hash of other parameters would take another time, which tells whether
    an account exists). Made once per process and cost (~0.1 s of CPU at the default cost), not at
    every app start."""
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib).hash(secrets.token_urlsafe(16))


class Argon2Passwords:
    """argon2id with the library's defaults; each hash costs ~0.1 s of CPU, so it runs in a thread.

    At most ``concurrency`` hashes run at once (default: half the cores, at least one); the rest
    wait their turn. A storm of logins (many sources, each within its free failures) then takes
    that share of the CPU and no more: requests that hash nothing keep the rest, instead of the
    default executor's threads hashing on every core while the event loop waits for one."""

    def __init__(self, *, time_cost: int = 3, memory_kib: int = 65536, concurrency: int = 0) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
        self._no_account_hash = _no_account_hash(time_cost, memory_kib)
        self._turns = asyncio.Semaphore(concurrency or max(1, (os.cpu_count() or 2) // 2))

    async def hash(self, password: str) -> str:
        async with self._turns:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        known = password_hash is not None
        checked = self._no_account_hash if password_hash is None else password_hash

        def check() -> bool:
            try:
                return self._hasher.verify(checked, password) and known
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        async with self._turns:
            return await asyncio.to_thread(check)


class JwtTokens:
    """Issues and verifies access tokens.

    joserfc's ``jwt.decode`` checks only the signature; expiry, issuer, audience and the token type
    are checked here with a claims registry, and only HS256 is accepted (no ``alg: none``, no
    RS/HS confusion).

    A client sends the same token with every request, so the claims of tokens whose signature has
    been checked are kept (by the exact token string, at most ``verified_cache_size``), and so is
    the actor of a token whose claims have all been validated once. Only the time-bound claims can
    change their verdict after that, so each later use checks those again, exactly as joserfc's
    registry does (``exp``, ``nbf`` and ``iat`` against the clock, with the same leeway): an expired
    token is refused as before, cached or not. Tokens that fail are never kept as validated.
    """

    def __init__(
        self,
        secret: str,
        *,
        issuer: str,
        audience: str,
        lifetime_seconds: int,
        clock: Callable[[], float] = time.time,
        verified_cache_size: int = 4096,
    ) -> None:
        self._key = OctKey.import_key(secret.encode())
        self._signed_claims = functools.lru_cache(maxsize=verified_cache_size)(self._check_signature)
        self._validated = functools.lru_cache(maxsize=verified_cache_size)(self._validate)
        self._issuer = issuer
        self._audience = audience
        self._lifetime = lifetime_seconds
        self._clock = clock
        self._registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self._clock()),
            leeway=_LEEWAY,
            exp={"essential": True},
            iat={"essential": True},
            sub={"essential": True},
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            typ={"essential": True, "value": TOKEN_TYPE},
            role={"essential": True, "values": [r.value for r in Role]},
            org={"essential": True},
        )

    def issue(self, user: User) -> IssuedToken:
        issued = self._clock()
        now = int(issued)
        claims = {
            "sub": str(user.id),
            "iss": self._issuer,
            "aud": self._audience,
            # In milliseconds (a NumericDate may be fractional, RFC 7519 §2): a session ended now
            # must not take down a login made a moment later in the same second.
            # Rounded down, so a token is never dated after a revocation that followed it.
            "iat": math.floor(issued * 1000) / 1000,
            "nbf": now,
            "exp": now + self._lifetime,
            "jti": uuid.uuid4().hex,
            "typ": TOKEN_TYPE,
            "role": user.role.value,
            "org": user.organization_id,
        }
        token = jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, self._key, algorithms=ALGORITHMS)
        return IssuedToken(token, self._lifetime)

    def _check_signature(self, token: str) -> Mapping[str, Any]:
        return MappingProxyType(jwt.decode(token, self._key, algorithms=ALGORITHMS).claims)

    def _validate(self, token: str) -> _Validated:
        """Every claim checked by joserfc's registry now; raises if any fails (then nothing is kept)."""
        claims = self._signed_claims(token)
        self._registry.validate(dict(claims))
        actor = Actor(
            user_id=int(claims["sub"]),
            role=Role(claims["role"]),
            organization_id=int(claims["org"]),
            issued_at=float(claims["iat"]),
        )
        return _Validated(actor, claims["exp"], claims.get("nbf"), claims["iat"])

    def verify(self, token: str) -> Actor:
        try:
            validated = self._validated(token)
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise Unauthenticated("The access token is not valid.") from exc
        if not validated.current(int(self._clock())):
            raise Unauthenticated("The access token is not valid.")
        return validated.actor


@dataclass(frozen=True)
class _Validated:
    """A token whose claims all passed once: its actor and its time-bound claims (already checked to
    be NumericDates)."""

    actor: Actor
    exp: float
    nbf: float | None
    iat: float

    def current(self, now: int) -> bool:
        """The time-bound claims hold at ``now``, by joserfc's own comparisons
        (``JWTClaimsRegistry.validate_exp``, ``validate_nbf``, ``validate_iat``)."""
        return (
            self.exp > now - _LEEWAY
            and (self.nbf is None or self.nbf <= now + _LEEWAY)
            and self.iat <= now + _LEEWAY
        )
