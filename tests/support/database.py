"""A real PostgreSQL for tests: connection arguments and throwaway databases migrated to head.

The role split holds in tests as in production: the migrations run as an owner role, and the app
under test logs in as an application role that owns nothing (integrations/db/roles.py). Roles are
cluster-wide, so each test database has roles named after it, dropped with it."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import asyncpg
from sqlalchemy.engine import make_url

from integrations.db.migrate import upgrade
from integrations.db.roles import DatabaseRoles


def asyncpg_dsn(url: str) -> dict[str, object]:
    """asyncpg.connect() keyword arguments for a SQLAlchemy URL (host may be a socket directory)."""
    u = make_url(url)
    return {
        "user": u.username,
        "password": u.password,
        "host": u.query.get("host") or u.host,
        "port": int(u.query.get("port") or u.port or 5432),
        "database": u.database,
    }


async def admin(url: str, statement: str) -> None:
    """Run one statement on its own connection (CREATE/DROP DATABASE cannot run in a transaction)."""
    conn = await asyncpg.connect(**asyncpg_dsn(url))  # type: ignore[arg-type]
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


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
    asyncio.run(admin(server_url, f'CREATE DATABASE "{name}"'))
    # A throwaway database need not wait for each commit's WAL flush (the durability tests run on a
    # server of their own, RestartablePostgres, with the default): ~7 % off an API module's time.
    asyncio.run(admin(server_url, f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    roles = roles_of(url)
    try:
        upgrade(url, roles=roles)
        yield url
    finally:
        asyncio.run(admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        asyncio.run(admin(server_url, f'DROP ROLE IF EXISTS "{roles.app}", "{roles.owner}"'))


@asynccontextmanager
async def audit_refuses(db: asyncpg.Connection, condition: str) -> AsyncIterator[None]:
    """A test-only trigger that makes audit inserts matching ``condition`` fail, then is dropped."""
    name = f"test_refuse_{secrets.token_hex(4)}"
    await db.execute(
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN RAISE EXCEPTION 'audit store refuses (test)'; END; $$"
    )
    await db.execute(
        f"CREATE TRIGGER {name} BEFORE INSERT ON audit_events FOR EACH ROW WHEN ({condition})"
        f" EXECUTE FUNCTION {name}()"
    )
    try:
        yield
    finally:
        await db.execute(f"DROP TRIGGER {name} ON audit_events")
        await db.execute(f"DROP FUNCTION {name}()")


async def waiting_on_a_lock(db: asyncpg.Connection, statement: str = "") -> bool:
    """Whether a statement of this database starting so (as the app's SQLAlchemy renders it; any
    statement by default) waits on a lock now."""
    return bool(
        await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE $1",
            statement + "%",
        )
    )


@asynccontextmanager
async def table_held(pool: asyncpg.Pool, table: str) -> AsyncIterator[None]:
    """``table`` locked in SHARE mode while the block runs (readers pass, writers wait), by a
    transaction of its own rolled back at the end: a test stops a workflow at its next write there."""
    async with pool.acquire() as blocker:
        holding = blocker.transaction()
        await holding.start()
        try:
            await blocker.execute(f"LOCK TABLE {table} IN SHARE MODE")
            yield
        finally:
            await holding.rollback()
