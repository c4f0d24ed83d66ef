"""The reference model's app. Its figures are printed by tests/conftest.py, which gathers them from
every xdist worker (a controller never loads this conftest)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from aiohttp.test_utils import TestClient

from handlers.app import create_app
from handlers.settings import Settings
from tests.support.api import ServedTestServer


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    """The whole app, once per test module: every scenario, showcase and worked case makes fresh
    data in it (new organizations, people, patients and phone numbers), as the examples of the
    model's own test always did in one app. A start per test was 32 app starts for nothing, each
    ~11 new PostgreSQL backends."""
    async with TestClient(ServedTestServer(create_app(settings))) as client:
        yield client
