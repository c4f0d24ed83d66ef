"""A time-range search of the trail answers the same pages whichever way it is read: through the
time index (at most ``range_cap`` matches, then the lowest ids) or walking the ids (more), even when
the records' times do not follow their ids."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from engine.audit import AuditEvent
from engine.audit_trail import AuditFilter
from integrations.db.audit import SqlAuditTrail
from integrations.db.uow import SqlUnitOfWork

#: A day nobody else's records fall on, and organizations nobody else has.
DAY = datetime(2002, 5, 6, tzinfo=UTC)
ORG, OTHER = 2_000_000_001, 2_000_000_002


async def _write(engine: AsyncEngine) -> dict[int, tuple[datetime, int]]:
    """40 records in an order their times do not follow, half of another organization; by id."""
    rng = random.Random(5)
    minutes = list(range(40))
    rng.shuffle(minutes)
    async with SqlUnitOfWork(async_sessionmaker(engine, expire_on_commit=False)) as uow:
        for i, minute in enumerate(minutes):
            uow.audit.record(
                AuditEvent(
                    event="decision",
                    workflow="patient.read",
                    outcome="success",
                    occurred_at=DAY + timedelta(minutes=minute),
                    organization_id=ORG if i % 2 else OTHER,
                    request_id=f"range-{i}",
                    decision="allow",
                )
            )
        await uow.commit()
    async with AsyncSession(engine) as session:
        trail = SqlAuditTrail(session)
        page = await trail.search(AuditFilter(ORG, since=DAY, until=DAY + timedelta(hours=1)), None, 1000)
        other = await trail.search(AuditFilter(OTHER, since=DAY, until=DAY + timedelta(hours=1)), None, 1000)
    return {r.id: (r.event.occurred_at, r.event.organization_id or 0) for r in page.items + other.items}


async def _pages(engine: AsyncEngine, range_cap: int, since: datetime, until: datetime) -> list[list[int]]:
    pages: list[list[int]] = []
    after = None
    async with AsyncSession(engine) as session:
        trail = SqlAuditTrail(session, range_cap=range_cap)
        while True:
            page = await trail.search(AuditFilter(ORG, since=since, until=until), after, 3)
            pages.append([r.id for r in page.items])
            if page.next_cursor is None:
                return pages
            after = page.next_cursor


async def test_a_range_pages_the_same_through_the_time_index_and_walking_the_ids(engine: AsyncEngine) -> None:
    written = await _write(engine)
    assert len(written) == 40
    since, until = DAY + timedelta(minutes=7), DAY + timedelta(minutes=29)
    expected = sorted(i for i, (at, org) in written.items() if org == ORG and since <= at < until)
    assert len(expected) > 6  # several pages
    assert expected != sorted(expected, key=lambda i: written[i][0])  # times do not follow ids
    through_index = await _pages(engine, 1000, since, until)
    walking = await _pages(engine, 2, since, until)  # more matches than the cap: walks the ids
    assert [i for page in through_index for i in page] == expected
    assert through_index == walking
    assert all(len(page) == 3 for page in through_index[:-1])
