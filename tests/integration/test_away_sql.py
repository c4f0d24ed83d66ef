"""The one SQL spelling of "who is away at t, and who takes their urgent messages"
(integrations/db/rosters.py ``away_at_sql`` and ``delegate_at_sql``, used by the escalation
scheduler) answers what ``engine.rosters.away_at`` and ``delegate_at`` answer, on real PostgreSQL,
for away windows that touch, nest, overlap (the away workflow replaces a window a new one overlaps,
but rows it did not write must not make the two disagree), are open-ended, start together, and
name a delegate whose account is no longer active."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from engine.rosters import away_at, delegate_at
from integrations.db.rosters import away_at_sql, delegate_at_sql
from integrations.db.uow import SqlUnitOfWork
from tests.support.worlds import clinic

T0 = datetime(2031, 6, 1, 8, tzinfo=UTC)
HOUR = timedelta(hours=1)
#: (start, end or None: open-ended) in hours after T0, each with a delegate of its own: touching,
#: nested, overlapping, two starting together, one nested in an open-ended window, and one alone.
WINDOWS: list[tuple[int, int | None]] = [
    (0, 8),
    (8, 16),
    (2, 4),
    (3, 10),
    (12, 14),
    (12, 13),
    (20, None),
    (22, 24),
    (30, 31),
]
#: The windows whose delegate's account is deactivated: the one winning where two start together,
#: one nested in the open-ended window, and one alone.
INACTIVE = {5, 7, 8}


async def test_the_sql_and_the_python_rule_name_the_same_window_and_delegate_at_every_moment(
    engine: AsyncEngine,
) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with SqlUnitOfWork(sessions) as u:
        _, people = await clinic(u, len(WINDOWS) + 2)
        away, bystander, delegates = people[0], people[1], people[2:]
        windows = [
            await u.away.add(
                away.id, delegate.id, T0 + start * HOUR, T0 + end * HOUR if end is not None else None
            )
            for delegate, (start, end) in zip(delegates, WINDOWS, strict=True)
        ]
        # Someone else's window holding throughout: the SQL must not answer it for the away person.
        await u.away.add(bystander.id, delegates[0].id, T0 - 2 * HOUR, None)
        await u.commit()
    inactive = [delegates[i].id for i in INACTIVE]
    async with sessions() as session, session.begin():
        await session.execute(
            text("UPDATE users SET is_active = false WHERE id = ANY(CAST(:ids AS integer[]))"),
            {"ids": inactive},
        )
    active = {p.id for p in people} - set(inactive)

    moments = [T0 + timedelta(minutes=30 * i) for i in range(-2, 70)]
    window_q = text(f"SELECT id FROM ({away_at_sql(':user', 'at')}) AS held")
    delegate_q = text(f"SELECT delegate_id FROM ({delegate_at_sql(':user', 'at')}) AS taking")
    async with sessions() as session:
        window_sql = [
            (await session.execute(window_q, {"user": away.id, "at": at})).scalar_one_or_none()
            for at in moments
        ]
        delegate_sql = [
            (await session.execute(delegate_q, {"user": away.id, "at": at})).scalar_one_or_none()
            for at in moments
        ]
    window_python = [getattr(away_at(windows, at), "id", None) for at in moments]
    delegate_python = [delegate_at(windows, at, active) for at in moments]

    assert window_sql == window_python
    assert delegate_sql == delegate_python
    assert None in window_python  # before the first window and in the gap 16-20
    assert len({i for i in window_python if i is not None}) >= 7  # most windows win somewhere
    # Away with an inactive delegate: nobody stands in (not an earlier window's delegate).
    held_but_nobody = [
        at for at, w, d in zip(moments, window_python, delegate_python, strict=True) if w and not d
    ]
    assert T0 + 12 * HOUR in held_but_nobody
    assert T0 + 22 * HOUR in held_but_nobody
    assert T0 + 13 * HOUR not in held_but_nobody  # the window starting with it goes on alone
