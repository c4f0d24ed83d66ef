"""The ``caremsg`` command line: serve, migrate, create-user, policy check."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import structlog
from aiohttp import web

from engine.model import Role
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
    from sqlalchemy.engine import make_url

    from integrations.db.migrate import upgrade
    from integrations.db.roles import DatabaseRoles, RoleSetupError

    db = settings.database
    service_login = make_url(db.url)
    password = service_login.password
    roles = DatabaseRoles(db.owner_role, db.app_role, str(password) if password else None)
    try:
        upgrade(db.owner_url or db.url, revision, roles=roles)
    except RoleSetupError as exc:
        sys.exit(f"caremsg: database roles: {exc}")
    if service_login.username != db.app_role:
        # Works, but whatever that login may do to the audit trail, the service may do too.
        log.warning(
            "database.service_not_application_role", login=service_login.username, app_role=db.app_role
        )


def _load(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(Path(args.config) if args.config else None)
    except SettingsError as exc:
        sys.exit(f"caremsg: configuration error: {exc}")


def _settings(args: argparse.Namespace) -> Settings:
    settings = _load(args)
    configure_logging(fmt=settings.service.log_format, level=settings.service.log_level)
    return settings


def _served_port(host: str, port: int) -> int:
    """Port 0 ("any free port") chosen now, so every worker and the emulator's webhooks use the same."""
    if port != 0:
        return port
    family, kind, _, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind) as probe:
        probe.bind(address)
        return int(probe.getsockname()[1])


def cmd_serve(args: argparse.Namespace) -> int:
    from handlers.app import create_app

    settings = _load(args)
    service = settings.service
    workers = args.workers if args.workers is not None else service.workers
    configure_logging(fmt=service.log_format, level=service.log_level, with_pid=workers > 1)
    host = args.host or service.host
    port = _served_port(host, args.port if args.port is not None else service.port)
    # The app reads service.host/port (where the emulator's webhooks go): make them the address served.
    served = service.model_copy(update={"host": host, "port": port, "workers": workers})
    settings = settings.model_copy(update={"service": served})
    log.info("serve.starting", host=host, port=port, workers=workers)
    with database(settings, args.data_dir) as resolved:
        migrate(resolved)
        if workers > 1:
            from handlers.workers import serve_workers

            return serve_workers(resolved)
        app = create_app(resolved)
        web.run_app(app, host=host, port=port, access_log=None, print=None)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from integrations.db.migrate import downgrade
    from integrations.db.roles import DatabaseRoles

    settings = _settings(args)
    with database(settings, args.data_dir) as resolved:
        db = resolved.database
        if args.downgrade:
            downgrade(db.owner_url or db.url, args.downgrade, roles=DatabaseRoles(db.owner_role, db.app_role))
        else:
            migrate(resolved, args.revision)
    return 0


def cmd_create_user(args: argparse.Namespace) -> int:
    from engine.errors import CaremsgError

    settings = _settings(args)
    password = os.environ.get("CAREMSG_NEW_USER_PASSWORD") or getpass.getpass(
        "Password for the new account: "
    )
    if len(password) < 8:
        print("caremsg: the password must be at least 8 characters", file=sys.stderr)
        return 2
    with database(settings, args.data_dir) as resolved:
        migrate(resolved)
        try:
            user = asyncio.run(_create_user(resolved, args, password))
        except CaremsgError as exc:
            print(f"caremsg: {exc.code}: {exc.detail}", file=sys.stderr)
            return 1
    print(f"created user {user} ({args.role}) in organization {args.organization}")
    return 0


async def _create_user(settings: Settings, args: argparse.Namespace, password: str) -> int:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from engine.workflows.identity import CreateUser, bootstrap_user
    from handlers.app import create_engine
    from integrations.db.uow import SqlUnitOfWork
    from integrations.security import Argon2Passwords

    engine = create_engine(settings)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        organization = args.organization
        if not organization.isdigit():
            async with sessions() as session, session.begin():
                if args.create_organization:
                    await session.execute(
                        text("INSERT INTO organizations (name) VALUES (:n) ON CONFLICT (name) DO NOTHING"),
                        {"n": organization},
                    )
                row = (
                    await session.execute(
                        text("SELECT id FROM organizations WHERE name = :n"), {"n": organization}
                    )
                ).one_or_none()
            if row is None:
                raise SystemExit(
                    f"caremsg: no organization named {organization!r} (add --create-organization)"
                )
            organization = str(row.id)
        user = await bootstrap_user(
            lambda: SqlUnitOfWork(sessions),
            Argon2Passwords(
                time_cost=settings.auth.argon2_time_cost, memory_kib=settings.auth.argon2_memory_kib
            ),
            CreateUser(
                args.email, password, args.first_name, args.last_name, Role(args.role), int(organization)
            ),
        )
        return user.id
    finally:
        await engine.dispose()


def _at_least_one(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number, at least 1: {value!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="caremsg", description="Secure messaging for healthcare teams.")
    parser.add_argument("--config", help="config.toml to read (default: ./config.toml, else the project's)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve", help="run the service (embedded PostgreSQL and Sendbird emulator by default)"
    )
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--workers",
        type=_at_least_one,
        help="processes serving the port together (default service.workers, 1); about one per core",
    )
    serve.add_argument("--data-dir", help="embedded PostgreSQL data directory (default from config.toml)")
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--revision", default="heads")
    migrate.add_argument("--downgrade", metavar="REVISION")
    migrate.add_argument("--data-dir")
    migrate.set_defaults(func=cmd_migrate)

    create = sub.add_parser(
        "create-user",
        help="create an account of any role (the way to the first admin); "
        "password from CAREMSG_NEW_USER_PASSWORD or a prompt",
    )
    create.add_argument("--email", required=True)
    create.add_argument("--first-name", required=True)
    create.add_argument("--last-name", required=True)
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--organization", required=True, help="organization id or name")
    create.add_argument("--create-organization", action="store_true", help="create the named organization")
    create.add_argument("--data-dir")
    create.set_defaults(func=cmd_create_user)

    from handlers import cli_audit, cli_policy

    cli_policy.register(sub)
    cli_audit.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
