"""Shared fixtures: a real PostgreSQL (DATABASE_URL, else an embedded throwaway server) with a fresh
database per test session, migrated by Alembic exactly as ``caremsg migrate`` does it.

The role split holds in tests as in production: the migrations run as an owner role, and the app
under test logs in as an application role that owns nothing (integrations/db/roles.py). Roles are
cluster-wide, so each test database has roles named after it, dropped with it. ``database_url``
(and the ``db`` connection) stay the server's administrator, for setting up and asserting.
The helpers behind these fixtures live in tests/support/database.py.

Under pytest-xdist (``./run.sh test`` runs one worker per core and one more) every worker is a test
session of its own, with its own database; without DATABASE_URL the controller starts one embedded
server before the workers start, and they inherit its URL. The reference model's figures are
gathered from the workers and printed by the controller (see the end of this module)."""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from handlers.logs import configure_logging
from handlers.settings import Settings, load_settings
from integrations.db import array_codecs
from tests.support.database import (
    admin,
    app_url,
    asyncpg_dsn,
    database_settings,
    fresh_database,
    roles_of,
)

# Older names, for tests written before tests/support existed: import from tests.support.database.
_asyncpg_dsn, _admin = asyncpg_dsn, admin
__all__ = ["_admin", "_asyncpg_dsn", "app_url", "database_settings", "fresh_database", "roles_of"]


#: The modules that take longest (summed test time, slowest first), measured on 2026-12-06 with
#: ``--durations=0`` (two full runs, averaged). They run first, in this order, and every other module
#: after them in collection order: under ``--dist loadfile`` a module runs whole on one worker, so a
#: long module dealt out last keeps one worker busy while the others have nothing left to do. Update it
#: when a module's time changes a lot; a name missing here only costs time, never a test.
SLOWEST_FIRST = (
    "tests/refmodel/test_reference_model.py",
    "tests/api/test_schemathesis.py",
    "tests/api/test_serve.py",
    "tests/console/test_console_browser.py",
    "tests/api/test_schemathesis_clinical.py",
    "tests/integration/test_outage.py",
    "tests/integration/test_relay.py",
    "tests/api/test_cross_tenant_matrix.py",
    "tests/integration/test_audit_chain.py",
    "tests/api/test_audit_completeness.py",
    "tests/integration/test_postgres_restart.py",
    "tests/api/test_idempotency.py",
    "tests/integration/test_database_roles.py",
    "tests/api/test_message_recall.py",
    "tests/console/test_console_audit_chain.py",
    "tests/refmodel/test_defects_put_back.py",
    "tests/api/test_conversations.py",
    "tests/api/test_generated_client.py",
    "tests/console/test_console_policy_changes_browser.py",
    "tests/api/test_care_teams.py",
    "tests/api/test_urgent_messages.py",
    "tests/api/test_policy_reload.py",
)


def pytest_configure(config: pytest.Config) -> None:
    """An xdist controller without DATABASE_URL starts one embedded server for all its workers.

    pytest-xdist's loadfile deals modules out by number of tests, most first, which puts the long
    modules with few tests (serve, restarts, outages) last; it deals them in collection order instead,
    which ``pytest_collection_modifyitems`` sorts slowest first (``SLOWEST_FIRST``)."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False
    # The suite logs as the service does (handlers/logs.py: JSON lines, plain tracebacks, the PHI
    # scrubber). structlog's own default renders an exception with rich's traceback and its locals:
    # ~2 s of CPU for one asyncio + SQLAlchemy traceback, 9 of which (a PostgreSQL restart) cost
    # 6 % of the suite's CPU; and it has no scrubber. Tests that need another setup make their own.
    configure_logging(fmt="json", level="info", cache_loggers=False)
    # A test process holds a few million long-lived objects (every module's imports, hypothesis,
    # schemathesis' cases, the reports): with CPython's defaults (a collection per 700 net
    # allocations, a full one per 100 of those) the collector took ~4.5 s of each worker's CPU,
    # full collections growing to 0.35 s each. Collecting 70 times less often took ~2.2 s.
    gc.set_threshold(50_000, 20, 100)
    if os.environ.get("DATABASE_URL") or hasattr(config, "workerinput"):
        return
    if not getattr(config.option, "numprocesses", None):
        return  # a run without workers starts its server when a test first needs one (below)
    from integrations.db.embedded import start_embedded_postgres

    tmp = tempfile.TemporaryDirectory(prefix="caremsg-pg-")
    server = start_embedded_postgres(Path(tmp.name) / "pgdata", temporary=True)
    os.environ["DATABASE_URL"] = server.url  # the workers, started after this, inherit it

    def stop() -> None:
        os.environ.pop("DATABASE_URL", None)
        server.stop()
        tmp.cleanup()

    config.add_cleanup(stop)


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection built (every module imported, every test item) lives until the process ends:
    frozen, the collector never walks it again (a full collection walked it each time, and pytest
    collects twice more at the end)."""
    gc.freeze()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slowest modules first (``SLOWEST_FIRST``; a stable sort, so each module's tests keep their
    order), every worker alike, as xdist requires."""
    rank = {path: index for index, path in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.partition("::")[0], len(rank)))


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A PostgreSQL server: DATABASE_URL when set (CI may point at one), else an embedded one."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    from integrations.db.embedded import start_embedded_postgres

    with tempfile.TemporaryDirectory(prefix="caremsg-pg-") as tmp:
        server = start_embedded_postgres(Path(tmp) / "pgdata", temporary=True)
        try:
            yield server.url
        finally:
            server.stop()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A fresh database for this test session, migrated to head; dropped afterwards."""
    with fresh_database(server_url, "caremsg_test") as url:
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    """The test settings (frozen): session-wide, so an app built once can serve many tests."""
    return app_settings(database_url)


def app_settings(database_url: str) -> Settings:
    """The settings every test app runs with (also for apps a module-scoped fixture serves)."""
    return load_settings(
        env={},
        service={"environment": "development", "log_format": "json"},
        # Hashing strength is not under test. The account check keeps its production cache (2 s):
        # an account's sessions ended through an app end there at once (test_accounts.py), and a
        # check per request was 7 % of an API test's CPU.
        # Every test logs in and registers from 127.0.0.1 into one database per session: the
        # address back-off, the registrations' pace and the rate limits are tested with their own
        # settings (tests/api/test_login_throttle.py, test_registration_pace.py,
        # test_rate_limits.py), not by the suite's own traffic.
        auth={
            "argon2_time_cost": 1,
            "argon2_memory_kib": 64,
            "login_address_free_failures": 100_000,
            "registration_source_free": 100_000,
        },
        ratelimit={
            "per_address_per_second": 1e6,
            "per_address_burst": 1_000_000,
            "per_token_per_second": 1e6,
            "per_token_burst": 1_000_000,
        },
        database={**database_settings(database_url), "pool_size": 5, "max_overflow": 5},
        sendbird={
            "app_id": "",
            "api_token": "",
            "timeout_seconds": 2.0,
            "write_per_second": 1000,
            "get_per_second": 1000,
        },
        # Workflows wake the relay, and it wakes for its own retries: its poll is only a fallback
        # (another instance's work), and a 50 ms one cost each idle app 7 % of a core.
        outbox={"poll_interval_seconds": 0.5, "base_backoff_seconds": 0.05, "max_backoff_seconds": 0.5},
        messaging={"sms_per_second": 1000},
        # Expired consents' grants are swept soon after the expiry, so tests need not wait long.
        consents={"expiry_sweep_interval_seconds": 0.5},
    )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def db_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """Connections for ``db``: a new backend for each of ~300 tests cost ~30 ms and PostgreSQL a
    fork each; the pool hands one back reset (no transaction, locks, listeners or settings left)."""
    pool = await asyncpg.create_pool(  # type: ignore[call-overload]
        **asyncpg_dsn(database_url), min_size=0, max_size=4, init=array_codecs.prime
    )
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def db(db_pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the test database (the server's administrator), for assertions on
    what was stored."""
    async with db_pool.acquire() as conn:
        yield conn


# --- the reference model's figures (tests/refmodel), from every worker -------------------------------
# Here, not in tests/refmodel/conftest.py: an xdist controller collects nothing, so only this conftest
# is loaded there.


def _refmodel_tallies() -> dict[str, Any]:
    driver = sys.modules.get("tests.refmodel.driver")
    return driver.TALLIES if driver is not None else {}  # type: ignore[no-any-return]


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker hands its figures to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["refmodel_tallies"] = {
            name: dataclasses.asdict(tally) for name, tally in _refmodel_tallies().items()
        }


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """The controller adds up what each worker checked (a test's examples all run on one worker)."""
    figures = getattr(node, "workeroutput", {}).get("refmodel_tallies") or {}
    if not figures:
        return
    from tests.refmodel.driver import TALLIES, Tally

    for name, fig in figures.items():
        tally = TALLIES.setdefault(name, Tally())
        for f in dataclasses.fields(tally):
            setattr(tally, f.name, _added(getattr(tally, f.name), fig[f.name]))


def _added(mine: Any, theirs: Any) -> Any:
    """Counts added up: numbers, lists of numbers element by element, dicts key by key."""
    if isinstance(mine, dict):
        merged = dict(mine)
        for key, value in theirs.items():
            merged[key] = _added(mine[key], value) if key in mine else value
        return merged
    if isinstance(mine, list):
        return [a + b for a, b in zip(mine, theirs, strict=True)]
    return mine + theirs


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """The reference model's figures at the end of the run: actions checked, known defects met."""
    for name, tally in _refmodel_tallies().items():
        known = ", ".join(f"defect {d}: {n}" for d, n in sorted(tally.known.items())) or "none"
        terminalreporter.write_line(
            f"reference model, {name}: {tally.scenarios} scenarios, {tally.actions} actions checked"
            f" ({tally.allowed} allowed), disagreements explained by a known defect: {known}"
        )
        per = ", ".join(f"{wf} {a}/{a + r}" for wf, (a, r) in sorted(tally.by_workflow.items()))
        terminalreporter.write_line(f"  allowed/checked per workflow: {per}")
