"""The two database roles: an owner that the migrations run as, and the application role the service
connects as, which owns nothing.

What each may do (``caremsg migrate`` creates or checks both, then grants, every time it runs):

- **owner** (``database.owner_role``, NOLOGIN when caremsg creates it): owns every table, sequence,
  trigger and function. Migrations run as it: whoever ``database.owner_url`` logs in as (the owner
  itself, or an administrator that is a member of it) does ``SET ROLE`` to it first.
- **application** (``database.app_role``, LOGIN): SELECT, INSERT, UPDATE, DELETE on the tables, with
  these exceptions; USAGE and SELECT on the sequences (``nextval``, never ``setval``):

  ===================  =================================================================
  audit_events         SELECT, INSERT only; the row's id is always the sequence's (0010)
  audit_chain          SELECT only; sealing goes through ``audit_chain_append`` (0010), a
                       SECURITY DEFINER function of the owner that accepts only a sound
                       extension of the chain
  audit_anchors        SELECT, INSERT only (``caremsg audit anchor --store``)
  consent_changes      SELECT, INSERT only: a consent's history
  break_glass_reviews  SELECT, INSERT only: an emergency access's review, per organization
  part2_notices        SELECT, INSERT only: a 42 CFR Part 2 notice given (these three are
                       records the service adds and never changes; no trigger guards them)
  alembic_version      SELECT only (the schema's revision)
  ===================  =================================================================

  Owning nothing, it cannot ALTER a table (so not switch a trigger off), and holding no grant
  option, it cannot GRANT anything to itself or anyone. It may still create temporary tables and
  sequences (PostgreSQL lets every role): each function of the schema (the triggers, the sealing
  function) names ``pg_temp`` last in its search_path (0033), so none finds the caller's instead.
  It must not be a superuser, hold CREATEROLE or BYPASSRLS, or be a member of the owner: the check
  refuses such a role rather than run with it.

Who creates the roles: ``caremsg migrate`` does when its login may (a superuser, as on the embedded
development server, or a CREATEROLE administrator); on a managed PostgreSQL where it may not, it
stops and prints the statements an administrator runs once (:func:`manual_setup`).

Roles are cluster-wide while grants are per database: the test suite uses role names of its own
per test database (``tests/conftest.py``); a deployment uses the configured names.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

#: audit tables the application role may only read and append to (audit_chain: only read).
APPEND_ONLY = ("audit_events", "audit_anchors")
#: other records the service only ever adds to (the grants alone guard these).
RECORDS = ("consent_changes", "break_glass_reviews", "part2_notices")
READ_ONLY = ("audit_chain", "alembic_version")
SEALING_FUNCTION = "audit_chain_append(bigint[], bigint[], text[], text[], text[])"

_GRANTS = (
    "GRANT USAGE ON SCHEMA public TO {app}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app}",
    "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {app}",
    "REVOKE UPDATE ON ALL SEQUENCES IN SCHEMA public FROM {app}",
    "REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA public FROM {app}",
    f"REVOKE UPDATE, DELETE ON {', '.join(APPEND_ONLY + RECORDS)} FROM {{app}}",
    f"REVOKE INSERT, UPDATE, DELETE ON {', '.join(READ_ONLY)} FROM {{app}}",
    f"GRANT EXECUTE ON FUNCTION {SEALING_FUNCTION} TO {{app}}",
)
_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class RoleSetupError(Exception):
    """The roles are missing and cannot be created from this login, or are unsafe as they are."""


@dataclass(frozen=True)
class DatabaseRoles:
    owner: str = "caremsg_owner"
    app: str = "caremsg_app"
    #: The application role's password, set when caremsg creates the role (from the service's URL).
    app_password: str | None = None

    def __post_init__(self) -> None:
        for name in (self.owner, self.app):
            if not _ROLE_NAME.fullmatch(name):
                raise ValueError(f"not a plain role name (lower case, digits, _): {name!r}")
        if self.owner == self.app:
            raise ValueError("the owner and application roles must differ")


def manual_setup(roles: DatabaseRoles, database: str = "<database>") -> str:
    """The statements an administrator runs once where ``caremsg migrate`` may not create roles."""
    return f"""\
CREATE ROLE {roles.owner} NOLOGIN;            -- or LOGIN with a password, to migrate as it directly
GRANT {roles.owner} TO <the login in database.owner_url>;   -- unless that login is {roles.owner}
CREATE ROLE {roles.app} LOGIN PASSWORD '...' NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
GRANT CONNECT ON DATABASE {database} TO {roles.app};
GRANT USAGE, CREATE ON SCHEMA public TO {roles.owner};
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
-- then: caremsg migrate (with database.owner_url), which creates the tables as {roles.owner} and
-- grants {roles.app} what it needs."""


async def _connect(url: str) -> asyncpg.Connection:
    u = make_url(url)
    return await asyncpg.connect(
        user=u.username,
        password=u.password,
        host=u.query.get("host") or u.host,
        port=int(str(u.query.get("port") or u.port or 5432)),
        database=u.database,
    )


async def provision(url: str, roles: DatabaseRoles) -> bool:
    """Create or check both roles from the login in ``url``; returns whether migrations may run here
    (False: the login is the application role itself, which may not change the schema)."""
    conn = await _connect(url)
    try:
        me = await conn.fetchrow(
            "SELECT rolname, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user"
        )
        if me["rolname"] == roles.app:
            return False
        may_create = bool(me["rolsuper"] or me["rolcreaterole"])
        database = await conn.fetchval("SELECT current_database()")

        def missing(what: str) -> RoleSetupError:
            return RoleSetupError(
                f"{what}, and {me['rolname']} may not create roles. "
                "Have an administrator run once:\n" + manual_setup(roles, database)
            )

        if not await _exists(conn, roles.owner):
            if not may_create:
                raise missing(f"the owner role {roles.owner} does not exist")
            await _create(conn, f"CREATE ROLE {roles.owner} NOLOGIN")
        if me["rolname"] != roles.owner and not await conn.fetchval(
            "SELECT pg_has_role(current_user, $1, 'USAGE')", roles.owner
        ):
            if not may_create:
                raise missing(f"{me['rolname']} is not a member of the owner role {roles.owner}")
            await conn.execute(f"GRANT {roles.owner} TO {_quote(me['rolname'])}")
        if not await _exists(conn, roles.app):
            if not may_create:
                raise missing(f"the application role {roles.app} does not exist")
            password = ""
            if roles.app_password:
                password = " PASSWORD " + _literal(roles.app_password)
            await _create(
                conn,
                f"CREATE ROLE {roles.app} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT{password}",
            )
        await _check_app_role(conn, roles)
        # The database's or schema's owner (or a superuser) may; anyone else gets a warning from
        # PostgreSQL and nothing changes (the manual setup covers it).
        await conn.execute(f"GRANT CONNECT ON DATABASE {_quote(database)} TO {roles.app}")
        await conn.execute(f"GRANT USAGE, CREATE ON SCHEMA public TO {roles.owner}")
        # On PostgreSQL before 15 everyone may create in public: the application must own nothing.
        await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        if me["rolsuper"]:
            await _give_everything_to_owner(conn, roles)
        return True
    finally:
        await conn.close()


async def grant(url: str, roles: DatabaseRoles) -> None:
    """Grant the application role what the service needs, and no more (see the module's table).

    Idempotent; run after every migration, so a table a later migration adds is covered.
    """
    conn = await _connect(url)
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {roles.owner}")
            for statement in _GRANTS:
                await conn.execute(statement.format(app=roles.app))
    finally:
        await conn.close()


async def _exists(conn: asyncpg.Connection, role: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role))


async def _create(conn: asyncpg.Connection, statement: str) -> None:
    """CREATE ROLE, tolerating a concurrent ``caremsg migrate`` that created it first."""
    with contextlib.suppress(asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
        await conn.execute(statement)


async def _check_app_role(conn: asyncpg.Connection, roles: DatabaseRoles) -> None:
    row = await conn.fetchrow(
        "SELECT rolsuper, rolcreaterole, rolbypassrls, pg_has_role(rolname, $2, 'MEMBER') AS member"
        " FROM pg_roles WHERE rolname = $1",
        roles.app,
        roles.owner,
    )
    unsafe = [name for name in ("rolsuper", "rolcreaterole", "rolbypassrls", "member") if row[name]]
    if unsafe:
        words = {
            "rolsuper": "is a superuser",
            "rolcreaterole": "has CREATEROLE",
            "rolbypassrls": "has BYPASSRLS",
            "member": f"is a member of {roles.owner}",
        }
        raise RoleSetupError(
            f"the application role {roles.app} {', '.join(words[u] for u in unsafe)}: "
            "it must be able to change nothing but rows"
        )


async def _give_everything_to_owner(conn: asyncpg.Connection, roles: DatabaseRoles) -> None:
    """Hand the owner role what an earlier deployment's login created (the schema's tables, views,
    free-standing sequences and functions), so that migrations run as the owner from now on and the
    application role owns nothing."""
    rows = await conn.fetch(
        """
        SELECT format('ALTER %s %I.%I OWNER TO %I',
                      CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                                     WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
                      n.nspname, c.relname, $1::text)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
          AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = $1)
          -- a serial's sequence follows its table
          AND NOT (c.relkind = 'S' AND EXISTS (
                SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')
                  AND d.refobjsubid > 0))
        UNION ALL
        SELECT format('ALTER FUNCTION %s OWNER TO %I', p.oid::regprocedure, $1::text)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.proowner <> (SELECT oid FROM pg_roles WHERE rolname = $1)
        """,
        roles.owner,
    )
    for (statement,) in rows:
        await conn.execute(statement)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
