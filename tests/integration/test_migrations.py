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
