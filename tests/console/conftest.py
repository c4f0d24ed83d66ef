"""The console's tests: the whole app on a real TCP port (the browser tests drive it with Chromium),
built once per module; each test makes its own organization and people."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from handlers.app import create_app
from handlers.settings import Settings
from tests.support.api import Api

#: The session's idle timeout in these tests: short, so expiry is tested by waiting for it.
IDLE_SECONDS = 3


def console_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"console": settings.console.model_copy(update={"idle_timeout_seconds": IDLE_SECONDS})}
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(settings: Settings) -> AsyncIterator[Api]:
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(console_settings(settings))))
    await client.start_server()
    try:
        yield Api(client)
    finally:
        await client.close()
