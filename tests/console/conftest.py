"""The console's tests: the whole app on a real TCP port (the browser tests drive it with Chromium),
built once per module; each test makes its own organization and people."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from handlers.app import create_app
from handlers.settings import Settings
from tests.support.api import Api
from tests.support.fakes import ShiftedClock

#: The session's idle timeout in these tests. The idle tests move the app's clock past it, so it need
#: not be short; it must outlast the gaps between a busy machine's requests (a page that refreshes
#: itself every 2 s was sent to sign-in when 3 s passed between two refreshes).
IDLE_SECONDS = 120


def console_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"console": settings.console.model_copy(update={"idle_timeout_seconds": IDLE_SECONDS})}
    )


@pytest.fixture(scope="module")
def clock() -> ShiftedClock:
    """The clock of the module's app: real time, moved forward by the tests of the idle timeout."""
    return ShiftedClock()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(settings: Settings, clock: ShiftedClock) -> AsyncIterator[Api]:
    app = create_app(console_settings(settings), clock=clock)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Api(client)
    finally:
        await client.close()
