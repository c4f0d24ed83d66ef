"""The one SQL spelling of "who is on call at t" (integrations/db/rosters.py ``on_call_shift_sql``,
used by the hand-off and escalation schedulers) answers what ``engine.rosters.on_call_at`` answers,
on real PostgreSQL, for shifts that touch, nest, overlap (the roster refuses overlaps, but rows the
workflow did not write must not make the two disagree) and start together."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from engine.model import RiskLevel
from engine.ports.patients import NewPatient
from engine.rosters import on_call_at
from integrations.db.rosters import on_call_shift_sql
from integrations.db.uow import SqlUnitOfWork
from tests.support.worlds import clinic

T0 = datetime(2031, 6, 1, 8, tzinfo=UTC)
HOUR = timedelta(hours=1)
#: (start, end) in hours after T0: touching, nested, overlapping, and two starting together.
WINDOWS = [(0, 8), (8, 16), (2, 4), (3, 10), (12, 14), (12, 13), (20, 21)]


async def test_the_sql_and_the_python_rule_name_the_same_shift_at_every_moment(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with SqlUnitOfWork(sessions) as u:
        org, people = await clinic(u, len(WINDOWS))
        patient = await u.patients.add(NewPatient(org.id, "Ann", "Lee", None, RiskLevel.LOW, people[0].id))
        team = await u.care_teams.create(patient.id, "Team", org.id, people[0].id)
        shifts = [
            await u.rosters.add(team.id, person.id, T0 + start * HOUR, T0 + end * HOUR, person.id)
            for person, (start, end) in zip(people, WINDOWS, strict=True)
        ]
        await u.commit()

    moments = [T0 + timedelta(minutes=30 * i) for i in range(-2, 46)]
    query = text(f"SELECT id FROM ({on_call_shift_sql(':team', 'at')}) AS held")
    async with sessions() as session:
        from_sql = [
            (await session.execute(query, {"team": team.id, "at": at})).scalar_one_or_none() for at in moments
        ]
    from_python = [getattr(on_call_at(shifts, at), "id", None) for at in moments]

    assert from_sql == from_python
    assert None in from_python  # before the first shift, in the gap 16-20, after the last
    assert len({i for i in from_python if i is not None}) >= 5  # several shifts win somewhere
