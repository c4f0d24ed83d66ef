"""The database as the composition root opens it, and the few things outside a workflow that read or
write it: the development organization at start-up, an organization looked up by name for
``caremsg create-user``, and the probes behind ``GET /ready`` and ``GET /metrics``.

:class:`Database` is one resource: the SQLAlchemy engine and session factory every unit of work uses,
and the asyncpg pool of the two busiest paths, sending (integrations/db/send_uow.py) and reading a
patient (integrations/db/patient_reads.py). ``handlers/`` holds it as an
opaque value and hands it on: no handler, CLI command or middleware runs SQL or opens a session.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from integrations.consent_sync import asyncpg_connect_args
from integrations.db import array_codecs, operations
from integrations.db.audit_batch import AuditGroupCommit

# What the request middleware answers 503 for: the database cannot be reached right now.
from integrations.db.base import is_unavailable as is_unavailable
from integrations.db.columns import table_of
from integrations.db.patient_reads import PgPatientReadUnitOfWork
from integrations.db.send_uow import PgSendUnitOfWork, SendPool, create_send_pool
from integrations.db.tables import OrganizationRow
from integrations.db.uow import SqlUnitOfWork

#: The session factory every SQL unit of work opens its one session from.
Sessions = async_sessionmaker[AsyncSession]

#: How long one scrape or readiness check may wait for the database.
PROBE_TIMEOUT_SECONDS = 2.0


def create_engine(url: str, *, pool_size: int, max_overflow: int, statement_timeout_ms: int) -> AsyncEngine:
    """The service's SQLAlchemy engine: a bounded pool, every statement under ``statement_timeout_ms``."""
    if not url:
        raise ValueError("database.url is empty: resolve the embedded server first (caremsg serve does)")
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        # No pre-ping (a round trip per checkout): a connection a PostgreSQL restart killed fails its
        # request with 503, and SQLAlchemy then invalidates the whole pool, so the next one works.
        pool_recycle=1800,
        # A statement's parameters are patients' names, numbers and messages: never in an error's
        # text, which reaches the logs with its traceback (handlers/logs.py masks them there too).
        hide_parameters=True,
        connect_args={"server_settings": {"statement_timeout": str(statement_timeout_ms)}, "timeout": 5},
    )
    # Each new connection starts with the built-in arrays' codecs (integrations/db/array_codecs.py).
    array_codecs.prime_each_connection(engine)
    return engine


@dataclass(frozen=True)
class Login:
    """Who a database URL logs in as (the password stays out of ``repr``)."""

    username: str | None
    password: str | None = field(default=None, repr=False)


def login_of(url: str) -> Login:
    """The user name and password a ``postgresql+asyncpg://`` URL carries."""
    parsed = make_url(url)
    return Login(parsed.username, None if parsed.password is None else str(parsed.password))


@dataclass(frozen=True)
class Database:
    """The open database: what the units of work, the relay, the sealer and the probes run on."""

    engine: AsyncEngine
    sessions: Sessions
    #: The send path's pool, which patient reads share: no SQLAlchemy on the busiest paths.
    send_pool: SendPool
    #: Workflows enter the general pool in arrival order, at most as many at once as it has
    #: connections (SqlUnitOfWork), so they seldom wait in the pool's own, unfair queue.
    uow_gate: asyncio.Semaphore
    #: Concurrent patient reads' audit records, stored by one statement (integrations/db/audit_batch.py).
    audit_group_commit: AuditGroupCommit

    def unit_of_work(self) -> SqlUnitOfWork:
        """A new unit of work: one session, one transaction, committed only when the workflow says so."""
        return SqlUnitOfWork(self.sessions, gate=self.uow_gate)

    def send_unit_of_work(self) -> PgSendUnitOfWork:
        """A new unit of work for the send path, on its own asyncpg pool."""
        return PgSendUnitOfWork(self.send_pool)

    def patient_read_unit_of_work(self) -> PgPatientReadUnitOfWork:
        """A new unit of work for reading one patient, on the send path's asyncpg pool."""
        return PgPatientReadUnitOfWork(self.send_pool, self.audit_group_commit)


@asynccontextmanager
async def open_database(
    url: str, *, pool_size: int, max_overflow: int, statement_timeout_ms: int
) -> AsyncIterator[Database]:
    """Open the engine and the send pool; close both on the way out (the pool first)."""
    engine = create_engine(
        url, pool_size=pool_size, max_overflow=max_overflow, statement_timeout_ms=statement_timeout_ms
    )
    try:
        send_pool = await create_send_pool(
            asyncpg_connect_args(url), max_size=pool_size, statement_timeout_ms=statement_timeout_ms
        )
        try:
            yield Database(
                engine,
                async_sessionmaker(engine, expire_on_commit=False),
                send_pool,
                asyncio.Semaphore(pool_size + max_overflow),
                AuditGroupCommit(send_pool),
            )
        finally:
            await send_pool.close()
    finally:
        await engine.dispose()


_organizations = table_of(OrganizationRow)


async def ensure_organization(sessions: Sessions, name: str, *, self_registration: bool) -> None:
    """Create the organization ``name`` unless one by that name exists (then leave it as it is)."""
    statement = (
        pg_insert(_organizations)
        .values(name=name, self_registration=self_registration)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    async with sessions() as session, session.begin():
        await session.execute(statement)


async def organization_id(sessions: Sessions, name: str, *, create: bool) -> int | None:
    """The id of the organization named ``name`` (created first when ``create``), or None."""
    if create:
        await ensure_organization(sessions, name, self_registration=False)
    async with sessions() as session:
        found = await session.scalar(select(_organizations.c.id).where(_organizations.c.name == name))
    return None if found is None else int(found)


# --- what operators watch ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredState:
    """The gauges of what is stored, read in one round of small queries (integrations/db/operations.py)."""

    outbox: operations.Backlog
    deliveries: dict[str, int]
    sealer_lag: operations.Backlog
    consent_log: operations.ConsentLogHead


@dataclass(frozen=True)
class SchemaState:
    """What readiness needs from the database: its migrations, and the sealer's lag when it runs."""

    revisions: frozenset[str]
    sealer_lag: operations.Backlog | None


class DatabaseProbe:
    """Reads for ``/metrics`` and ``/ready``, each bounded by :data:`PROBE_TIMEOUT_SECONDS`.

    A probe that cannot reach the database raises (TimeoutError, OSError or the driver's error): the
    caller reports that as the failed check.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def stored_state(self) -> StoredState:
        """Outbox backlog, deliveries by state, sealer lag, consent log head."""
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS), self._engine.connect() as conn:
            return StoredState(
                await operations.outbox_backlog(conn),
                await operations.deliveries_by_state(conn),
                await operations.sealer_lag(conn),
                await operations.consent_log_head(conn),
            )

    async def schema_state(self, *, sealer_enabled: bool) -> SchemaState:
        """The schema revisions, and the sealer's lag when the sealer is enabled."""
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS), self._engine.connect() as conn:
            revisions = await operations.schema_revisions(conn)
            lag = await operations.sealer_lag(conn) if sealer_enabled else None
        return SchemaState(revisions, lag)
