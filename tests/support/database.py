"""A real PostgreSQL for tests: connection arguments and throwaway databases migrated to head."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import asyncpg
from sqlalchemy.engine import make_url

from integrations.db.migrate import upgrade


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


@contextmanager
def fresh_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new database on the server, migrated to head as ``caremsg migrate`` does; dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    asyncio.run(admin(server_url, f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        asyncio.run(admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


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
