"""Running Alembic from code, so ``caremsg migrate`` and ``caremsg serve`` need no alembic.ini.

With :class:`~integrations.db.roles.DatabaseRoles`, migrating is three steps: create or check the
owner and application roles, run the migrations as the owner (``SET ROLE``), grant the application
role its privileges (``integrations/db/roles.py`` says which). Without, the migrations run as
whoever the URL logs in as (a scratch database in a test).
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

from alembic import command
from alembic.config import Config

from integrations.db.roles import DatabaseRoles, grant, provision

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str, owner_role: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.attributes["url"] = url
    config.attributes["owner_role"] = owner_role
    return config


def upgrade(url: str, revision: str = "heads", *, roles: DatabaseRoles | None = None) -> None:
    """Apply migrations up to ``revision`` (as ``roles.owner``, granting ``roles.app`` afterwards).

    Blocking: call it off the event loop (see ``upgrade_async``). Raises
    :class:`~integrations.db.roles.RoleSetupError` when the roles are missing and cannot be created.
    """
    if roles is None:
        command.upgrade(alembic_config(url), revision)
        return
    if not asyncio.run(provision(url, roles)):
        # Logged in as the application role: it may read the revision, not change the schema, so
        # this only succeeds when the schema is already at ``revision``.
        command.upgrade(alembic_config(url), revision)
        return
    command.upgrade(alembic_config(url, roles.owner), revision)
    asyncio.run(grant(url, roles))


def downgrade(url: str, revision: str, *, roles: DatabaseRoles | None = None) -> None:
    command.downgrade(alembic_config(url, roles.owner if roles else None), revision)


async def upgrade_async(url: str, revision: str = "heads", *, roles: DatabaseRoles | None = None) -> None:
    # env.py runs its own event loop (asyncio.run), so it needs a thread without one.
    await asyncio.to_thread(upgrade, url, revision, roles=roles)


@functools.cache
def head_revisions() -> frozenset[str]:
    """The revisions ``caremsg migrate`` would bring a database to (read from the migration files,
    once per process: every app start asks, and reading them costs ~50 ms)."""
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(alembic_config("")).get_heads())
