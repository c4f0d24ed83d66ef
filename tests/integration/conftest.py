"""Integration fixtures: a SQLAlchemy engine on the session's database (the administrator's login,
as ``db`` is), for tests that drive repositories and units of work directly, without an app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from integrations.db.array_codecs import prime_each_connection


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    prime_each_connection(engine)  # as the service's engine: no catalog lookup of array types
    try:
        yield engine
    finally:
        await engine.dispose()
