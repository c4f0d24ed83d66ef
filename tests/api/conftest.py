"""API test fixtures: the real app (real PostgreSQL, the emulator over real HTTP), built once per test
module and shared by its tests, each of which makes its own data (organizations, people, patients).

A test that needs an app of its own (other settings, restarts, outages, two instances) builds one
with ``aiohttp_client(create_app(...))`` as before. The helpers live in ``tests/support``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from handlers.app import create_app, emulator_key
from handlers.settings import Settings

# Older import path, for tests written before tests/support existed: import from tests.support.api.
from tests.support.api import PASSWORD, Api, Person, new_request_id

__all__ = ["PASSWORD", "Api", "Person", "new_request_id"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def module_api(settings: Settings) -> AsyncIterator[Api]:
    """The whole app on a test server, started once for the test module and stopped after it."""
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        yield Api(client)
    finally:
        await client.close()


def _fresh_emulator(api: Api, settings: Settings) -> None:
    """What one test did to the emulator does not reach the next: no faults, no
    recorded requests or texts, webhooks aimed where a freshly built app aims them."""
    emulator = api.app.get(emulator_key)
    if emulator is None:
        return
    state = emulator.state
    state.faults.clear()
    state.received.clear()
    state.webhook_deliveries.clear()
    state.notifications.clear()
    base = settings.webhook_base_url()
    emulator.set_webhook_urls(f"{base}/api/webhooks/sendbird", f"{base}/api/webhooks/sms")


@pytest.fixture
def api(module_api: Api, settings: Settings) -> Api:
    """The module's app, with the emulator as a fresh app would have it; the test brings its own data."""
    _fresh_emulator(module_api, settings)
    return module_api
