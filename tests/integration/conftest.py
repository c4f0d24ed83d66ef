"""Integration fixtures: a SQLAlchemy engine on the session's database (the administrator's login,
as ``db`` is), for tests that drive repositories and units of work directly, without an app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()
