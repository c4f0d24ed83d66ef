"""The hash chain against an attacker with database access: each kind of tampering (edit, delete,
insert, reorder) is done directly in PostgreSQL, with the append-only triggers switched off the way
a superuser could, and ``caremsg audit verify`` must catch it and name the record.

Every test gets its own database, cloned from a migrated template, because tampering is permanent.

Longer than 400 lines because the tampering, anchor and sealer tests all run on a database cloned
from one migrated template and write and seal their trail the same way (``write_events``,
``sealed_trail``); the sealer's tests check that it hashes what the verifier reads back.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from structlog.testing import capture_logs

import integrations.audit_sealer
from engine.audit import AuditEvent
from engine.audit_chain import ChainHead, digest_of_values, extend
from integrations.audit_sealer import HASH_SLICE, AuditSealer
from integrations.db.audit import CONTENT_COLUMNS, chain_t, content_of, events_t, verify_chain
from integrations.db.migrate import upgrade
from integrations.db.uow import SqlUnitOfWork
from tests.support.cli import PROJECT, caremsg, caremsg_in_process
from tests.support.database import admin, asyncpg_dsn

T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="session")
def audit_template(server_url: str) -> Iterator[str]:
    """A migrated database nobody connects to: the template each tampering test clones."""
    name = f"caremsg_audit_tpl_{secrets.token_hex(4)}"
    asyncio.run(admin(server_url, f'CREATE DATABASE "{name}"'))
    try:
        upgrade(make_url(server_url).set(database=name).render_as_string(hide_password=False))
        yield name
    finally:
        asyncio.run(admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def trail_url(server_url: str, audit_template: str) -> AsyncIterator[str]:
    name = f"caremsg_audit_{secrets.token_hex(4)}"
    await admin(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{audit_template}"')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        await admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def engine(trail_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(trail_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def conn(trail_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(**asyncpg_dsn(trail_url))  # type: ignore[arg-type]
    try:
        yield connection
    finally:
        await connection.close()


def _event(i: int) -> AuditEvent:
    return AuditEvent(
        event="decision",
        workflow="patient.read" if i % 2 else "patient.update",
        outcome="success",
        occurred_at=T0 + timedelta(seconds=i),
        actor_id=100 + i,
        actor_role="care_team_member",
        organization_id=1,
        request_id=f"req-{i:04d}",
        source_address="10.0.0.7",
        resource_type="patient",
        resource_id=str(i),
        patient_id=i,
        decision="allow",
        matched_rule="roles.csv:31: care_team_member, patient.read, care_team & covered",
        reason="allowed",
        policy_version="abc123",
        details={"consent_id": i} if i % 3 == 0 else {},
    )


async def write_events(engine: AsyncEngine, count: int, start: int = 1) -> None:
    """Audit events written the way every workflow writes them: through the unit of work."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    for i in range(start, start + count):
        async with SqlUnitOfWork(sessions) as uow:
            uow.audit.record(_event(i))
            await uow.commit()


async def sealed_trail(engine: AsyncEngine, count: int = 8) -> list[int]:
    await write_events(engine, count)
    assert await AuditSealer(engine, batch_size=3).seal_pending() == count
    async with engine.connect() as c:
        from sqlalchemy import text

        return [int(r.id) for r in await c.execute(text("SELECT id FROM audit_events ORDER BY id"))]


async def as_attacker(conn: asyncpg.Connection, *statements: str) -> None:
    """Run statements with the append-only triggers off, as a superuser with database access can."""
    async with conn.transaction():
        await conn.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
        await conn.execute("ALTER TABLE audit_chain DISABLE TRIGGER USER")
        for statement in statements:
            await conn.execute(statement)
        await conn.execute("ALTER TABLE audit_events ENABLE TRIGGER USER")
        await conn.execute("ALTER TABLE audit_chain ENABLE TRIGGER USER")


async def test_an_untouched_trail_verifies_and_counts_the_events_not_yet_sealed(
    trail_url: str, engine: AsyncEngine
) -> None:
    ids = await sealed_trail(engine, 8)
    await write_events(engine, 2, start=100)

    # The real command line in a process of its own, as an operator runs it; the other tests run
    # the same main() in this process (tests/support/cli.py), as does the public key's test below.
    code, out = await caremsg(trail_url, "audit", "verify")

    assert code == 0, out
    assert "audit chain OK: 8 sealed record(s)" in out
    assert f"record id {ids[-1]}" in out
    assert "2 record(s) not yet sealed" in out


async def test_an_edited_record_is_caught_and_named(
    trail_url: str, engine: AsyncEngine, conn: asyncpg.Connection
) -> None:
    ids = await sealed_trail(engine)
    await as_attacker(conn, f"UPDATE audit_events SET outcome = 'denied' WHERE id = {ids[4]}")

    code, out = await caremsg_in_process(trail_url, "audit", "verify")

    assert code == 1
    assert f"EDITED: record id {ids[4]}, seq 5" in out


async def test_an_edit_to_the_details_of_a_record_is_caught(
    trail_url: str, engine: AsyncEngine, conn: asyncpg.Connection
) -> None:
    ids = await sealed_trail(engine)
    await as_attacker(
        conn, f"UPDATE audit_events SET details = '{{\"consent_id\": 99}}'::jsonb WHERE id = {ids[2]}"
    )

    code, out = await caremsg_in_process(trail_url, "audit", "verify")

    assert code == 1
    assert f"EDITED: record id {ids[2]}, seq 3" in out


async def test_a_deleted_record_is_caught_and_named(
    trail_url: str, engine: AsyncEngine, conn: asyncpg.Connection
) -> None:
    ids = await sealed_trail(engine)
    await as_attacker(conn, f"DELETE FROM audit_events WHERE id = {ids[3]}")

    code, out = await caremsg_in_process(trail_url, "audit", "verify")

    assert code == 1
    assert f"DELETED: record id {ids[3]}, seq 4" in out


async def test_a_record_deleted_with_its_chain_entry_is_caught_by_the_gap_it_leaves(
    trail_url: str, engine: AsyncEngine, conn: asyncpg.Connection
) -> None:
    ids = await sealed_trail(engine)
    await as_attacker(
        conn,
        f"DELETE FROM audit_events WHERE id = {ids[5]}",
        f"DELETE FROM audit_chain WHERE event_id = {ids[5]}",
    )

    code, out = await caremsg_in_process(trail_url, "audit", "verify")

    assert code == 1
    assert "DELETED: seq 6" in out
    assert f"after record id {ids[4]}" in out
    assert f"before record id {ids[6]}" in out


async def test_an_inserted_record_is_caught_and_named(
    trail_url: str, engine: AsyncEngine, conn: asyncpg.Connection
) -> None:
    ids = await sealed_trail(engine)
    # Slip a record in between two sealed ones: an id the sequence skipped (a rolled-back insert).
    forged = ids[2] + 1
    await conn.execute("SELECT setval('audit_events_id_seq', (SELECT max(id) FROM audit_events) + 1000)")
    await as_attacker(
        conn,
        "DELETE FROM audit_chain WHERE seq > 3",
        f"DELETE FROM audit_events WHERE id > {ids[2]}",
    )
    # Rebuild the trail after the gap honestly, then insert the forged record below the sealed head.
    await write_events(engine, 5, start=4)
    await AuditSealer(engine).seal_pending()
    # An INSERT naming its id gets the sequence's instead (migration 0010): the trigger must go too.
    await as_attacker(
        conn,
        "INSERT INTO audit_events (id, event, workflow, outcome, occurred_at) "
        f"VALUES ({forged}, 'decision', 'patient.read', 'success', now())",
    )

    code, out = await caremsg_in_process(trail_url, "audit", "verify")

    assert code == 1
    assert f"INSERTED: record id {forged}" in out


async def test_reordered_records_are_caught_and_named(
    trail_url: str, engine: AsyncEngine, conn: asyncpg.Connection
) -> None:
    ids = await sealed_trail(engine)
    a, b = ids[2], ids[6]
    await as_attacker(
        conn,
        f"UPDATE audit_events SET id = -1 WHERE id = {a}",
        f"UPDATE audit_events SET id = {a} WHERE id = {b}",
        f"UPDATE audit_events SET id = {b} WHERE id = -1",
    )

    code, out = await caremsg_in_process(trail_url, "audit", "verify")

    assert code == 1
    assert f"REORDERED: record id {a}, seq 3" in out
    assert f"sealed for record id {b} (seq 7)" in out


async def test_reordered_chain_entries_are_caught_and_named(
    trail_url: str, engine: AsyncEngine, conn: asyncpg.Connection
) -> None:
    ids = await sealed_trail(engine)
    await as_attacker(
        conn,
        "UPDATE audit_chain SET seq = 1000 WHERE seq = 2",
        "UPDATE audit_chain SET seq = 2 WHERE seq = 5",
        "UPDATE audit_chain SET seq = 5 WHERE seq = 1000",
    )

    code, out = await caremsg_in_process(trail_url, "audit", "verify")

    assert code == 1
    assert f"REORDERED: record id {ids[4]}, seq 2" in out
    assert "sealed at seq 5" in out


async def test_a_chain_entry_rewritten_to_match_an_edit_is_caught(
    trail_url: str, engine: AsyncEngine, conn: asyncpg.Connection
) -> None:
    ids = await sealed_trail(engine)
    await as_attacker(
        conn,
        f"UPDATE audit_events SET reason = 'nothing_to_see' WHERE id = {ids[1]}",
        f"UPDATE audit_chain SET digest = repeat('a', 64) WHERE event_id = {ids[1]}",
    )

    code, out = await caremsg_in_process(trail_url, "audit", "verify")

    assert code == 1
    assert f"EDITED: record id {ids[1]}, seq 2: the chain entry itself was altered" in out


async def test_the_chain_and_anchor_tables_refuse_update_delete_and_truncate(
    engine: AsyncEngine, conn: asyncpg.Connection
) -> None:
    await sealed_trail(engine, 2)
    await conn.execute(
        "INSERT INTO audit_anchors (seq, event_id, hash, key_id, signature, signed_at)"
        " VALUES (2, 2, repeat('0', 64), 'k', 's', now())"
    )
    for statement in (
        "UPDATE audit_chain SET hash = repeat('0', 64)",
        "DELETE FROM audit_chain",
        "TRUNCATE audit_chain",
        "UPDATE audit_anchors SET seq = 1",
        "DELETE FROM audit_anchors",
        "TRUNCATE audit_anchors",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(statement)


async def test_the_sealer_waits_for_a_transaction_holding_a_lower_id_so_the_chain_keeps_id_order(
    trail_url: str, engine: AsyncEngine, conn: asyncpg.Connection
) -> None:
    # A slow request: it has written its audit event (a lower id) but not committed yet. A plain
    # INSERT: the table's trigger takes the writers' shared lock, whoever writes.
    slow = conn.transaction()
    await slow.start()
    slow_id = await conn.fetchval(
        "INSERT INTO audit_events (event, workflow, outcome) VALUES ('decision', 'patient.read', 'success')"
        " RETURNING id"
    )
    await write_events(engine, 1)  # a quick request commits a higher id meanwhile
    sealing = asyncio.create_task(AuditSealer(engine, horizon_timeout_ms=30_000).seal_pending())
    observer = await asyncpg.connect(**asyncpg_dsn(trail_url))  # type: ignore[arg-type]
    try:
        while not await observer.fetchval(  # noqa: ASYNC110 - the condition lives in PostgreSQL
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ):
            await asyncio.sleep(0.01)  # polling for the waiting lock, not sleeping instead of it
        assert not sealing.done()
        await slow.commit()
        assert await asyncio.wait_for(sealing, timeout=10) == 2
        order = await observer.fetch("SELECT event_id FROM audit_chain ORDER BY seq")
    finally:
        await observer.close()
    assert [r["event_id"] for r in order] == sorted(r["event_id"] for r in order)
    assert order[0]["event_id"] == slow_id


async def test_a_signed_anchor_verifies_offline_and_catches_a_rewritten_trail(
    trail_url: str, engine: AsyncEngine, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    ids = await sealed_trail(engine)
    code, out = await caremsg_in_process(trail_url, "audit", "anchor", "--store")
    assert code == 0, out
    document = json.loads(out[out.index("{") : out.rindex("}") + 1])
    assert (document["seq"], document["eventId"]) == (8, ids[-1])
    assert await conn.fetchval("SELECT count(*) FROM audit_anchors WHERE seq = 8") == 1
    anchor = tmp_path / "anchor.json"
    anchor.write_text(json.dumps(document))

    code, out = await caremsg_in_process(
        trail_url, "audit", "verify-anchor", str(anchor), "--public-key", document["publicKey"],
        "--against-database",
    )  # fmt: skip
    assert code == 0, out
    assert "anchor OK: seq 8" in out
    assert "chain matches the anchor at seq 8" in out
    assert "note:" not in out
    # Without a key kept apart from the service, the auditor is told what the signature proves.
    code, out = await caremsg_in_process(trail_url, "audit", "verify-anchor", str(anchor))
    assert code == 0, out
    assert "note: checked with this service's own signing key" in out

    # Someone rewrites the trail's tail and recomputes the chain: only the anchor can tell.
    await as_attacker(
        conn, "DELETE FROM audit_chain WHERE seq >= 7", f"DELETE FROM audit_events WHERE id >= {ids[6]}"
    )
    code, out = await caremsg_in_process(
        trail_url, "audit", "verify-anchor", str(anchor), "--against-database"
    )
    assert code == 1
    assert "seq 8 is no longer in the chain" in out


async def test_an_altered_anchor_does_not_verify(trail_url: str, engine: AsyncEngine, tmp_path: Path) -> None:
    await sealed_trail(engine, 3)
    _, out = await caremsg_in_process(trail_url, "audit", "anchor")
    document = json.loads(out[out.index("{") : out.rindex("}") + 1])
    document["seq"] = 2
    anchor = tmp_path / "anchor.json"
    anchor.write_text(json.dumps(document))

    code, out = await caremsg_in_process(trail_url, "audit", "verify-anchor", str(anchor))

    assert code == 1
    assert "anchor INVALID: the signature does not verify" in out


# --- the sealer itself: what it hashes, and how it fails -------------------------------------------

AWKWARD_TEXT = [
    'quote " backslash \\ slash / percent %s',
    "".join(chr(c) for c in range(1, 32)) + "\x7f",
    "\u2028\u2029 \u00e9\u6f22\U0001f642",
    "",
]
AWKWARD_DETAILS = [
    "{}",
    '{"consent_id": 3}',
    '{"b": [1, 2.50, 1e2, -0, 1.0E+2, 12345678901234567890, 1.5e-7], "a": {"z": "\\u0001\u00e9"}}',
    '{"\u00e9": null, "": true, "Z": false, "aa": "x", "b": {}}',
    "[1, 2]",
    '"just text"',
    "null",
    "3.0",
]


async def test_the_sealer_hashes_awkward_events_exactly_as_the_verifier_reads_them(
    engine: AsyncEngine, conn: asyncpg.Connection
) -> None:
    # Written straight into the table: whatever a writer stores must seal as the verifier reads it.
    rows = [
        (
            T0 + timedelta(seconds=i, microseconds=i * 123457 % 1_000_000 if i % 2 else 0),
            AWKWARD_TEXT[i % len(AWKWARD_TEXT)],
            None if i % 3 == 0 else i,
            None if i % 3 == 1 else AWKWARD_TEXT[(i + 1) % len(AWKWARD_TEXT)],
            i % 2 == 0,
            AWKWARD_DETAILS[i % len(AWKWARD_DETAILS)],
        )
        for i in range(24)
    ]
    await conn.executemany(
        "INSERT INTO audit_events (occurred_at, request_id, actor_id, matched_rule, break_glass,"
        " details, event, workflow, outcome) VALUES ($1, $2, $3, $4, $5, $6::jsonb, 'decision',"
        " 'patient.read', 'success')",
        rows,
    )

    assert await AuditSealer(engine, batch_size=5).seal_pending() == len(rows)

    async with engine.connect() as c:
        events = (await c.execute(select(events_t.c.id, *CONTENT_COLUMNS).order_by(events_t.c.id))).all()
        chain = (await c.execute(select(chain_t).order_by(chain_t.c.seq))).all()
        report = await verify_chain(c)
    expected = extend(ChainHead(), [(e.id, content_of(e)) for e in events])
    assert [(r.seq, r.event_id, r.digest, r.prev_hash, r.hash) for r in chain] == [
        (x.seq, x.event_id, x.digest, x.prev_hash, x.hash) for x in expected
    ]
    assert report.ok
    assert (report.checked, report.unsealed) == (len(rows), 0)


async def test_a_batch_is_hashed_in_slices_with_the_event_loop_free_between_them(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # At ~30 µs an event, a batch of 1000 hashed in one go held every request of the process ~30 ms.
    count = 2 * HASH_SLICE + 50
    async with SqlUnitOfWork(async_sessionmaker(engine, expire_on_commit=False)) as uow:
        for i in range(1, count + 1):
            uow.audit.record(_event(i))
        await uow.commit()
    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    turns_seen: list[int] = []

    def digest(values: Any) -> str:
        turns_seen.append(turns)
        return digest_of_values(values)

    monkeypatch.setattr(integrations.audit_sealer, "digest_of_values", digest)
    other = asyncio.create_task(other_work())
    try:
        assert await AuditSealer(engine, batch_size=1000).seal_pending() == count
    finally:
        other.cancel()

    slices = [turns_seen[i : i + HASH_SLICE] for i in range(0, count, HASH_SLICE)]
    assert [len(s) for s in slices] == [HASH_SLICE, HASH_SLICE, 50]
    assert all(len(set(s)) == 1 for s in slices)  # each slice in one go
    assert all(a[-1] < b[0] for a, b in itertools.pairwise(slices))  # other work between
    # One chain across the slices, as extend() builds it over the whole batch.
    async with engine.connect() as c:
        events = (await c.execute(select(events_t.c.id, *CONTENT_COLUMNS).order_by(events_t.c.id))).all()
        chain = (await c.execute(select(chain_t).order_by(chain_t.c.seq))).all()
        report = await verify_chain(c)
    expected = extend(ChainHead(), [(e.id, content_of(e)) for e in events])
    assert [(r.seq, r.event_id, r.hash) for r in chain] == [(x.seq, x.event_id, x.hash) for x in expected]
    assert report.ok


async def test_a_round_that_cannot_get_the_horizon_is_logged_without_content_and_retried(
    engine: AsyncEngine, conn: asyncpg.Connection
) -> None:
    await write_events(engine, 2)
    # A writer that holds the writers' lock past the sealer's patience (uncommitted, with an event).
    slow = conn.transaction()
    await slow.start()
    await conn.execute(
        "INSERT INTO audit_events (event, workflow, outcome, request_id)"
        " VALUES ('decision', 'patient.read', 'success', 'req-secret-0001')"
    )
    sealer = AuditSealer(engine, interval=0.05, horizon_timeout_ms=20)
    with pytest.raises(asyncpg.LockNotAvailableError):
        await sealer.seal_pending()
    # The failed round left nothing behind: no transaction, no advisory lock but the writer's.
    leftovers = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity a LEFT JOIN pg_locks l"
        " ON l.pid = a.pid AND l.locktype = 'advisory'"
        " WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()"
        " AND (a.state LIKE 'idle in transaction%' OR l.pid IS NOT NULL)"
    )
    assert leftovers == 0

    with capture_logs() as logs:
        task = asyncio.create_task(sealer.run())
        try:
            while not any(e["event"] == "audit.seal_failed" for e in logs):  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # polling for the logged failure, not sleeping instead of it
            await slow.commit()
            sealer.wake()
            while await conn.fetchval("SELECT count(*) FROM audit_chain") < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # polling for the chain in PostgreSQL, as above
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    failures = [e for e in logs if e["event"] == "audit.seal_failed"]
    assert failures[0] == {
        "event": "audit.seal_failed",
        "error": "LockNotAvailableError",
        "log_level": "warning",
    }
    assert "req-secret" not in repr(logs)
    async with engine.connect() as c:
        assert (await verify_chain(c)).ok


async def test_a_round_cancelled_while_waiting_for_the_horizon_hands_back_a_clean_connection(
    engine: AsyncEngine, conn: asyncpg.Connection
) -> None:
    await write_events(engine, 1)
    writer = conn.transaction()
    await writer.start()
    await conn.execute(
        "INSERT INTO audit_events (event, workflow, outcome) VALUES ('decision', 'patient.read', 'success')"
    )
    sealing = asyncio.create_task(AuditSealer(engine, horizon_timeout_ms=30_000).seal_pending())
    while not await conn.fetchval(  # noqa: ASYNC110 - the condition lives in PostgreSQL
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    ):
        await asyncio.sleep(0.01)  # polling for the waiting lock, not sleeping instead of it
    sealing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sealing

    # Nothing but the writer is in a transaction or holds an advisory lock, and the pool still works.
    leftovers = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity a LEFT JOIN pg_locks l"
        " ON l.pid = a.pid AND l.locktype = 'advisory'"
        " WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()"
        " AND (a.state LIKE 'idle in transaction%' OR l.pid IS NOT NULL)"
    )
    assert leftovers == 0
    await writer.commit()
    async with engine.begin() as c:
        assert (await c.execute(select(events_t.c.id).limit(1))).scalar() is not None
    assert await AuditSealer(engine).seal_pending() == 2


async def test_sealers_of_several_instances_seal_every_event_once_in_one_chain(engine: AsyncEngine) -> None:
    await write_events(engine, 40)
    engines = [create_async_engine(engine.url) for _ in range(3)]
    try:
        sealed = await asyncio.gather(*(AuditSealer(e, batch_size=7).seal_pending() for e in engines))
    finally:
        for e in engines:
            await e.dispose()

    assert sum(sealed) == 40
    async with engine.connect() as c:
        report = await verify_chain(c)
    assert report.ok
    assert (report.checked, report.head.seq, report.unsealed) == (40, 40, 0)


async def test_the_printed_public_key_is_what_verify_anchor_takes(trail_url: str, tmp_path: Path) -> None:
    code, out = await caremsg_in_process(trail_url, "audit", "anchor")
    assert code == 0, out
    anchor = tmp_path / "anchor.json"
    anchor.write_text(out[out.index("{") : out.rindex("}") + 1])
    env = {**os.environ, "DATABASE_URL": trail_url, "CAREMSG_SERVICE_LOG_FORMAT": "json"}
    printed = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "handlers.cli", "audit", "public-key",
        cwd=PROJECT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    key, note = await printed.communicate()
    assert printed.returncode == 0
    assert b"key id" in note

    code, out = await caremsg_in_process(
        trail_url, "audit", "verify-anchor", str(anchor), "--public-key", key.decode().strip()
    )

    assert code == 0, out
    assert "anchor OK" in out
