"""Running Alembic from code, so ``caremsg migrate`` and ``caremsg serve`` need no alembic.ini."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "heads") -> None:
    """Apply migrations up to ``revision``. Blocking: call it off the event loop (see ``upgrade_async``)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "heads") -> None:
    # env.py runs its own event loop (asyncio.run), so it needs a thread without one.
    await asyncio.to_thread(upgrade, url, revision)


def head_revisions() -> frozenset[str]:
    """The revisions ``caremsg migrate`` would bring a database to (read from the migration files)."""
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(alembic_config("")).get_heads())
