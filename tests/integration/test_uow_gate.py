"""The general unit of work's gate (integrations/db/uow.py): workflows enter in arrival order and
always give their place back, whether they commit, fail or are refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from engine.errors import NotFound
from integrations.db.uow import SqlUnitOfWork


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(database_url)
    try:
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()


async def test_workflows_beyond_the_gates_size_wait_and_enter_in_arrival_order(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    gate = asyncio.Semaphore(2)
    entered: list[int] = []
    inside = most_inside = 0

    async def workflow(n: int) -> None:
        nonlocal inside, most_inside
        async with SqlUnitOfWork(sessions, gate=gate) as uow:
            entered.append(n)
            inside += 1
            most_inside = max(most_inside, inside)
            await uow.patients.get(0)
            await uow.commit()
            inside -= 1

    await asyncio.gather(*(workflow(n) for n in range(6)))

    assert most_inside == 2
    assert entered == [0, 1, 2, 3, 4, 5]


async def test_a_workflow_that_fails_gives_its_place_back(sessions: async_sessionmaker[AsyncSession]) -> None:
    gate = asyncio.Semaphore(1)

    async def refused() -> None:
        async with SqlUnitOfWork(sessions, gate=gate) as uow:
            await uow.patients.get(0)
            raise NotFound("patient")

    with pytest.raises(NotFound):
        await refused()

    async with asyncio.timeout(5), SqlUnitOfWork(sessions, gate=gate) as uow:
        assert await uow.patients.get(0) is None
        await uow.commit()
    assert not gate.locked()
