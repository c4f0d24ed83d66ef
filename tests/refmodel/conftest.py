"""The reference model's app. Its figures are printed by tests/conftest.py, which gathers them from
every xdist worker (a controller never loads this conftest)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.app import create_app
from handlers.settings import Settings


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient[Any, Any]:
    """The whole app, once per test (each scenario makes fresh data in it)."""
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]
