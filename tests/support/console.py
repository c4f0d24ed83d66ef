"""What the console's tests share: its settings in tests, signing in over plain HTTP, a form's CSRF
token, the audit records a step left, and an app serving its own copy of policies/ (for the tests
that change policy files through the console)."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from engine.services import utc_now
from handlers.app import create_app
from handlers.settings import PROJECT_ROOT, Settings
from tests.support.api import PASSWORD, Api, Person, ServedTestServer

#: The session's idle timeout in these tests. The idle tests move the app's clock past it, so it need
#: not be short; it must outlast the gaps between a busy machine's requests (a page that refreshes
#: itself every 2 s was sent to sign-in when 3 s passed between two refreshes).
IDLE_SECONDS = 120
#: A form's CSRF token, as the console's pages carry it.
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def console_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"console": settings.console.model_copy(update={"idle_timeout_seconds": IDLE_SECONDS})}
    )


async def login_csrf(api: Api) -> str:
    response = await api.client.get("/console/login")
    assert response.status == 200
    match = CSRF.search(await response.text())
    assert match is not None
    return match.group(1)


async def sign_in(api: Api, who: Person) -> ClientResponse:
    api.client.session.cookie_jar.clear()
    token = await login_csrf(api)
    return await api.client.post(
        "/console/login",
        data={"csrf_token": token, "email": who.email, "password": PASSWORD},
        allow_redirects=False,
    )


async def audit_records(api: Api, who: Person, **filters: Any) -> list[dict[str, Any]]:
    status, body = await api.call("GET", "/api/audit-events", who, params=filters)
    assert status == 200, body
    return list(body["items"])


def copy_of_policies(target: Path) -> Path:
    """A copy of the project's policies/ under ``target``, for an app whose policy a test edits."""
    copied = target / "policies"
    shutil.copytree(PROJECT_ROOT / "policies", copied)
    return copied


@asynccontextmanager
async def console_app(
    settings: Settings, *, clock: Callable[[], datetime] = utc_now, policy_dir: Path | None = None
) -> AsyncIterator[Api]:
    """The console's app (its test settings, ``clock``), served as ``caremsg serve`` serves; with
    ``policy_dir``, reading its policy from there (polled hourly: edits reach it by the console's
    own reload)."""
    configured = console_settings(settings)
    if policy_dir is not None:
        policy = settings.policy.model_copy(
            update={"directory": str(policy_dir), "watch_interval_seconds": 3600}
        )
        configured = configured.model_copy(update={"policy": policy})
    async with TestClient(ServedTestServer(create_app(configured, clock=clock))) as client:
        yield Api(client)
