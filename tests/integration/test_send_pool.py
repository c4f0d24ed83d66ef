"""The send path's pool serves sends in arrival order (integrations/db/send_uow.py, SendPool).

asyncpg's own pool lets a task that asks just as a connection comes back take it ahead of the
waiters, and a waiter that loses that race queues again at the back: under load a few sends wait
many turns (the p99 of bench/send_message.py). These run on the real pool and PostgreSQL.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from integrations.consent_sync import asyncpg_connect_args
from integrations.db.send_uow import create_send_pool
from tests.support.polling import eventually


@pytest.mark.parametrize("turns", range(6), ids=lambda n: f"newcomer_after_{n}_turns")
async def test_a_connection_given_back_goes_to_the_longest_waiting_send_not_to_a_newcomer(
    database_url: str, turns: int
) -> None:
    """A newcomer asks while the connection is on its way back. Which turn of the event loop lets
    it in ahead of the woken waiter depends on the pool's internals (with asyncpg 0.32's own pool:
    one turn, and the first waiter then ends up last), so every nearby turn is tried."""
    pool = await create_send_pool(asyncpg_connect_args(database_url), max_size=1, statement_timeout_ms=5000)
    served: list[str] = []

    async def send(name: str, turns: int = 0) -> None:
        for _ in range(turns):
            await asyncio.sleep(0)
        connection = await pool.acquire()
        served.append(name)
        await connection.fetchval("SELECT 1")
        await pool.release(connection)

    try:
        held = await pool.acquire()
        waiters = [asyncio.create_task(send(f"waiter {i}")) for i in range(3)]
        await asyncio.sleep(0.05)  # all three are queued behind the held connection
        release = asyncio.create_task(pool.release(held))
        newcomer = asyncio.create_task(send("newcomer", turns))
        await asyncio.gather(release, *waiters, newcomer)
    finally:
        await pool.close()

    assert served == ["waiter 0", "waiter 1", "waiter 2", "newcomer"]


async def test_a_send_that_gives_up_waiting_leaves_its_turn_to_the_next(database_url: str) -> None:
    pool = await create_send_pool(asyncpg_connect_args(database_url), max_size=1, statement_timeout_ms=5000)
    try:
        held = await pool.acquire()
        impatient = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0.05)
        impatient.cancel()
        await asyncio.sleep(0)
        await pool.release(held)
        connection = await asyncio.wait_for(pool.acquire(), timeout=5)
        assert await connection.fetchval("SELECT 1") == 1
        await pool.release(connection)
    finally:
        await pool.close()


async def test_a_connection_given_back_inside_a_transaction_is_not_handed_on_in_it(database_url: str) -> None:
    pool = await create_send_pool(asyncpg_connect_args(database_url), max_size=1, statement_timeout_ms=5000)
    try:
        connection = await pool.acquire()
        await connection.execute("BEGIN")
        await pool.release(connection, reuse=True)

        connection = await pool.acquire()
        assert not connection.is_in_transaction()
        await pool.release(connection, reuse=True)
    finally:
        await pool.close()


async def test_a_kept_connection_whose_backend_ended_is_replaced_not_handed_on(
    database_url: str, db: asyncpg.Connection
) -> None:
    """A kept connection dies with its backend (a restart, an administrator): the next holder gets
    a working one, and the pool admits as many holders as before."""
    pool = await create_send_pool(asyncpg_connect_args(database_url), max_size=1, statement_timeout_ms=5000)
    try:
        connection = await pool.acquire()
        backend = await connection.fetchval("SELECT pg_backend_pid()")
        await pool.release(connection, reuse=True)
        assert await db.fetchval("SELECT pg_terminate_backend($1)", backend)

        async def closed() -> bool:
            try:
                return bool(connection.is_closed())
            except asyncpg.InterfaceError:  # asyncpg let go of it once it closed
                return True

        await eventually(closed, "the kept connection to see its backend end")
        connection = await pool.acquire()
        assert await connection.fetchval("SELECT pg_backend_pid()") != backend
        await pool.release(connection, reuse=True)
        assert pool.available == 1
    finally:
        await pool.close()
