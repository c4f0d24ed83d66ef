"""SQL behind the identity ports (engine/ports/identity.py): users, organizations, account checks."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from engine.errors import ServiceUnavailable
from engine.model import (
    Actor,
    Credentials,
    Organization,
    Page,
    Role,
    User,
)
from engine.ports.identity import NewUser
from integrations.db.base import Repository, insert_unique, is_unavailable, page
from integrations.db.columns import table_of
from integrations.db.tables import OrganizationRow, UserRow

orgs_t = table_of(OrganizationRow)
users_t = table_of(UserRow)


def user_of(row: Any) -> User:
    return User(
        id=row.id,
        email=row.email,
        first_name=row.first_name,
        last_name=row.last_name,
        role=Role(row.role),
        organization_id=row.organization_id,
        is_active=row.is_active,
        chat_user_id=row.chat_user_id,
        created_at=row.created_at,
        pending_approval=row.pending_approval,
    )


class SqlUserRepository(Repository):
    async def add(self, user: NewUser) -> User:
        values = {
            "email": user.email,
            "password_hash": user.password_hash,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "role": user.role.value,
            "organization_id": user.organization_id,
            "chat_user_id": f"staff_{secrets.token_hex(12)}",
            "pending_approval": user.pending_approval,
        }
        row = await insert_unique(
            self.session,
            users_t,
            values,
            constraint="uq_users_email",
            conflict="An account with this email exists already.",
        )
        return user_of(row)

    async def get(self, user_id: int) -> User | None:
        row = (await self.session.execute(select(users_t).where(users_t.c.id == user_id))).one_or_none()
        return user_of(row) if row else None

    async def get_many(self, user_ids: Sequence[int]) -> dict[int, User]:
        if not user_ids:
            return {}
        rows = (await self.session.execute(select(users_t).where(users_t.c.id.in_(list(user_ids))))).all()
        return {row.id: user_of(row) for row in rows}

    async def by_chat_id(self, chat_user_id: str) -> User | None:
        row = (
            await self.session.execute(
                select(users_t).where(users_t.c.chat_user_id == chat_user_id, users_t.c.is_active)
            )
        ).one_or_none()
        return user_of(row) if row else None

    async def credentials(self, email: str) -> Credentials | None:
        row = (await self.session.execute(select(users_t).where(users_t.c.email == email))).one_or_none()
        return Credentials(user_of(row), row.password_hash) if row else None

    async def list_for_organization(self, organization_id: int, after: int | None, limit: int) -> Page[User]:
        query = select(users_t).where(users_t.c.organization_id == organization_id)
        if after is not None:
            query = query.where(users_t.c.id > after)
        rows = (await self.session.execute(query.order_by(users_t.c.id).limit(limit + 1))).all()
        return page([user_of(r) for r in rows], limit, lambda u: u.id)

    async def exists(self, email: str) -> bool:
        query = select(exists().where(users_t.c.email == email))
        return bool((await self.session.execute(query)).scalar())

    async def update_account(
        self,
        user_id: int,
        *,
        is_active: bool | None = None,
        role: Role | None = None,
        pending_approval: bool | None = None,
        sessions_valid_after: datetime | None = None,
    ) -> User:
        changes: dict[str, Any] = {
            "is_active": is_active,
            "role": role.value if role is not None else None,
            "pending_approval": pending_approval,
            "sessions_valid_after": sessions_valid_after,
        }
        values = {k: v for k, v in changes.items() if v is not None}
        query = update(users_t).where(users_t.c.id == user_id).values(**values).returning(users_t)
        return user_of((await self.session.execute(query)).one())

    async def alert_phone(self, user_id: int) -> str | None:
        query = select(users_t.c.alert_phone).where(users_t.c.id == user_id)
        phone: str | None = (await self.session.execute(query)).scalar_one_or_none()
        return phone

    async def set_alert_phone(self, user_id: int, phone_number: str | None) -> None:
        await self.session.execute(
            update(users_t).where(users_t.c.id == user_id).values(alert_phone=phone_number)
        )


def _organization(row: Any) -> Organization:
    return Organization(row.id, row.name, row.self_registration, row.created_at)


class SqlOrganizationRepository(Repository):
    async def add(self, name: str, *, self_registration: bool) -> Organization:
        row = await insert_unique(
            self.session,
            orgs_t,
            {"name": name, "self_registration": self_registration},
            constraint="uq_organizations_name",
            conflict="An organization with this name exists already.",
        )
        return _organization(row)

    async def get(self, organization_id: int) -> Organization | None:
        row = (await self.session.execute(select(orgs_t).where(orgs_t.c.id == organization_id))).one_or_none()
        return _organization(row) if row else None

    async def by_name(self, name: str) -> Organization | None:
        row = (await self.session.execute(select(orgs_t).where(orgs_t.c.name == name))).one_or_none()
        return _organization(row) if row else None

    async def list(self, after: int | None, limit: int, *, only: int | None = None) -> Page[Organization]:
        query = select(orgs_t)
        if only is not None:
            query = query.where(orgs_t.c.id == only)
        if after is not None:
            query = query.where(orgs_t.c.id > after)
        rows = (await self.session.execute(query.order_by(orgs_t.c.id).limit(limit + 1))).all()
        return page([_organization(r) for r in rows], limit, lambda o: o.id)

    async def existing(self, organization_ids: Sequence[int]) -> set[int]:
        if not organization_ids:
            return set()
        rows = await self.session.execute(select(orgs_t.c.id).where(orgs_t.c.id.in_(list(organization_ids))))
        return {r.id for r in rows}


class SqlAccountDirectory:
    """Checks a token's claims against the account as it is now (one indexed primary-key read)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def current(self, actor: Actor) -> bool:
        query = select(
            users_t.c.role,
            users_t.c.organization_id,
            users_t.c.is_active,
            users_t.c.pending_approval,
            users_t.c.sessions_valid_after,
        ).where(users_t.c.id == actor.user_id)
        try:
            async with self._sessions() as session:
                row = (await session.execute(query)).one_or_none()
        except Exception as exc:
            if is_unavailable(exc):
                raise ServiceUnavailable.database() from exc
            raise
        return (
            row is not None
            and row.is_active
            and not row.pending_approval
            and row.role == actor.role.value
            and row.organization_id == actor.organization_id
            and _issued_after(actor.issued_at, row.sessions_valid_after)
        )


def _issued_after(issued_at: float | None, sessions_valid_after: datetime | None) -> bool:
    """A token counts only if issued at or after the account's sessions were last ended."""
    if sessions_valid_after is None:
        return True
    return issued_at is not None and issued_at >= sessions_valid_after.timestamp()


class CachedAccountDirectory:
    """Remembers an account check for ``ttl`` seconds, per (user, role, organization, issued at).

    Every authenticated request would otherwise cost its own session and three round trips. The
    price: an account deactivated, re-roled or logged out through another instance (or the command
    line) keeps access here for at most ``ttl`` seconds; through this one, :meth:`forget` ends it at
    once (``Services.on_sessions_ended``).

    Requests with the same token that arrive while its check is being read wait for that read
    instead of starting their own: when a busy token's time to live ran out, every request in
    flight (64 in ``bench/read_patient.py``) used to read the account at once, queueing on the
    connection pool, and that burst was the p99 of a whole round. A read that began before a
    :meth:`forget` is not remembered, and requests after the forget start a read of their own.
    """

    def __init__(
        self, inner: SqlAccountDirectory, *, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._inner = inner
        self._ttl = ttl
        self._clock = clock
        self._checked: dict[tuple[int, str, int, float | None], float] = {}
        self._reading: dict[tuple[int, str, int, float | None], asyncio.Future[bool]] = {}
        #: Counts :meth:`forget` calls: a read is remembered only if none came while it ran.
        self._forgets = 0

    async def current(self, actor: Actor) -> bool:
        key = (actor.user_id, actor.role.value, actor.organization_id, actor.issued_at)
        now = self._clock()
        if self._checked.get(key, -1.0) > now:
            return True
        reading = self._reading.get(key)
        if reading is None:
            reading = self._reading[key] = asyncio.ensure_future(self._read(key, actor, now))
            # Retrieved even when every waiter was cancelled, so no "never retrieved" warning.
            reading.add_done_callback(lambda done: done.cancelled() or done.exception())
        # Shielded: a waiter cancelled (its client went away) does not cancel the others' read.
        return await asyncio.shield(reading)

    async def _read(self, key: tuple[int, str, int, float | None], actor: Actor, asked: float) -> bool:
        forgets = self._forgets
        try:
            current = await self._inner.current(actor)
        finally:
            if self._reading.get(key) is asyncio.current_task():
                del self._reading[key]
        if not current:
            self._checked.pop(key, None)
            return False
        if forgets == self._forgets:
            if len(self._checked) > 10_000:  # bounded: drop everything rather than track recency
                self._checked.clear()
            self._checked[key] = asked + self._ttl
        return True

    def forget(self, user_id: int) -> None:
        """The account's tokens are checked again on their next request (its sessions ended)."""
        self._forgets += 1
        self._checked = {key: until for key, until in self._checked.items() if key[0] != user_id}
        self._reading = {key: read for key, read in self._reading.items() if key[0] != user_id}
