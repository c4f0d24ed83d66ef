"""Alembic owns the schema: the migrations build exactly what the models describe, and go both ways."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import asyncpg
import pytest
from alembic import command
from sqlalchemy.engine import make_url

from integrations.db.migrate import alembic_config, downgrade, upgrade
from tests.support.database import admin, asyncpg_dsn


@pytest.fixture
def empty_database(server_url: str) -> Iterator[str]:
    name = f"caremsg_mig_{secrets.token_hex(4)}"
    asyncio.run(admin(server_url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_migrations_build_exactly_the_schema_the_models_describe(empty_database: str) -> None:
    upgrade(empty_database)
    command.check(alembic_config(empty_database))  # raises if autogenerate would find a difference


def test_migrations_downgrade_to_nothing_and_upgrade_again(empty_database: str) -> None:
    upgrade(empty_database)
    downgrade(empty_database, "base")

    async def tables() -> set[str]:
        conn = await asyncpg.connect(**asyncpg_dsn(empty_database))  # type: ignore[arg-type]
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        finally:
            await conn.close()
        return {r["tablename"] for r in rows}

    assert asyncio.run(tables()) <= {"alembic_version"}
    upgrade(empty_database)
    assert {"patients", "consents", "audit_events", "outbox"} <= asyncio.run(tables())


#: Two organizations, a clinician of the second, the first's patient, and an emergency session on it
#: reviewed by an officer of the clinician's organization (one review, in 0015's columns).
_REVIEWED_SESSION = """
    WITH o AS (INSERT INTO organizations (name) VALUES ('Home'), ('ER') RETURNING id),
    u AS (INSERT INTO users (organization_id, email, password_hash, first_name, last_name, role, chat_user_id)
          SELECT max(id), v.email, 'x', 'A', 'B', v.role, v.email FROM o,
                 (VALUES ('doc@er', 'care_team_member'), ('co@er', 'compliance_officer')) v(email, role)
          GROUP BY v.email, v.role RETURNING id, role, organization_id),
    p AS (INSERT INTO patients (organization_id, first_name, last_name, risk_level, created_by)
          SELECT (SELECT min(id) FROM o), 'P', 'Q', 'low', (SELECT id FROM u WHERE role = 'care_team_member')
          RETURNING id)
    INSERT INTO break_glass_sessions (user_id, organization_id, patient_id, reason, expires_at,
                                      reviewed_at, reviewed_by, review_note)
    SELECT d.id, d.organization_id, p.id, 'Unresponsive in our ED', now() + interval '1 hour',
           now(), c.id, 'Fine by us.'
    FROM p, u d, u c WHERE d.role = 'care_team_member' AND c.role = 'compliance_officer'
    RETURNING id, reviewed_by, organization_id
"""


def test_0031_keeps_a_review_as_the_reviewers_organizations_own_and_back(empty_database: str) -> None:
    async def run(*statements: str) -> list[list[asyncpg.Record]]:
        conn = await asyncpg.connect(**asyncpg_dsn(empty_database))  # type: ignore[arg-type]
        try:
            return [await conn.fetch(s) for s in statements]
        finally:
            await conn.close()

    upgrade(empty_database, "0030")
    [[session]] = asyncio.run(run(_REVIEWED_SESSION))
    upgrade(empty_database)
    [moved] = asyncio.run(
        run("SELECT session_id, organization_id, reviewed_by, note FROM break_glass_reviews")
    )
    downgrade(empty_database, "0030")
    [back] = asyncio.run(run("SELECT id, reviewed_by, review_note FROM break_glass_sessions"))

    assert [tuple(r) for r in moved] == [
        (session["id"], session["organization_id"], session["reviewed_by"], "Fine by us.")
    ]
    assert [tuple(r) for r in back] == [(session["id"], session["reviewed_by"], "Fine by us.")]


def test_0032_keeps_whether_a_record_was_told_in_the_time_index(empty_database: str) -> None:
    """A time-range search leaves out what an actor was not told of (details.answered) and reads the
    time index alone: the index holds the flag, for records stored before the migration too."""

    async def run(*statements: str) -> list[list[asyncpg.Record]]:
        conn = await asyncpg.connect(**asyncpg_dsn(empty_database))  # type: ignore[arg-type]
        try:
            return [await conn.fetch(s) for s in statements]
        finally:
            await conn.close()

    stored = (
        "INSERT INTO audit_events (event, workflow, outcome, details) VALUES"
        " ('decision', 'patient.read', 'denied', '{\"answered\": \"not_found\"}'),"
        " ('decision', 'patient.read', 'success', '{\"facts\": \"own_org\"}')"
    )
    upgrade(empty_database, "0031")
    asyncio.run(run(stored))
    upgrade(empty_database)
    flags, [index] = asyncio.run(
        run(
            "SELECT answered FROM audit_events ORDER BY id",
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_audit_events_occurred_at_visible'",
        )
    )
    downgrade(empty_database, "0031")
    [columns] = asyncio.run(
        run("SELECT column_name FROM information_schema.columns WHERE table_name = 'audit_events'")
    )

    assert [r["answered"] for r in flags] == [True, False]
    assert "answered" in index["indexdef"].partition("INCLUDE")[2]
    assert "answered" not in {r["column_name"] for r in columns}


#: At 0033: a user and three keys: completed with its message's answer stored, in progress, and
#: completed with a body but no resource (none can be made since keys were introduced).
_KEYS_WITH_BODIES = """
    WITH o AS (INSERT INTO organizations (name) VALUES ('Home') RETURNING id),
    u AS (INSERT INTO users (organization_id, email, password_hash, first_name, last_name, role, chat_user_id)
          SELECT id, 'peer@home', 'x', 'A', 'B', 'peer_support', 'peer@home' FROM o RETURNING id)
    INSERT INTO idempotency_keys (user_id, key, operation, request_hash, state, resource_id,
                                  response_status, response_body, expires_at)
    SELECT u.id, v.key, 'message.send', 'digest', v.state, v.resource_id, v.status,
           CAST(v.body AS jsonb), now() + interval '1 day'
    FROM u, (VALUES ('sent', 'completed', 7, 202, '{"id": 7, "message": "Potassium 5.9"}'),
                    ('running', 'in_progress', NULL, NULL, NULL),
                    ('bodied', 'completed', NULL, 202, '{"message": "Potassium 6.1"}'))
         AS v(key, state, resource_id, status, body)
"""


def test_0034_empties_and_drops_the_stored_answers_and_keeps_the_keys(empty_database: str) -> None:
    async def run(*statements: str) -> list[list[asyncpg.Record]]:
        conn = await asyncpg.connect(**asyncpg_dsn(empty_database))  # type: ignore[arg-type]
        try:
            return [await conn.fetch(s) for s in statements]
        finally:
            await conn.close()

    columns = "SELECT column_name FROM information_schema.columns WHERE table_name = 'idempotency_keys'"
    keys = "SELECT key, state, resource_id, response_status FROM idempotency_keys ORDER BY key"
    index = "SELECT indexname FROM pg_indexes WHERE indexname = 'ix_idempotency_keys_message_send'"
    upgrade(empty_database, "0033")
    asyncio.run(run(_KEYS_WITH_BODIES))
    upgrade(empty_database)
    [after, upgraded, no_index] = asyncio.run(run(keys, columns, index))
    downgrade(empty_database, "0033")
    bodies = "SELECT key, response_body FROM idempotency_keys ORDER BY key"
    [back, [indexed]] = asyncio.run(run(bodies, index))

    assert [tuple(r) for r in after] == [
        ("running", "in_progress", None, None),
        ("sent", "completed", 7, 202),
    ]
    assert "response_body" not in {r["column_name"] for r in upgraded}
    assert no_index == []
    assert [tuple(r) for r in back] == [("running", None), ("sent", None)]
    assert indexed["indexname"] == "ix_idempotency_keys_message_send"


async def test_the_audit_table_refuses_update_delete_and_truncate(db: asyncpg.Connection) -> None:
    await db.execute(
        "INSERT INTO audit_events (event, workflow, outcome) VALUES ('decision', 'patient.read', 'success')"
    )
    for statement in (
        "UPDATE audit_events SET outcome = 'failure'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await db.execute(statement)


#: Plain B-tree indexes (no predicate, no expression, not unique) whose columns are the leading
#: columns of another plain B-tree index of the same table: every lookup by them can use the wider
#: one, so each is only a cost on every write (migration 0030 dropped four).
_PREFIX_INDEXES = """
    WITH plain AS (
        SELECT i.indexrelid, i.indrelid, i.indisunique, string_to_array(i.indkey::text, ' ') AS columns
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND am.amname = 'btree' AND i.indpred IS NULL AND i.indexprs IS NULL
    )
    SELECT a.indexrelid::regclass::text AS redundant, b.indexrelid::regclass::text AS wider
    FROM plain a JOIN plain b ON b.indrelid = a.indrelid AND b.indexrelid <> a.indexrelid
    WHERE NOT a.indisunique AND cardinality(b.columns) > cardinality(a.columns)
      AND b.columns[1:cardinality(a.columns)] = a.columns
    ORDER BY 1
"""


async def test_no_index_repeats_the_leading_columns_of_another(db: asyncpg.Connection) -> None:
    assert [tuple(row) for row in await db.fetch(_PREFIX_INDEXES)] == []
