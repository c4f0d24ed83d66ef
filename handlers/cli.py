"""The ``caremsg`` command line: serve, migrate, create-user, policy, audit, retention."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import socket
import sys
from collections.abc import Sequence

import structlog

from engine.model import Role
from handlers.cli_setup import database, load, migrate, settings_for
from handlers.logs import configure_logging
from handlers.settings import Settings

log = structlog.get_logger("caremsg.serve")


def _served_port(host: str, port: int) -> int:
    """Port 0 ("any free port") chosen now, so every worker and the emulator's webhooks use the same."""
    if port != 0:
        return port
    family, kind, _, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind) as probe:
        probe.bind(address)
        return int(probe.getsockname()[1])


def _refuse_a_broken_policy(settings: Settings) -> None:
    """Exit with every problem (file and line) instead of a traceback when the policy does not load."""
    from engine.policy import PolicyError
    from integrations.policy_files import load_policy, unreadable

    directory = settings.policy.path()
    try:
        load_policy(directory)
    except PolicyError as exc:
        problems = "\n".join(str(p) for p in exc.problems)
        sys.exit(f"caremsg: the policy in {directory} does not load (caremsg policy check):\n{problems}")
    except OSError as exc:
        sys.exit(f"caremsg: the policy in {directory} does not load: {unreadable(directory, exc)}")


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load(args)
    _refuse_a_broken_policy(settings)
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

            return serve_workers(resolved)  # the workers import the app; this parent does not
        from handlers.app import create_app, for_serving
        from handlers.serving import serve_until_signalled

        app = for_serving(create_app(resolved))
        asyncio.run(serve_until_signalled(app, host, port, idle_seconds=service.idle_connection_seconds))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from integrations.db.migrate import downgrade
    from integrations.db.roles import DatabaseRoles

    settings = settings_for(args)
    with database(settings, args.data_dir) as resolved:
        db = resolved.database
        if args.downgrade:
            downgrade(db.owner_url or db.url, args.downgrade, roles=DatabaseRoles(db.owner_role, db.app_role))
        else:
            migrate(resolved, args.revision)
    return 0


def cmd_create_user(args: argparse.Namespace) -> int:
    from engine.errors import CaremsgError

    settings = settings_for(args)
    password = os.environ.get("CAREMSG_NEW_USER_PASSWORD") or getpass.getpass(
        "Password for the new account: "
    )
    problem = _password_problem(settings, password, (args.email, args.first_name, args.last_name))
    if problem is not None:
        print(f"caremsg: {problem}", file=sys.stderr)
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


def _password_problem(settings: Settings, password: str, user_inputs: tuple[str, ...]) -> str | None:
    """The same password rules as the API's (README "Accounts")."""
    from integrations.passwords import ZxcvbnPasswordStrength

    minimum = settings.auth.password_min_length
    if len(password) < minimum:
        return f"the password must be at least {minimum} characters"
    strength = ZxcvbnPasswordStrength(min_score=settings.auth.password_min_score)
    weakness = asyncio.run(strength.weakness(password, user_inputs))
    if weakness is not None:
        return f"the password is {weakness} (common, breached or easy to guess); choose another"
    return None


async def _create_user(settings: Settings, args: argparse.Namespace, password: str) -> int:
    from engine.workflows.identity import CreateUser, bootstrap_user
    from integrations.db.resources import open_database, organization_id
    from integrations.security import Argon2Passwords

    db = settings.database
    async with open_database(
        db.url, pool_size=1, max_overflow=0, statement_timeout_ms=db.statement_timeout_ms
    ) as database:
        organization = args.organization
        if not organization.isdigit():
            found = await organization_id(database.sessions, organization, create=args.create_organization)
            if found is None:
                raise SystemExit(
                    f"caremsg: no organization named {organization!r} (add --create-organization)"
                )
            organization = str(found)
        user = await bootstrap_user(
            database.unit_of_work,
            Argon2Passwords(
                time_cost=settings.auth.argon2_time_cost, memory_kib=settings.auth.argon2_memory_kib
            ),
            CreateUser(
                args.email, password, args.first_name, args.last_name, Role(args.role), int(organization)
            ),
        )
        return user.id


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

    from handlers import cli_audit, cli_policy, cli_retention

    cli_policy.register(sub)
    cli_audit.register(sub)
    cli_retention.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
