"""Shared fixtures: a real PostgreSQL (DATABASE_URL, else an embedded throwaway server) with a fresh
database per test session, migrated by Alembic exactly as ``caremsg migrate`` does it.

The role split holds in tests as in production: the migrations run as an owner role, and the app
under test logs in as an application role that owns nothing (integrations/db/roles.py). Roles are
cluster-wide, so each test database has roles named after it, dropped with it. ``database_url``
(and the ``db`` connection) stay the server's administrator, for setting up and asserting.
The helpers behind these fixtures live in tests/support/database.py."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from handlers.settings import Settings, load_settings
from tests.support.database import (
    admin,
    app_url,
    asyncpg_dsn,
    database_settings,
    fresh_database,
    roles_of,
)

# Older names, for tests written before tests/support existed: import from tests.support.database.
_asyncpg_dsn, _admin = asyncpg_dsn, admin
__all__ = ["_admin", "_asyncpg_dsn", "app_url", "database_settings", "fresh_database", "roles_of"]


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A PostgreSQL server: DATABASE_URL when set (CI may point at one), else an embedded one."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    from integrations.db.embedded import start_embedded_postgres

    with tempfile.TemporaryDirectory(prefix="caremsg-pg-") as tmp:
        server = start_embedded_postgres(Path(tmp) / "pgdata", temporary=True)
        try:
            yield server.url
        finally:
            server.stop()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A fresh database for this test session, migrated to head; dropped afterwards."""
    with fresh_database(server_url, "caremsg_test") as url:
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    """The test settings (frozen): session-wide, so an app built once can serve many tests."""
    return app_settings(database_url)


def app_settings(database_url: str) -> Settings:
    """The settings every test app runs with (also for apps a module-scoped fixture serves)."""
    return load_settings(
        env={},
        service={"environment": "development", "log_format": "json"},
        # Hashing strength is not under test; account changes must show at once in tests (the cache
        # has its own test in tests/unit/test_account_cache.py).
        # Every test logs in from 127.0.0.1 into one database per session: the address back-off and
        # the rate limits are tested with their own settings (tests/api/test_login_throttle.py,
        # tests/api/test_rate_limits.py), not by the suite's own traffic.
        auth={
            "argon2_time_cost": 1,
            "argon2_memory_kib": 64,
            "account_recheck_seconds": 0,
            "login_address_free_failures": 100_000,
        },
        ratelimit={
            "per_address_per_second": 1e6,
            "per_address_burst": 1_000_000,
            "per_token_per_second": 1e6,
            "per_token_burst": 1_000_000,
        },
        database={**database_settings(database_url), "pool_size": 5, "max_overflow": 5},
        sendbird={
            "app_id": "",
            "api_token": "",
            "timeout_seconds": 2.0,
            "write_per_second": 1000,
            "get_per_second": 1000,
        },
        outbox={"poll_interval_seconds": 0.05, "base_backoff_seconds": 0.05, "max_backoff_seconds": 0.5},
        messaging={"sms_per_second": 1000},
    )


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the test database, for assertions on what was stored."""
    conn = await asyncpg.connect(**asyncpg_dsn(database_url))  # type: ignore[arg-type]
    try:
        yield conn
    finally:
        await conn.close()
