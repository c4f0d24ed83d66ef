"""Idempotency keys: the first response to a key is the response to every repeat of it.

The key row is inserted **first, in its own transaction**, with state ``in_progress``; the unique
(user, key) index makes a concurrent duplicate find it and get 409. The action then runs and binds
the row to what it created (``resource_id``) in the action's own transaction; afterwards the
response's status is stored and the row is ``completed``. A repeat with the same request replays it;
a different request under the same key is 422. Keys expire after ``ttl``.

**A replay is read again, not copied.** What the first answer showed (a message's text, a
conversation's title) may since have been recalled, deleted by retention, or put out of the caller's
reach (a role changed, a patient's consent revoked). So a repeat is answered with the first status
and what the key created read again as the caller may read it now (decided and audited like any
read: 403/404 when they may not), never with a stored copy of what they once could. So no copy is
stored: a row holds the request's digest, its state and lease, and the first status and created
resource, nothing of the answer's text (message text and conversation titles are PHI, and a key is
kept for ``ttl``). Every operation that takes a key creates something (a conversation, a message),
so a completed row always names it (the table's check ``completed_names_resource``, migration 0034).

**A lease, renewed while the request runs.** The claim holds the key until ``lease_until``, a few
seconds ahead; while the action runs, :meth:`IdempotencyStore.held` renews it every third of the
lease. A request that dies with its process (``kill -9``) or loses the database mid-way renews
nothing more, so its key is free again within one lease of its last renewal, not after a fixed
minute: a repeat then takes it over when nothing was committed (``resource_id`` is null) or is
answered from the created resource when something was. A repeat while the first request is alive
(its lease renewed) is 409, however long that request takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from engine.errors import Conflict, IdempotencyMismatch

log = structlog.get_logger("caremsg.idempotency")


@dataclass(frozen=True)
class Claim:
    """This request owns the key: run the action, then :meth:`IdempotencyStore.complete` it."""

    id: int


@dataclass(frozen=True)
class Replay:
    """The first request to this key completed: answer its status again, with what it created
    (``resource_id``) as the caller may read it now."""

    status: int
    resource_id: int


@dataclass(frozen=True)
class Recreate:
    """The first request committed but died before its response was stored: rebuild it."""

    resource_id: int


def request_hash(operation: str, raw: bytes) -> str:
    """A digest of the request: JSON compared by value (key order and spacing do not matter)."""
    try:
        canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = raw
    return hashlib.sha256(operation.encode() + b"\0" + canonical).hexdigest()


class IdempotencyStore:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, ttl: timedelta, lease: timedelta
    ) -> None:
        self._sessions = sessions
        self._ttl = ttl.total_seconds()
        self._lease = lease.total_seconds()

    async def claim(self, user_id: int, key: str, operation: str, digest: str) -> Claim | Replay | Recreate:
        """Own the key, or learn what its first request answered; 409 while that request still runs,
        422 if this request differs from it."""
        params = {"user": user_id, "key": key, "op": operation, "hash": digest, "ttl": self._ttl}
        async with self._sessions() as session, session.begin():
            await session.execute(
                text(
                    "DELETE FROM idempotency_keys WHERE user_id = :user AND key = :key AND expires_at < now()"
                ),
                params,
            )
            inserted = (
                await session.execute(
                    text(
                        "INSERT INTO idempotency_keys"
                        " (user_id, key, operation, request_hash, expires_at, lease_until)"
                        " VALUES (:user, :key, :op, :hash, now() + make_interval(secs => :ttl),"
                        " now() + make_interval(secs => :lease))"
                        " ON CONFLICT (user_id, key) DO NOTHING RETURNING id"
                    ),
                    {**params, "lease": self._lease},
                )
            ).first()
            if inserted is not None:
                return Claim(inserted.id)
            row = (
                await session.execute(
                    text(
                        "SELECT id, operation, request_hash, state, resource_id, response_status,"
                        " lease_until < now() AS stale"
                        " FROM idempotency_keys WHERE user_id = :user AND key = :key FOR UPDATE"
                    ),
                    params,
                )
            ).one()
            if row.operation != operation or row.request_hash != digest:
                raise IdempotencyMismatch("This Idempotency-Key was used with a different request.")
            if row.state == "completed":
                return Replay(row.response_status, row.resource_id)
            if not row.stale:
                raise Conflict("A request with this Idempotency-Key is still in progress.")
            if row.resource_id is not None:
                return Recreate(row.resource_id)
            await session.execute(
                text(
                    "UPDATE idempotency_keys SET created_at = now(),"
                    " lease_until = now() + make_interval(secs => :lease) WHERE id = :id"
                ),
                {"id": row.id, "lease": self._lease},
            )
            return Claim(row.id)

    @contextlib.asynccontextmanager
    async def held(self, claim: Claim) -> AsyncIterator[None]:
        """Keep the claim's lease renewed while the block runs (the request's action)."""
        renewer = asyncio.create_task(self._renew(claim), name="idempotency-lease")
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _renew(self, claim: Claim) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            try:
                async with self._sessions() as session, session.begin():
                    await session.execute(
                        text(
                            "UPDATE idempotency_keys SET lease_until = now() + make_interval(secs => :lease)"
                            " WHERE id = :id AND state = 'in_progress'"
                        ),
                        {"id": claim.id, "lease": self._lease},
                    )
            except Exception as error:  # the database may be away; the request will find out itself
                log.warning("idempotency.lease_renewal_failed", error=type(error).__name__)

    async def complete(self, claim: Claim, status: int) -> None:
        """Store the response's status (the action bound what it created); from now on every repeat
        answers it, with the created resource read again."""
        async with self._sessions() as session, session.begin():
            await session.execute(
                text(
                    "UPDATE idempotency_keys SET state = 'completed', response_status = :status"
                    " WHERE id = :id"
                ),
                {"status": status, "id": claim.id},
            )

    async def release(self, claim: Claim) -> None:
        """The action failed without effect: forget the key so the client may try again.

        If the database cannot be reached (the failure may well be that), the key's lease frees it
        instead, and the action's own error is what the client sees, not this one's.
        """
        try:
            async with self._sessions() as session, session.begin():
                await session.execute(
                    text("DELETE FROM idempotency_keys WHERE id = :id AND resource_id IS NULL"),
                    {"id": claim.id},
                )
        except Exception as error:
            log.warning("idempotency.release_failed", error=type(error).__name__)
