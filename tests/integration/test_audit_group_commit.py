"""Concurrent patient reads' audit records stored by one statement (integrations/db/audit_batch.py),
on the real send pool and PostgreSQL: reads that arrive while a flush is in flight go together in
the next statement, each read returns only once its own record is committed, and a record the
database refuses fails its own read alone, never the others', and is not stored.

A flush is held in flight by holding, in a transaction of the test's own, the lock the audit
insert's trigger takes shared (the sealer's horizon lock, migration 0006): the insert waits until
the test lets it go. Rows inserted by one statement share its transaction id (``xmin``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from engine.audit import AuditEvent
from engine.errors import ServiceUnavailable
from integrations.audit_sealer import AUDIT_WRITE_LOCK
from integrations.consent_sync import asyncpg_connect_args
from integrations.db.audit_batch import AuditGroupCommit
from integrations.db.send_uow import SendPool, create_send_pool
from tests.support.api import new_request_id
from tests.support.database import audit_refuses
from tests.support.polling import eventually


def _read(request_id: str) -> list[AuditEvent]:
    """A patient read's record: its decision, as the workflow records it."""
    return [
        AuditEvent(
            "decision",
            "patient.read",
            "success",
            datetime.now(UTC),
            request_id=request_id,
            resource_type="patient",
            resource_id="7",
            patient_id=7,
            decision="allow",
            details={"facts": ["care_team", "covered"]},
        )
    ]


async def _stored(db: asyncpg.Connection, request_ids: list[str]) -> list[tuple[str, int]]:
    """(request id, inserting transaction) of the stored rows, in id order."""
    rows = await db.fetch(
        "SELECT request_id, xmin::text::bigint AS tx FROM audit_events"
        " WHERE request_id = ANY($1) ORDER BY id",
        request_ids,
    )
    return [(r["request_id"], r["tx"]) for r in rows]


async def _leader_held_then_followers(
    db: asyncpg.Connection, pool: SendPool, batch: AuditGroupCommit, request_ids: list[str]
) -> list[asyncio.Task[None]]:
    """Store the first read while its flush is held in flight, queue the others behind it, check
    none has returned, then let the flush go. Returns the reads' tasks, in the same order."""
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_WRITE_LOCK)
        leader = asyncio.create_task(batch.store(_read(request_ids[0]), await pool.acquire()))

        async def flush_waits_on_the_lock() -> bool:
            return bool(
                await db.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND objid = $1",
                    AUDIT_WRITE_LOCK,
                )
            )

        await eventually(flush_waits_on_the_lock, "the leader's flush to wait on the lock")
        followers = [
            asyncio.create_task(batch.store(_read(request_id), await pool.acquire()))
            for request_id in request_ids[1:]
        ]

        async def all_queued() -> bool:
            return batch.waiting == len(followers)

        await eventually(all_queued, "the followers to queue")
        assert not any(task.done() for task in (leader, *followers)), "no read returns before its commit"
    await asyncio.wait([leader, *followers])
    return [leader, *followers]


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[SendPool]:
    pool = await create_send_pool(asyncpg_connect_args(database_url), max_size=6, statement_timeout_ms=10_000)
    try:
        yield pool
    finally:
        await pool.close()


async def test_reads_arriving_during_a_flush_are_stored_together_by_the_next_statement(
    db: asyncpg.Connection, pool: SendPool
) -> None:
    batch = AuditGroupCommit(pool)
    ids = [new_request_id() for _ in range(4)]

    tasks = await _leader_held_then_followers(db, pool, batch, ids)

    assert [task.exception() for task in tasks] == [None] * 4
    stored = await _stored(db, ids)
    assert [request_id for request_id, _ in stored] == ids, "each read's record, in arrival order"
    leader_tx, *follower_tx = [tx for _, tx in stored]
    assert len(set(follower_tx)) == 1, "the followers share one statement"
    assert leader_tx not in follower_tx
    assert (batch.flushes, batch.reads) == (2, 4)


async def test_a_record_the_database_refuses_fails_its_own_read_and_not_the_others_in_its_flush(
    db: asyncpg.Connection, pool: SendPool
) -> None:
    batch = AuditGroupCommit(pool)
    ids = [new_request_id() for _ in range(4)]
    refused = ids[2]

    async with audit_refuses(db, f"NEW.request_id = '{refused}'"):
        tasks = await _leader_held_then_followers(db, pool, batch, ids)

    errors = [task.exception() for task in tasks]
    assert [type(e) for e in errors] == [type(None), type(None), ServiceUnavailable, type(None)]
    assert [request_id for request_id, _ in await _stored(db, ids)] == [ids[0], ids[1], ids[3]]


async def test_when_a_flush_cannot_be_stored_every_read_in_it_fails_and_nothing_is_stored(
    db: asyncpg.Connection, pool: SendPool
) -> None:
    batch = AuditGroupCommit(pool)
    ids = [new_request_id() for _ in range(4)]

    async with audit_refuses(db, "NEW.workflow = 'patient.read'"):
        tasks = await _leader_held_then_followers(db, pool, batch, ids)

    assert all(isinstance(task.exception(), ServiceUnavailable) for task in tasks)
    assert await _stored(db, ids) == []


async def test_a_flush_gives_its_connection_back_and_a_later_read_flushes_at_once(
    db: asyncpg.Connection, pool: SendPool
) -> None:
    batch = AuditGroupCommit(pool)
    first, second = new_request_id(), new_request_id()

    await batch.store(_read(first), await pool.acquire())
    await batch.store(_read(second), await pool.acquire())

    assert [request_id for request_id, _ in await _stored(db, [first, second])] == [first, second]
    assert (batch.flushes, batch.reads) == (2, 2)
    assert pool.available == 6, "every connection is back in the pool"


async def test_a_read_cancelled_while_queued_is_left_out_of_the_next_statement(
    db: asyncpg.Connection, pool: SendPool
) -> None:
    """Its unit of work then records the events as unfinished; they are not also stored as done."""
    batch = AuditGroupCommit(pool)
    ids = [new_request_id() for _ in range(3)]

    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_WRITE_LOCK)
        leader = asyncio.create_task(batch.store(_read(ids[0]), await pool.acquire()))

        async def flush_in_flight() -> bool:
            return batch.reads == 1

        await eventually(flush_in_flight, "the leader's flush to start")
        cancelled = asyncio.create_task(batch.store(_read(ids[1]), await pool.acquire()))
        follower = asyncio.create_task(batch.store(_read(ids[2]), await pool.acquire()))

        async def both_queued() -> bool:
            return batch.waiting == 2

        await eventually(both_queued, "the followers to queue")
        cancelled.cancel()
        await asyncio.wait([cancelled])
        assert batch.waiting == 1
    await asyncio.gather(leader, follower)

    assert [request_id for request_id, _ in await _stored(db, ids)] == [ids[0], ids[2]]
    assert pool.available == 6
