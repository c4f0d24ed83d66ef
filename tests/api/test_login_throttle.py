"""Login throttling over HTTP: exponential back-off per account and per source address, lockout,
an admin's unlock. The counts are rows in PostgreSQL (shared by every worker); waits are not slept
through: a test moves a back-off's end into the past in the database instead."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from handlers.app import create_app
from handlers.settings import Settings
from tests.api.conftest import PASSWORD, Api, Person, SharedApp, new_request_id

LOGIN = "/api/auth/login"
WRONG = "not-the-password-at-all"
ADDRESS_KEY = "address:127.0.0.1"


def _throttled(settings: Settings, **auth: Any) -> Settings:
    values = {
        "login_account_free_failures": 2,
        "login_backoff_base_seconds": 30.0,
        "login_backoff_max_seconds": 120.0,
        "lockout_failures": 5,
        **auth,
    }
    return settings.model_copy(update={"auth": settings.auth.model_copy(update=values)})


@pytest.fixture
async def clean_address(db: asyncpg.Connection) -> AsyncIterator[None]:
    """Every test logs in from 127.0.0.1: its address count must not outlive the test."""
    await db.execute("DELETE FROM login_throttles WHERE key = $1", ADDRESS_KEY)
    yield
    await db.execute("DELETE FROM login_throttles WHERE key = $1", ADDRESS_KEY)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def strict_app(settings: Settings) -> AsyncIterator[SharedApp]:
    """The service with a tight account throttle, started once for the module's tests: what a test
    throttles is its own account (a new one each time) and the address, which ``clean_address``
    clears around every test; the counts live in PostgreSQL, not in the app."""
    shared = SharedApp(_throttled(settings))
    try:
        yield shared
    finally:
        await shared.stop()


@pytest.fixture
async def strict(strict_app: SharedApp, clean_address: None) -> Api:
    """The service with a tight account throttle: 2 free failures, then 30 s doubling, lock at 5."""
    return await strict_app.started()


async def _login(api: Api, email: str, password: str, **kw: Any) -> tuple[int, dict[str, str], Any]:
    return await api.send("POST", LOGIN, json={"email": email, "password": password}, **kw)


async def _expire_backoff(db: asyncpg.Connection) -> None:
    """As if the wait had passed (no sleeping in tests)."""
    await db.execute("UPDATE login_throttles SET blocked_until = now() - interval '1 second'")


async def test_failures_past_the_free_ones_earn_a_429_with_retry_after_even_for_the_right_password(
    strict: Api,
) -> None:
    nurse = await strict.person("care_team_member", await strict.organization())
    for _ in range(3):  # two free, the third earns 30 s
        status, _, _ = await _login(strict, nurse.email, WRONG)
        assert status == 401

    status, headers, body = await _login(strict, nurse.email, PASSWORD)

    assert status == 429, body
    assert headers["Content-Type"].startswith("application/problem+json")
    assert body["code"] == "too_many_requests"
    assert 25 <= int(headers["Retry-After"]) <= 30
    assert nurse.email not in str(body)


async def test_the_wait_doubles_with_each_further_failure(strict: Api, db: asyncpg.Connection) -> None:
    email = f"nobody.{secrets.token_hex(4)}@example.org"
    waits = []
    for _ in range(4):
        await _expire_backoff(db)
        status, _, _ = await _login(strict, email, WRONG)
        assert status == 401
        waits.append(
            await db.fetchval(
                "SELECT extract(epoch FROM blocked_until - last_failure_at) FROM login_throttles"
                " WHERE key LIKE 'account:%' ORDER BY last_failure_at DESC LIMIT 1"
            )
        )
    assert [None if w is None else round(float(w)) for w in waits] == [None, None, 30, 60]


async def test_an_unknown_email_backs_off_exactly_like_a_known_one(strict: Api) -> None:
    nurse = await strict.person("care_team_member", await strict.organization())
    unknown = f"nobody.{secrets.token_hex(4)}@example.org"
    answers: dict[str, list[tuple[int, Any]]] = {}
    for email in (nurse.email, unknown):
        answers[email] = []
        for _ in range(4):
            status, _, body = await _login(strict, email, WRONG)
            answers[email].append((status, {k: v for k, v in body.items() if k != "requestId"}))
    assert answers[nurse.email] == answers[unknown]
    assert [status for status, _ in answers[unknown]] == [401, 401, 401, 429]


async def test_a_successful_login_forgets_the_accounts_failures(strict: Api, db: asyncpg.Connection) -> None:
    nurse = await strict.person("care_team_member", await strict.organization())
    for _ in range(2):
        await _login(strict, nurse.email, WRONG)
    status, _, _ = await _login(strict, nurse.email, PASSWORD)
    assert status == 200
    status, _, _ = await _login(strict, nurse.email, WRONG)
    assert status == 401
    status, _, _ = await _login(strict, nurse.email, WRONG)
    assert status == 401  # counting started again: still within the free failures


async def test_the_failure_that_earns_a_backoff_is_audited_with_it(
    strict: Api, db: asyncpg.Connection
) -> None:
    nurse = await strict.person("care_team_member", await strict.organization())
    for _ in range(2):
        await _login(strict, nurse.email, WRONG)
    rid = new_request_id()
    await _login(strict, nurse.email, WRONG, headers={"X-Request-ID": rid})
    row = await db.fetchrow("SELECT * FROM audit_events WHERE request_id = $1", rid)
    assert (row["workflow"], row["outcome"], row["reason"], row["actor_id"]) == (
        "auth.login",
        "denied",
        "bad_password",
        nurse.id,
    )
    assert '"account_backoff_seconds": 30' in row["details"]


async def _lock(api: Api, db: asyncpg.Connection, email: str) -> None:
    for _ in range(5):
        await _expire_backoff(db)
        status, _, _ = await _login(api, email, WRONG)
        assert status == 401


async def test_an_account_locks_after_the_configured_failures_until_an_admin_unlocks_it(
    strict: Api, db: asyncpg.Connection
) -> None:
    org = await strict.organization()
    admin = await strict.person("admin", org)
    nurse = await strict.person("care_team_member", org)
    await _lock(strict, db, nurse.email)
    await _expire_backoff(db)

    status, headers, body = await _login(strict, nurse.email, PASSWORD)
    assert status == 429, body
    assert body["code"] == "account_locked"
    assert "Retry-After" not in headers  # waiting does not help: only an unlock does

    rid = new_request_id()
    status, unlocked = await strict.call(
        "POST", f"/api/users/{nurse.id}/unlock", admin, headers={"X-Request-ID": rid}
    )
    assert status == 200, unlocked
    status, _, _ = await _login(strict, nurse.email, PASSWORD)
    assert status == 200
    row = await db.fetchrow(
        "SELECT * FROM audit_events WHERE request_id = $1 AND workflow = 'user.unlock'", rid
    )
    assert (row["outcome"], row["actor_id"], row["resource_id"]) == ("success", admin.id, str(nurse.id))
    assert '"was_throttled": true' in row["details"]


async def test_an_unknown_email_locks_like_a_known_one(strict: Api, db: asyncpg.Connection) -> None:
    unknown = f"nobody.{secrets.token_hex(4)}@example.org"
    await _lock(strict, db, unknown)
    await _expire_backoff(db)
    status, _, body = await _login(strict, unknown, WRONG)
    assert (status, body["code"]) == (429, "account_locked")


async def test_a_source_address_backs_off_across_accounts(
    aiohttp_client: Any, settings: Settings, clean_address: None
) -> None:
    app = create_app(_throttled(settings, login_address_free_failures=3, login_account_free_failures=100))
    api = Api(await aiohttp_client(app))
    nurse: Person = await api.person("care_team_member", await api.organization())
    for _ in range(4):  # four different emails: no account is throttled, the address is
        status, _, _ = await _login(api, f"nobody.{secrets.token_hex(4)}@example.org", WRONG)
        assert status == 401

    status, headers, body = await _login(api, nurse.email, PASSWORD)
    assert (status, body["code"]) == (429, "too_many_requests")
    assert int(headers["Retry-After"]) >= 25
