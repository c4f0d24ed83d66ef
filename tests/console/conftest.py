"""The console's tests: the whole app on a real TCP port (the browser tests drive it with Chromium),
built once per module; each test makes its own organization and people.

The browser tests share one Chromium per test session (starting Playwright and Chromium costs ~1 s)
and one page, reset before each test to what a new page in a new context would be for the console:
no cookies (the only state it keeps in a browser: it runs no script, so no storage and no service
worker), screen media, the default size, nothing loaded. A new context and page per test cost each
test a renderer process: ~0.4 s of CPU and ~0.9 s on a busy 2-core machine."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from handlers.settings import Settings
from tests.support.api import Api
from tests.support.browser import CHROMIUM, CHROMIUM_MISSING, FLAGS, PLAYWRIGHT_MISSING
from tests.support.console import console_app
from tests.support.fakes import ShiftedClock


@pytest.fixture(scope="module")
def clock() -> ShiftedClock:
    """The clock of the module's app: real time, moved forward by the tests of the idle timeout."""
    return ShiftedClock()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(settings: Settings, clock: ShiftedClock) -> AsyncIterator[Api]:
    async with console_app(settings, clock=clock) as api:
        yield api


#: The page's size unless a test sets another: Playwright's default for a new page.
VIEWPORT = {"width": 1280, "height": 720}


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser_page() -> AsyncIterator[Any]:
    """One Chromium and one page for the session's browser tests; they skip, saying why, without
    Playwright or without Chromium."""
    playwright_api = pytest.importorskip("playwright.async_api", reason=PLAYWRIGHT_MISSING)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(CHROMIUM_MISSING)
    async with playwright_api.async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            context = await chromium.new_context(viewport=VIEWPORT)
            yield await context.new_page()
        finally:
            await chromium.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser_page: Any) -> Any:
    """The session's page as a new one would be: blank, signed in as no one, screen media, the
    default size (checked, so a test never inherits the print media or the size of the one before).
    A page of its own would cost each test a renderer process to start: ~0.4 s of CPU."""
    page = browser_page
    if page.is_closed():  # a test closed it: open another in the same context
        page = await page.context.new_page()
    await page.goto("about:blank")  # also stops a page that refreshes itself
    await page.context.clear_cookies()
    await page.emulate_media(media="null")
    await page.set_viewport_size(VIEWPORT)
    as_new = "!matchMedia('print').matches && innerWidth === 1280 && innerHeight === 720"
    assert await page.evaluate(as_new), "the browser tests' page was not reset"
    return page
