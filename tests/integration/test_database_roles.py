"""Least privilege: the service's database role can change rows, and nothing that protects the audit
trail. Every statement here runs as the application role the app under test logs in as."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from engine.audit_chain import ChainHead, link
from integrations.audit_sealer import AuditSealer
from integrations.db.audit import verify_chain
from integrations.db.migrate import upgrade
from integrations.db.roles import DatabaseRoles, RoleSetupError
from tests.support.database import admin, app_url, asyncpg_dsn, fresh_database, roles_of

PROJECT = Path(__file__).resolve().parents[2]
APPEND = "SELECT audit_chain_append($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[])"
AUDIT_INSERT = (
    "INSERT INTO audit_events (event, workflow, outcome) VALUES ('decision', 'patient.read', 'success')"
)


@pytest.fixture
async def app_db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the application role, the one ``settings.database.url`` names."""
    conn = await asyncpg.connect(**asyncpg_dsn(app_url(database_url)))  # type: ignore[arg-type]
    try:
        yield conn
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
        "ALTER TABLE audit_events DISABLE TRIGGER USER",
        "DROP TRIGGER audit_events_assign_id ON audit_events",
        "UPDATE audit_events SET outcome = 'failure'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "INSERT INTO audit_chain (seq, event_id, digest, prev_hash, hash)"
        " VALUES (1, 1, repeat('a', 64), repeat('0', 64), repeat('b', 64))",
        "UPDATE audit_chain SET hash = repeat('0', 64)",
        "DELETE FROM audit_anchors",
        "SELECT setval('audit_events_id_seq', 1000000)",
        "CREATE TABLE mine (id int)",
        "CREATE FUNCTION mine() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "UPDATE alembic_version SET version_num = '0001'",
        "CREATE ROLE mine",
    ],
)
async def test_the_application_role_cannot_touch_what_protects_the_audit_trail(
    app_db: asyncpg.Connection, statement: str
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_db.execute(statement)


@pytest.mark.parametrize("table", ["consent_changes", "break_glass_reviews", "part2_notices"])
async def test_the_application_role_cannot_rewrite_the_records_the_service_only_adds_to(
    app_db: asyncpg.Connection, table: str
) -> None:
    # A consent's history, an emergency access's review and a Part 2 notice given are records the
    # service inserts and never changes: whoever holds the application role should not rewrite them.
    for privilege in ("UPDATE", "DELETE", "TRUNCATE"):
        assert not await app_db.fetchval("SELECT has_table_privilege(current_user, $1, $2)", table, privilege)
    assert await app_db.fetchval("SELECT has_table_privilege(current_user, $1, 'INSERT')", table)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_db.execute(f"DELETE FROM {table}")


async def test_the_application_role_cannot_grant_itself_anything(
    app_db: asyncpg.Connection, database_url: str
) -> None:
    app = roles_of(database_url).app
    # Without the grant option PostgreSQL only warns ("no privileges were granted"): what counts is
    # that nothing changed.
    await app_db.execute(f"GRANT UPDATE, DELETE, TRUNCATE ON audit_events TO {app}")
    await app_db.execute(f"GRANT INSERT ON audit_chain TO {app}")
    for table, privilege in [
        ("audit_events", "UPDATE"),
        ("audit_events", "DELETE"),
        ("audit_chain", "INSERT"),
    ]:
        assert not await app_db.fetchval("SELECT has_table_privilege(current_user, $1, $2)", table, privilege)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_db.execute("UPDATE audit_events SET outcome = 'failure'")


async def test_the_application_role_owns_nothing_and_is_no_superuser(
    app_db: asyncpg.Connection, database_url: str
) -> None:
    roles = roles_of(database_url)
    assert await app_db.fetchval("SELECT current_user") == roles.app
    owned = await app_db.fetchval(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
    )
    assert owned == 0
    owners = await app_db.fetch(
        "SELECT DISTINCT pg_get_userbyid(c.relowner) AS owner FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
    )
    assert {r["owner"] for r in owners} == {roles.owner}
    assert not await app_db.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")


async def test_an_audit_event_inserted_with_an_id_of_its_own_gets_the_sequences(
    app_db: asyncpg.Connection,
) -> None:
    top = await app_db.fetchval("SELECT coalesce(max(id), 0) FROM audit_events")
    forged = top + 1000
    stored = await app_db.fetchval(
        "INSERT INTO audit_events (id, event, workflow, outcome)"
        f" VALUES ({forged}, 'decision', 'patient.read', 'success') RETURNING id"
    )
    assert stored != forged
    assert stored == await app_db.fetchval("SELECT last_value FROM audit_events_id_seq")
    # OVERRIDING SYSTEM VALUE (what defeats an identity column) changes nothing either.
    stored = await app_db.fetchval(
        "INSERT INTO audit_events (id, event, workflow, outcome) OVERRIDING SYSTEM VALUE"
        f" VALUES ({forged + 1}, 'decision', 'patient.read', 'success') RETURNING id"
    )
    assert stored < forged


# --- sealing as the application role ---------------------------------------------------------------


@pytest.fixture
def own_database(server_url: str) -> Iterator[str]:
    """A database of this test's own (tampering and sealing are permanent), with its own roles."""
    with fresh_database(server_url, "caremsg_roles") as url:
        yield url


@pytest.fixture
async def app_engine(own_database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(app_url(own_database))
    yield engine
    await engine.dispose()


async def test_the_sealer_seals_as_the_application_role_through_the_owners_function(
    own_database: str, app_engine: AsyncEngine
) -> None:
    conn = await asyncpg.connect(**asyncpg_dsn(app_url(own_database)))  # type: ignore[arg-type]
    try:
        for _ in range(5):
            await conn.execute(AUDIT_INSERT)
        assert await AuditSealer(app_engine, batch_size=2).seal_pending() == 5
        async with app_engine.connect() as c:
            report = await verify_chain(c)
        assert report.ok
        assert report.checked == 5

        # A chain entry that does not extend the chain soundly is refused, whatever it claims.
        await conn.execute(AUDIT_INSERT)
        head = ChainHead(
            *await conn.fetchrow("SELECT seq, hash, event_id FROM audit_chain ORDER BY seq DESC LIMIT 1")
        )
        event_id = await conn.fetchval("SELECT max(id) FROM audit_events")
        (good,) = link(head, [(event_id, "a" * 64)])
        forgeries = [
            link(ChainHead(), [(event_id, "a" * 64)])[0],  # starts the chain again
            link(head, [(event_id + 5, "a" * 64)])[0],  # an event that does not exist
            link(head, [(head.event_id, "a" * 64)])[0],  # an event sealed already
            type(good)(good.seq, good.event_id, good.digest, good.prev_hash, "f" * 64),  # a wrong link
        ]
        for entry in forgeries:
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute(
                    APPEND,
                    [entry.seq],
                    [entry.event_id],
                    [entry.digest],
                    [entry.prev_hash],
                    [entry.hash],
                )
    finally:
        await conn.close()


async def test_a_forged_out_of_sequence_record_is_reported_and_later_records_still_seal_and_verify(
    own_database: str, app_engine: AsyncEngine
) -> None:
    admin = await asyncpg.connect(**asyncpg_dsn(own_database))  # type: ignore[arg-type]
    app = await asyncpg.connect(**asyncpg_dsn(app_url(own_database)))  # type: ignore[arg-type]
    try:
        for _ in range(3):
            await app.execute(AUDIT_INSERT)
        await AuditSealer(app_engine).seal_pending()
        # What the owner (or a superuser) can still do: switch the triggers off and pick an id.
        forged = await admin.fetchval("SELECT max(id) + 1000 FROM audit_events")
        async with admin.transaction():
            await admin.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
            await admin.execute(
                "INSERT INTO audit_events (id, event, workflow, outcome)"
                f" VALUES ({forged}, 'decision', 'patient.read', 'success')"
            )
            await admin.execute("ALTER TABLE audit_events ENABLE TRIGGER USER")
        for _ in range(4):
            await app.execute(AUDIT_INSERT)

        assert await AuditSealer(app_engine).seal_pending() == 4
        async with app_engine.connect() as c:
            report = await verify_chain(c)

        # The forged record is named; the seven genuine ones, three of them written after it, verify.
        assert report.checked == 7
        assert report.problem is not None
        assert report.problem.kind == "inserted"
        assert report.problem.event_id == forged
        assert "assigned" in report.problem.detail
        sealed = {r["event_id"] for r in await app.fetch("SELECT event_id FROM audit_chain")}
        assert forged not in sealed
        assert len(sealed) == 7
    finally:
        await admin.close()
        await app.close()


# --- the caller's temporary schema -----------------------------------------------------------------
# PostgreSQL searches a session's temporary schema first for tables and sequences unless the
# search_path names pg_temp, and every role may create temporary objects by default: a function the
# application role runs must not find the table or sequence it means in the caller's pg_temp.


async def test_a_temporary_sequence_of_the_callers_does_not_choose_an_audit_events_id(
    own_database: str,
) -> None:
    app = await asyncpg.connect(**asyncpg_dsn(app_url(own_database)))  # type: ignore[arg-type]
    try:
        await app.execute(AUDIT_INSERT)
        top = await app.fetchval("SELECT max(id) FROM audit_events")
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await app.execute(f"CREATE TEMPORARY SEQUENCE audit_events_id_seq START {top + 1000}")
        stored = await app.fetchval(AUDIT_INSERT + " RETURNING id")
        assert stored == top + 1
    finally:
        await app.close()


async def test_the_sealing_function_cannot_be_pointed_at_temporary_tables_of_the_callers(
    own_database: str, app_engine: AsyncEngine
) -> None:
    app = await asyncpg.connect(**asyncpg_dsn(app_url(own_database)))  # type: ignore[arg-type]
    try:
        for _ in range(3):
            await app.execute(AUDIT_INSERT)
        await AuditSealer(app_engine).seal_pending()
        head = ChainHead(
            *await app.fetchrow("SELECT seq, hash, event_id FROM audit_chain ORDER BY seq DESC LIMIT 1")
        )
        # Events and a sequence of its own making, far past the real ones: sealed, the chain's head
        # would sit past every id to come and nothing written later could ever be sealed.
        far = 1_000_000
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await app.execute("CREATE TEMPORARY TABLE audit_events (id bigint)")
            await app.execute(f"INSERT INTO audit_events VALUES ({far})")
            await app.execute(f"CREATE TEMPORARY SEQUENCE audit_events_id_seq START {far}")
            await app.execute("SELECT nextval('audit_events_id_seq')")
            # The function runs as the owner: let it read them.
            await app.execute("GRANT SELECT ON audit_events, audit_events_id_seq TO PUBLIC")
        (entry,) = link(head, [(far, "a" * 64)])
        with pytest.raises(asyncpg.CheckViolationError):
            await app.execute(
                APPEND, [entry.seq], [entry.event_id], [entry.digest], [entry.prev_hash], [entry.hash]
            )
    finally:
        await app.close()
    assert await AuditSealer(app_engine).seal_pending() == 0


async def test_every_function_of_the_schema_searches_the_callers_temporary_schema_last(
    app_db: asyncpg.Connection,
) -> None:
    rows = await app_db.fetch(
        "SELECT p.proname, p.proconfig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'public'"
    )
    assert rows
    unsafe = [
        r["proname"]
        for r in rows
        if not any(
            c.startswith("search_path=") and c.replace(" ", "").endswith(",pg_temp")
            for c in r["proconfig"] or ()
        )
    ]
    assert unsafe == []


# --- creating and checking the roles ---------------------------------------------------------------


@pytest.fixture
def empty_database(server_url: str) -> Iterator[str]:
    name = f"caremsg_rolecheck_{secrets.token_hex(4)}"
    asyncio.run(admin(server_url, f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    roles = roles_of(url)
    try:
        yield url
    finally:
        asyncio.run(admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        asyncio.run(admin(server_url, f'DROP ROLE IF EXISTS "{roles.app}", "{roles.owner}"'))


def test_migrate_refuses_an_application_role_that_is_a_superuser(empty_database: str) -> None:
    roles = roles_of(empty_database)
    asyncio.run(admin(empty_database, f'CREATE ROLE "{roles.app}" LOGIN SUPERUSER'))

    with pytest.raises(RoleSetupError, match="is a superuser"):
        upgrade(empty_database, roles=roles)


def test_migrate_without_the_right_to_create_roles_says_what_to_create_by_hand(empty_database: str) -> None:
    # A login like a managed PostgreSQL's: no superuser, no CREATEROLE, and no roles set up yet.
    roles = roles_of(empty_database)
    login = DatabaseRoles(owner=f"{roles.owner[:-6]}_login", app=f"{roles.owner[:-6]}_login2")
    asyncio.run(admin(empty_database, f'CREATE ROLE "{login.owner}" LOGIN'))
    try:
        url = make_url(empty_database).set(username=login.owner).render_as_string(hide_password=False)
        with pytest.raises(RoleSetupError) as raised:
            upgrade(url, roles=roles)
        message = str(raised.value)
        assert f"the owner role {roles.owner} does not exist" in message
        assert f"CREATE ROLE {roles.owner} NOLOGIN" in message
        assert f"CREATE ROLE {roles.app} LOGIN" in message
    finally:
        asyncio.run(admin(empty_database, f'DROP ROLE IF EXISTS "{login.owner}"'))


async def test_caremsg_migrate_creates_both_roles_and_the_service_logs_in_as_the_application_role(
    empty_database: str,
) -> None:
    roles = roles_of(empty_database)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREMSG_") and k != "DATABASE_URL"}
    env.update(
        DATABASE_URL=app_url(empty_database),
        CAREMSG_DATABASE_OWNER_URL=empty_database,
        CAREMSG_DATABASE_OWNER_ROLE=roles.owner,
        CAREMSG_DATABASE_APP_ROLE=roles.app,
        CAREMSG_SERVICE_LOG_FORMAT="json",
    )
    migrate = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "handlers.cli", "migrate",
        cwd=PROJECT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await migrate.communicate()
    assert migrate.returncode == 0, out.decode()
    assert b"service_not_application_role" not in out

    app = await asyncpg.connect(**asyncpg_dsn(app_url(empty_database)))  # type: ignore[arg-type]
    try:
        assert await app.fetchval("SELECT current_user") == roles.app
        await app.execute(AUDIT_INSERT)
        owner = await app.fetchval(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'audit_events'"
        )
        assert owner == roles.owner
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
    finally:
        await app.close()


async def test_migrating_an_existing_database_hands_its_tables_to_the_owner_role(empty_database: str) -> None:
    # A deployment from before the split: the administrator's login ran the migrations, owns it all.
    await asyncio.to_thread(upgrade, empty_database)
    roles = roles_of(empty_database)

    await asyncio.to_thread(upgrade, empty_database, roles=roles)

    admin = await asyncpg.connect(**asyncpg_dsn(empty_database))  # type: ignore[arg-type]
    try:
        owners = await admin.fetch(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) AS owner FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
            " UNION SELECT DISTINCT pg_get_userbyid(p.proowner) FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
        )
        assert {r["owner"] for r in owners} == {roles.owner}
    finally:
        await admin.close()
