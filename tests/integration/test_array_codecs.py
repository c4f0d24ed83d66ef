"""New connections start with the built-in arrays' codecs (integrations/db/array_codecs.py): the
service's connections bind and read ``integer[]``, ``bigint[]``, ``timestamptz[]`` ... without the
catalog lookup asyncpg otherwise makes on every new connection (a recursive query a fresh backend
takes ~6 ms to plan). Each test watches the statements its connection sends, with asyncpg's query
logger, and finds no lookup among them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import text

from integrations.consent_sync import asyncpg_connect_args
from integrations.db import array_codecs
from integrations.db.resources import create_engine
from integrations.db.send_uow import create_send_pool

#: asyncpg's lookup of a type's codec (its introspection query names its CTE so).
LOOKUP = "typeinfo_tree"

ARRAYS = "SELECT $1::integer[], $2::bigint[], $3::double precision[], $4::varchar[], $5::timestamptz[]"
VALUES = ([1, 2], [3], [0.5], ["a"], [datetime(2026, 1, 2, tzinfo=UTC)])


def watch(connection: asyncpg.Connection) -> list[str]:
    sent: list[str] = []
    connection.add_query_logger(lambda record: sent.append(record.query))
    return sent


async def test_a_primed_connection_binds_and_reads_builtin_arrays_without_looking_them_up(
    database_url: str,
) -> None:
    first = await asyncpg.connect(**asyncpg_connect_args(database_url))
    try:
        await array_codecs.prime(first)  # the process's first connection learns the codecs
    finally:
        await first.close()
    connection = await asyncpg.connect(**asyncpg_connect_args(database_url))
    try:
        sent = watch(connection)
        await array_codecs.prime(connection)
        row = await connection.fetchrow(ARRAYS, *VALUES)
        assert tuple(row) == VALUES
        assert not [q for q in sent if LOOKUP in q]
    finally:
        await connection.close()


async def test_an_unprimed_connection_looks_the_arrays_up_which_is_what_priming_saves(
    database_url: str,
) -> None:
    """The other side of the test above: without priming, asyncpg does look them up."""
    connection = await asyncpg.connect(**asyncpg_connect_args(database_url))
    try:
        sent = watch(connection)
        await connection.fetchrow(ARRAYS, *VALUES)
        assert [q for q in sent if LOOKUP in q]
    finally:
        await connection.close()


async def test_the_service_engine_primes_each_new_connection(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1, max_overflow=0, statement_timeout_ms=5000)
    try:
        async with engine.connect() as conn:
            raw: Any = (await conn.get_raw_connection()).driver_connection
            sent = watch(raw)
            got = (await conn.execute(text("SELECT CAST(:ids AS bigint[])"), {"ids": [7, 8]})).scalar()
        assert got == [7, 8]
        assert not [q for q in sent if LOOKUP in q]
    finally:
        await engine.dispose()


async def test_the_send_pool_primes_each_new_connection(database_url: str) -> None:
    pool = await create_send_pool(asyncpg_connect_args(database_url), max_size=1, statement_timeout_ms=5000)
    try:
        connection = await pool.acquire()
        try:
            sent = watch(connection)
            assert await connection.fetchval("SELECT $1::integer[]", [4, 5]) == [4, 5]
            assert not [q for q in sent if LOOKUP in q]
        finally:
            await pool.release(connection)
    finally:
        await pool.close()
