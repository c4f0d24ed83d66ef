"""What every ``caremsg`` command shares: the settings (``--config``), a database to work on (the
configured one, or an embedded server's) and the migrations. ``handlers/cli.py`` builds the parser;
``cli_audit`` and ``cli_policy`` add their commands to it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

from handlers.logs import configure_logging
from handlers.settings import Settings, SettingsError, load_settings

log = structlog.get_logger("caremsg.serve")


@contextmanager
def database(settings: Settings, data_dir: str | None = None) -> Iterator[Settings]:
    """Yield settings with a usable database URL: the configured one, or an embedded server's.

    On the embedded server the same role split holds as anywhere: the service logs in as the
    application role, and migrations log in as the server's superuser (``owner_url``), which creates
    both roles (integrations/db/roles.py).
    """
    if settings.database.url:
        yield settings
        return
    from integrations.db.embedded import start_embedded_postgres

    server = start_embedded_postgres(Path(data_dir or settings.database.data_dir))
    try:
        db = settings.database
        urls = {"url": server.url_as(db.app_role), "owner_url": server.url}
        yield settings.model_copy(update={"database": db.model_copy(update=urls)})
    finally:
        server.stop()


def migrate(settings: Settings, revision: str = "heads") -> None:
    """``caremsg migrate``: create or check the roles, migrate as the owner, grant the application."""
    from integrations.db.migrate import upgrade
    from integrations.db.resources import login_of
    from integrations.db.roles import DatabaseRoles, RoleSetupError

    db = settings.database
    service_login = login_of(db.url)
    roles = DatabaseRoles(db.owner_role, db.app_role, service_login.password or None)
    try:
        upgrade(db.owner_url or db.url, revision, roles=roles)
    except RoleSetupError as exc:
        sys.exit(f"caremsg: database roles: {exc}")
    if service_login.username != db.app_role:
        # Works, but whatever that login may do to the audit trail, the service may do too.
        log.warning(
            "database.service_not_application_role", login=service_login.username, app_role=db.app_role
        )


def load(args: argparse.Namespace) -> Settings:
    """The settings ``--config`` names (or the defaults); a bad value exits naming the key."""
    try:
        return load_settings(Path(args.config) if args.config else None)
    except SettingsError as exc:
        sys.exit(f"caremsg: configuration error: {exc}")


def settings_for(args: argparse.Namespace) -> Settings:
    """The settings, with logging configured as they say: what every command but ``serve`` starts with."""
    settings = load(args)
    configure_logging(fmt=settings.service.log_format, level=settings.service.log_level)
    return settings
