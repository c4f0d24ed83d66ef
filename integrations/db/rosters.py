"""SQL behind the roster ports (engine/ports/rosters.py): on-call shifts, staff away, and the
conversations that include a care team's on-call role."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from engine.ports.rosters import OnCallRole
from engine.rosters import OnCallShift, StaffAway
from integrations.db.base import Repository
from integrations.db.columns import table_of
from integrations.db.tables import CareTeamRow, ConversationOnCallRow, OnCallShiftRow, StaffAwayRow

shifts_t = table_of(OnCallShiftRow)
away_t = table_of(StaffAwayRow)
routes_t = table_of(ConversationOnCallRow)
teams_t = table_of(CareTeamRow)


def on_call_shift_sql(care_team: str, at: str) -> str:
    """The one SQL spelling of :func:`engine.rosters.on_call_at`: the shift of care team ``care_team``
    (an SQL expression) holding at the bind parameter ``at`` — the latest-starting one if several do,
    then the highest id. A subquery giving ``id`` and ``user_id``, for a ``LATERAL`` join; the
    hand-off and escalation schedulers both use it (tests/integration/test_on_call_sql.py holds it to
    the Python rule)."""
    return f"""
        SELECT s.id, s.user_id FROM on_call_shifts s
        WHERE s.care_team_id = {care_team} AND s.starts_at <= :{at} AND :{at} < s.ends_at
        ORDER BY s.starts_at DESC, s.id DESC
        LIMIT 1
    """  # noqa: S608 - called with SQL expressions written in code; every value is bound


def away_at_sql(user: str, at: str) -> str:
    """The one SQL spelling of :func:`engine.rosters.away_at`: the away window of user ``user`` (an
    SQL expression) holding at the bind parameter ``at`` (from ``starts_at`` inclusive until
    ``ends_at`` exclusive, open-ended while null) — the latest-starting one if several do, then the
    highest id. A subquery giving ``id`` and ``delegate_id``, for a ``LATERAL`` join
    (tests/integration/test_away_sql.py holds it to the Python rule)."""
    return f"""
        SELECT a.id, a.delegate_id FROM staff_away a
        WHERE a.user_id = {user} AND a.starts_at <= :{at} AND (a.ends_at IS NULL OR :{at} < a.ends_at)
        ORDER BY a.starts_at DESC, a.id DESC
        LIMIT 1
    """  # noqa: S608 - called with SQL expressions written in code; every value is bound


def delegate_at_sql(user: str, at: str) -> str:
    """The one SQL spelling of :func:`engine.rosters.delegate_at`: who takes the urgent messages of
    user ``user`` (an SQL expression) at the bind parameter ``at`` — the delegate of the window
    :func:`away_at_sql` finds, if their account is active; no row otherwise (an inactive delegate
    does not hand the person to an earlier window's). A subquery giving ``delegate_id``, for a
    ``LATERAL`` join; the escalation scheduler uses it."""
    return f"""
        SELECT w.delegate_id FROM ({away_at_sql(user, at)}) w
        JOIN users d ON d.id = w.delegate_id AND d.is_active
    """  # noqa: S608 - called with SQL expressions written in code; every value is bound


def shift_of(r: Any) -> OnCallShift:
    return OnCallShift(r.id, r.care_team_id, r.user_id, r.starts_at, r.ends_at, r.created_by, r.created_at)


def away_of(r: Any) -> StaffAway:
    return StaffAway(r.id, r.user_id, r.delegate_id, r.starts_at, r.ends_at, r.created_at)


class SqlRosterRepository(Repository):
    async def lock_team(self, care_team_id: int) -> None:
        await self.session.execute(select(teams_t.c.id).where(teams_t.c.id == care_team_id).with_for_update())

    async def between(self, care_team_id: int, starts_at: datetime, ends_at: datetime) -> list[OnCallShift]:
        s = shifts_t.c
        rows = await self.session.execute(
            select(shifts_t)
            .where(s.care_team_id == care_team_id, s.starts_at < ends_at, s.ends_at > starts_at)
            .order_by(s.starts_at, s.id)
        )
        return [shift_of(r) for r in rows]

    async def get(self, shift_id: int) -> OnCallShift | None:
        row = (await self.session.execute(select(shifts_t).where(shifts_t.c.id == shift_id))).one_or_none()
        return shift_of(row) if row else None

    async def add(
        self, care_team_id: int, user_id: int, starts_at: datetime, ends_at: datetime, created_by: int
    ) -> OnCallShift:
        row = (
            await self.session.execute(
                insert(shifts_t)
                .values(
                    care_team_id=care_team_id,
                    user_id=user_id,
                    starts_at=starts_at,
                    ends_at=ends_at,
                    created_by=created_by,
                )
                .returning(shifts_t)
            )
        ).one()
        return shift_of(row)

    async def remove(self, shift_id: int) -> None:
        await self.session.execute(delete(shifts_t).where(shifts_t.c.id == shift_id))


class SqlAwayRepository(Repository):
    async def of_user(self, user_id: int, at: datetime) -> list[StaffAway]:
        a = away_t.c
        rows = await self.session.execute(
            select(away_t)
            .where(a.user_id == user_id, or_(a.ends_at.is_(None), a.ends_at > at))
            .order_by(a.starts_at, a.id)
        )
        return [away_of(r) for r in rows]

    async def add(
        self, user_id: int, delegate_id: int, starts_at: datetime, ends_at: datetime | None
    ) -> StaffAway:
        row = (
            await self.session.execute(
                insert(away_t)
                .values(user_id=user_id, delegate_id=delegate_id, starts_at=starts_at, ends_at=ends_at)
                .returning(away_t)
            )
        ).one()
        return away_of(row)

    async def end_from(self, user_id: int, at: datetime) -> int:
        a = away_t.c
        dropped = await self.session.execute(
            delete(away_t).where(a.user_id == user_id, a.starts_at >= at).returning(a.id)
        )
        ended = await self.session.execute(
            update(away_t)
            .where(a.user_id == user_id, a.starts_at < at, or_(a.ends_at.is_(None), a.ends_at > at))
            .values(ends_at=at)
            .returning(a.id)
        )
        return len(dropped.all()) + len(ended.all())


class SqlOnCallRoutes(Repository):
    async def include(
        self, conversation_id: int, care_team_id: int, holder_id: int | None, added_by: int
    ) -> None:
        await self.session.execute(
            pg_insert(routes_t)
            .values(
                conversation_id=conversation_id,
                care_team_id=care_team_id,
                holder_id=holder_id,
                holder_since=func.now(),
                added_by=added_by,
            )
            .on_conflict_do_nothing()
        )

    async def of_conversation(self, conversation_id: int) -> OnCallRole | None:
        r = routes_t.c
        row = (
            await self.session.execute(
                select(r.conversation_id, r.care_team_id, r.holder_id).where(
                    r.conversation_id == conversation_id
                )
            )
        ).one_or_none()
        return OnCallRole(row.conversation_id, row.care_team_id, row.holder_id) if row else None
