"""Shared fixtures: a real PostgreSQL (DATABASE_URL, else an embedded throwaway server) with a fresh
database per test session, migrated by Alembic exactly as ``caremsg migrate`` does it.

The role split holds in tests as in production: the migrations run as an owner role, and the app
under test logs in as an application role that owns nothing (integrations/db/roles.py). Roles are
cluster-wide, so each test database has roles named after it, dropped with it. ``database_url``
(and the ``db`` connection) stay the server's administrator, for setting up and asserting."""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from handlers.settings import Settings, load_settings
from integrations.db.migrate import upgrade
from integrations.db.roles import DatabaseRoles


def _asyncpg_dsn(url: str) -> dict[str, object]:
    u = make_url(url)
    return {
        "user": u.username,
        "password": u.password,
        "host": u.query.get("host") or u.host,
        "port": int(u.query.get("port") or u.port or 5432),
        "database": u.database,
    }


async def _admin(url: str, statement: str) -> None:
    conn = await asyncpg.connect(**_asyncpg_dsn(url))  # type: ignore[arg-type]
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


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


def roles_of(database_url: str) -> DatabaseRoles:
    """The owner and application roles of a test database (named after it: roles are cluster-wide)."""
    name = str(make_url(database_url).database)
    return DatabaseRoles(owner=f"{name}_owner", app=f"{name}_app", app_password=f"pw-{name}")


def app_url(database_url: str) -> str:
    """``database_url`` logging in as the database's application role."""
    roles = roles_of(database_url)
    u = make_url(database_url).set(username=roles.app, password=roles.app_password)
    return u.render_as_string(hide_password=False)


def database_settings(database_url: str) -> dict[str, str]:
    """The ``[database]`` settings of a service on this test database: the split, as deployed."""
    roles = roles_of(database_url)
    return {
        "url": app_url(database_url),
        "owner_url": database_url,
        "owner_role": roles.owner,
        "app_role": roles.app,
    }


@contextmanager
def fresh_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new database on the server, migrated to head as ``caremsg migrate`` does (roles created,
    migrations as the owner, the application role granted); dropped afterwards, with its roles.
    Yields the administrator's URL to it; :func:`app_url` is the application role's."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    roles = roles_of(url)
    try:
        upgrade(url, roles=roles)
        yield url
    finally:
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        asyncio.run(_admin(server_url, f'DROP ROLE IF EXISTS "{roles.app}", "{roles.owner}"'))


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A fresh database for this test session, migrated to head; dropped afterwards."""
    with fresh_database(server_url, "caremsg_test") as url:
        yield url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return load_settings(
        env={},
        service={"environment": "development", "log_format": "json"},
        # Hashing strength is not under test; account changes must show at once in tests (the cache
        # has its own test in tests/unit/test_account_cache.py).
        auth={"argon2_time_cost": 1, "argon2_memory_kib": 64, "account_recheck_seconds": 0},
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
    conn = await asyncpg.connect(**_asyncpg_dsn(database_url))  # type: ignore[arg-type]
    try:
        yield conn
    finally:
        await conn.close()
