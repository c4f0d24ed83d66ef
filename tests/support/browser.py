"""The console's browser tests' helpers: Debian's Chromium (/usr/bin/chromium, which ``./run.sh test``
installs where it can; ``playwright install`` is never used, it would download a browser of its own),
the URL of a console page, and two ways in: the sign-in form, or a session cookie sealed by the
app's own codec (the fixtures that start the browser are in tests/console/conftest.py).

Signing in through the form costs a page load, two fields filled, a post and a redirect followed;
a sealed cookie costs nothing but the request for the first page. The tests about signing in (the
form, the keyboard, the roles kept out, the forged post that must not sign out) go through the
form; the others open their first page with a cookie, which is what the form would have left: the
same name, path and flags, the same codec, and an access token as the login workflow issues it
(``Person.token``: the app's token service, the login's claims).

``CAREMSG_SCREENSHOTS=DIR`` saves the pages the tests visit there (the README's come from
``CAREMSG_SCREENSHOTS=docs/screenshots``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from handlers.console import cookie_flags
from handlers.console.session import SESSION_COOKIE
from handlers.keys import clock_key, console_codec_key, settings_key
from tests.support.api import PASSWORD, Api, Person

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PLAYWRIGHT_MISSING = "Playwright is not installed (pip install -e '.[dev]')"
CHROMIUM_MISSING = f"no Chromium at {CHROMIUM}: ./run.sh test installs it when run as root with apt-get"

#: The browser modules' mark: without Chromium they skip and say why (so does the ``browser_page``
#: fixture, without Playwright).
requires_chromium = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=CHROMIUM_MISSING)


def url(api: Api, path: str) -> str:
    return str(api.client.make_url(path))


async def sign_in(page: Any, api: Api, who: Person) -> None:
    """Sign in through the console's form, as a person would."""
    await page.goto(url(api, "/console/login"))
    await page.get_by_label("Email").fill(who.email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_load_state()


async def open_signed_in(page: Any, api: Api, who: Person, path: str = "/console/") -> None:
    """Open ``path`` signed in as ``who`` with the session cookie the sign-in form would have set,
    sealed now on the app's clock."""
    app = api.app
    sealed = app[console_codec_key].seal(who.token, app[clock_key]().timestamp())
    flags = cookie_flags(app[settings_key].service.environment)
    await page.context.add_cookies(  # in place of the cookie of whoever was signed in
        [
            {
                "name": SESSION_COOKIE,
                "value": sealed,
                "domain": api.client.host,
                "path": "/console/",
                "httpOnly": flags["httponly"],
                "secure": flags["secure"],
                "sameSite": flags["samesite"],
            }
        ]
    )
    response = await page.goto(url(api, path))
    assert not page.url.endswith("/console/login"), f"the session cookie of {who.role} was refused"
    assert response is not None
    assert response.ok, (path, response.status)


async def append_line(page: Any, field: Any, line: str) -> None:
    """Add ``line`` at the end of a text area from the keyboard, the way a person pastes a line there.
    (``fill`` would replace the whole text: 0.4-0.8 s for a 14 kB policy file on a busy machine.)"""
    await field.press("Control+End")
    await page.keyboard.insert_text(line)


async def shoot(page: Any, name: str, *, full_page: bool = False) -> None:
    """Save a screenshot of the page when asked to (``CAREMSG_SCREENSHOTS``)."""
    target = os.environ.get("CAREMSG_SCREENSHOTS")
    if target:
        await page.screenshot(path=str(Path(target) / f"{name}.png"), full_page=full_page)
