"""Self-registration over HTTP at a pace: a source past its free registrations waits (429 with
Retry-After, before the password is even checked), and an account's owner hears of attempts on
their address once per window however many are made.

Each test registers from addresses of its own, which the app believes because the test client is
its trusted proxy (``service.trusted_proxies``); the counts are rows in PostgreSQL, removed after.
"""

from __future__ import annotations

import ipaddress
import random
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from handlers.settings import Settings
from tests.api.conftest import PASSWORD, Api, SharedApp

REGISTER = "/api/auth/register"
FREE = 2


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def paced_app(settings: Settings) -> AsyncIterator[SharedApp]:
    service = settings.service.model_copy(update={"trusted_proxies": (ipaddress.ip_network("127.0.0.1/32"),)})
    auth = settings.auth.model_copy(update={"registration_source_free": FREE})
    shared = SharedApp(settings.model_copy(update={"service": service, "auth": auth}))
    try:
        yield shared
    finally:
        await shared.stop()


@pytest.fixture
async def paced(paced_app: SharedApp) -> Api:
    return await paced_app.started()


@pytest.fixture
async def sources(db: asyncpg.Connection) -> AsyncIterator[list[str]]:
    addresses = [f"198.51.100.{n}" for n in random.sample(range(1, 255), 4)]
    yield addresses
    await db.execute(
        "DELETE FROM login_throttles WHERE key = ANY($1) OR key LIKE 'notice:%'",
        [f"registration:{a}" for a in addresses],
    )


def _registration(email: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "email": email or f"new.{secrets.token_hex(4)}@example.org",
        "password": PASSWORD,
        "firstName": "New",
        "lastName": "Nurse",
        "role": "care_team_member",
        **fields,
    }


async def _register(api: Api, source: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    return await api.send("POST", REGISTER, json=body, headers={"X-Forwarded-For": source})


async def test_a_source_past_its_free_registrations_gets_429_with_retry_after(
    paced: Api, sources: list[str]
) -> None:
    busy, other = sources[:2]
    for _ in range(FREE + 1):  # the free ones, then the one that earns the wait
        status, _, _ = await _register(paced, busy, _registration())
        assert status == 202

    # Refused before the password's strength is estimated and it is hashed (the costly part): a
    # guessable one gets the same 429, not the 422 it would get otherwise.
    status, headers, body = await _register(paced, busy, _registration(password="a" * 20))

    assert status == 429
    assert headers["Content-Type"].startswith("application/problem+json")
    assert body["code"] == "too_many_requests"
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert (await _register(paced, other, _registration()))[0] == 202  # another source is not held


async def test_an_owner_hears_of_attempts_on_their_address_once_however_many_sources_try(
    paced: Api, sources: list[str], db: asyncpg.Connection
) -> None:
    email = f"taken.{secrets.token_hex(4)}@example.org"
    assert (await _register(paced, sources[0], _registration(email)))[0] == 202
    owner = await db.fetchval("SELECT id FROM users WHERE email = $1", email)

    with capture_logs() as logs:
        answers = [await _register(paced, source, _registration(email)) for source in sources[1:]]

    assert [status for status, _, _ in answers] == [202] * 3  # answered as a new address would be
    notices = [e for e in logs if e["event"] == "account.notice"]
    assert [(e["notice"], e["user_id"]) for e in notices] == [("registration_attempted", owner)]
