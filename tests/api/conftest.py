"""API test fixtures: the real app (real PostgreSQL, the emulator over real HTTP), built once per test
module and shared by its tests, each of which makes its own data (organizations, people, patients).

A test that needs an app of its own (other settings, restarts, two instances) builds one with
``aiohttp_client(create_app(...))`` as before. While it runs, the module's shared app is stopped
(and started again for the next test that asks for ``api``): otherwise the shared app's outbox relay
and webhook processor would take work the test's own app was meant to do. The helpers live in
``tests/support``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from handlers.app import create_app
from handlers.keys import emulator_key, twilio_emulator_key
from handlers.settings import Settings

# Older import path, for tests written before tests/support existed: import from tests.support.api.
from tests.support.api import PASSWORD, Api, Person, ServedTestServer, new_request_id
from tests.support.fakes import ShiftedClock

__all__ = ["PASSWORD", "Api", "Person", "new_request_id"]


#: How long stopping a module's shared app may take (its relay, listener and pools close in seconds).
STOP_WITHIN = 60.0


class SharedApp:
    """The module's app: started when a test first asks for it, stopped for tests with apps of their own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: The app's clock: real time, which a test may move forward (each test starts on real time).
        self.clock = ShiftedClock()
        self.api: Api | None = None
        self.builds = 0

    async def started(self) -> Api:
        if self.api is None:
            client: TestClient[Any, Any] = TestClient(
                ServedTestServer(create_app(self.settings, clock=self.clock))
            )
            await client.start_server()
            self.api = Api(client)
            self.builds += 1
        return self.api

    async def stop(self) -> None:
        if self.api is not None:
            api, self.api = self.api, None
            # A shutdown that never finishes would hang the whole run (seen once in CI, not
            # reproduced): fail this test loudly instead.
            try:
                await asyncio.wait_for(api.client.close(), STOP_WITHIN)
            except TimeoutError:
                raise AssertionError(
                    f"the module's shared app did not shut down within {STOP_WITHIN:.0f} s"
                ) from None


#: The shared app of each test module that has one, by module name.
_shared: dict[str, SharedApp] = {}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def module_api(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[SharedApp]:
    """The whole app on a test server, for the test module; stopped after it."""
    shared = _shared[request.module.__name__] = SharedApp(settings)
    try:
        yield shared
    finally:
        del _shared[request.module.__name__]
        await shared.stop()


def _fresh_emulators(api: Api, settings: Settings) -> None:
    """What one test did to the emulators does not reach the next: no faults, no recorded requests
    or texts, webhooks aimed where a freshly built app aims them."""
    base = settings.webhook_base_url()
    emulator = api.app.get(emulator_key)
    if emulator is not None:
        state = emulator.state
        state.faults.clear()
        state.received.clear()
        state.webhook_deliveries.clear()
        state.notifications.clear()
        emulator.set_webhook_urls(f"{base}/api/webhooks/sendbird")
    carrier = api.app.get(twilio_emulator_key)
    if carrier is not None:
        texts = carrier.state
        texts.faults.clear()
        texts.sent.clear()
        texts.auto_replies.clear()
        texts.received.clear()
        texts.webhooks.clear()
        carrier.set_webhook_url(f"{base}/api/webhooks/twilio")


@pytest.fixture
async def api(module_api: SharedApp, settings: Settings) -> Api:
    """The module's app, with the emulator as a fresh app would have it; the test brings its own data.

    The refused-token window starts afresh too (the summaries of earlier tests' refusals are written
    now), so a test's first refusal is the first of its window, as on a freshly built app; and the
    app's clock is on the real time again."""
    api = await module_api.started()
    module_api.clock.reset()
    _fresh_emulators(api, settings)
    await api.flush_rejections()
    return api


@pytest.fixture
def clock(module_api: SharedApp) -> ShiftedClock:
    """The clock of the module's app (``api``): a test moves it instead of waiting for time to pass."""
    return module_api.clock


@pytest.fixture
async def aiohttp_client(aiohttp_client: Any, request: pytest.FixtureRequest) -> Any:
    """pytest-aiohttp's client factory, with the module's shared app stopped first (see above)."""
    shared = _shared.get(request.module.__name__)
    if shared is not None and "api" not in request.fixturenames:
        await shared.stop()
    return aiohttp_client
