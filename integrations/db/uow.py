"""The unit of work: one session and transaction per workflow, and the audit sink that rides on it.

Audit events are inserted in the same transaction as the action (fail closed: if they cannot be
written, nothing commits). If the transaction does not commit, the events are written again in a
transaction of their own, marked ``denied`` or ``failure``, so refusals and failures are on record.
Each event is also emitted as one structured log line (``caremsg.audit``) once it is durable.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from engine.audit import AuditEvent, DetailValue, Outcome
from engine.errors import CaremsgError, Forbidden, ServiceUnavailable
from integrations.db.attachments import SqlMessageAttachments
from integrations.db.audit import SqlAuditTrail
from integrations.db.audit_figures import SqlAuditFigures
from integrations.db.base import is_unavailable
from integrations.db.consents import (
    SqlBreakGlassRepository,
    SqlComplianceGroupRepository,
    SqlConsentLifecycle,
    SqlConsentRepository,
    SqlContactDirectory,
)
from integrations.db.deliveries import (
    SqlDeliveryRepository,
    SqlIdempotencyKeys,
    SqlOptOutRepository,
    SqlWebhookEventLog,
)
from integrations.db.identity import SqlOrganizationRepository, SqlUserRepository
from integrations.db.login_throttle import SqlLoginThrottleRepository
from integrations.db.messaging import SqlConversationRepository, SqlMessageRepository, SqlOutbox
from integrations.db.patients import SqlCareTeamRepository, SqlPatientRepository, SqlRelationshipFacts
from integrations.db.policy_proposals import SqlPolicyProposalRepository
from integrations.db.reads import SqlReadStateRepository
from integrations.db.recalls import SqlMessageRecalls
from integrations.db.retention import SqlLegalHoldRepository, SqlRetentionSweeps
from integrations.db.rosters import SqlAwayRepository, SqlOnCallRoutes, SqlRosterRepository

audit_log = structlog.get_logger("caremsg.audit")
log = structlog.get_logger("caremsg.db")


class BufferedAuditLog:
    """Collects a workflow's audit events until its transaction ends."""

    def __init__(self) -> None:
        self.pending: list[AuditEvent] = []

    def record(self, event: AuditEvent) -> None:
        self.pending.append(event)

    def amend_last(
        self,
        workflow: str,
        *,
        resource_id: str | None = None,
        patient_id: int | None = None,
        details: Mapping[str, DetailValue] | None = None,
    ) -> None:
        for index in range(len(self.pending) - 1, -1, -1):
            event = self.pending[index]
            # The decision's own record: not an event recorded beside it under the same workflow
            # (a disclosure, engine/workflows/messaging.py).
            if event.workflow == workflow and event.event == "decision":
                self.pending[index] = dataclasses.replace(
                    event,
                    resource_id=event.resource_id if resource_id is None else resource_id,
                    patient_id=event.patient_id if patient_id is None else patient_id,
                    details={**event.details, **(details or {})},
                )
                return


AUDIT_FIELDS = tuple(f.name for f in dataclasses.fields(AuditEvent))
#: The one column list of every statement that writes ``audit_events``: AuditEvent's fields, which
#: are the table's columns (tests/api/test_send_path.py checks it).
AUDIT_COLUMNS = ", ".join(AUDIT_FIELDS)


def audit_insert_sql(events: str) -> str:
    """The one INSERT of audit rows: ``events`` is a SQL expression of a JSON array whose objects
    carry AuditEvent's fields (see :func:`audit_json`, :func:`audit_object_sql`)."""
    return (
        f"INSERT INTO audit_events ({AUDIT_COLUMNS})"  # noqa: S608 - constants; values are bound
        f" SELECT {AUDIT_COLUMNS} FROM jsonb_populate_recordset(NULL::audit_events, {events})"
    )


def audit_json(events: Sequence[AuditEvent]) -> str:
    """Events as the JSON array :func:`audit_insert_sql` turns into ``audit_events`` rows."""
    return json.dumps([{**audit_row(e), "occurred_at": e.occurred_at.isoformat()} for e in events])


def audit_object_sql(**fields: str) -> str:
    """A ``jsonb_build_object`` of every AuditEvent field, for events built in SQL (the relay's):
    ``fields`` are SQL expressions; the rest take AuditEvent's defaults (now, no break-glass,
    empty details, NULL)."""
    defaults = {"occurred_at": "now()", "break_glass": "false", "details": "'{}'::jsonb"}
    unknown = set(fields) - set(AUDIT_FIELDS)
    if unknown:
        raise ValueError(f"not audit_events columns: {sorted(unknown)}")
    values = {**defaults, **fields}
    return "jsonb_build_object(" + ", ".join(f"'{f}', {values.get(f, 'NULL')}" for f in AUDIT_FIELDS) + ")"


def audit_row(event: AuditEvent) -> dict[str, Any]:
    """The event as an ``audit_events`` row (shallow: ``dataclasses.asdict`` deep-copies, and this
    runs for every event of every request)."""
    values = {name: getattr(event, name) for name in AUDIT_FIELDS}
    values["details"] = dict(event.details)
    return values


class AuditSink(Protocol):
    """Where a unit of work writes its audit rows, inside the transaction it is given."""

    async def write(self, session: AsyncSession, rows: list[dict[str, Any]]) -> None: ...


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable in an audit row: {type(value).__name__}")


_INSERT_AUDIT = text(audit_insert_sql("CAST(:events AS jsonb)"))


class PostgresAuditSink:
    """The durable sink: the rows go into ``audit_events`` in the caller's transaction.

    The insert also takes, by trigger, the shared lock that lets the chain sealer know which ids
    are final (migration 0006, integrations/audit_sealer.py): nothing to do here for it.
    """

    async def write(self, session: AsyncSession, rows: list[dict[str, Any]]) -> None:
        await session.execute(_INSERT_AUDIT, {"events": json.dumps(rows, default=_iso)})


class DiscardingAuditSink:
    """Writes nothing. Only for measuring what durable auditing costs (bench/audited_reads.py)."""

    async def write(self, session: AsyncSession, rows: list[dict[str, Any]]) -> None:
        return None


def emit_audit_log(events: Sequence[AuditEvent]) -> None:
    if not audit_log.is_enabled_for(logging.INFO):
        return
    for event in events:
        fields = audit_row(event)
        fields["occurred_at"] = event.occurred_at.isoformat()
        fields["audit_event"] = fields.pop("event")
        audit_log.info("audit", **fields)


class SqlUnitOfWork:
    """One session and transaction per workflow: the one class that satisfies every family's unit of
    work (engine/ports/units.py), so whichever view a workflow has, it runs in one transaction."""

    session: AsyncSession
    audit: BufferedAuditLog
    users: SqlUserRepository
    organizations: SqlOrganizationRepository
    compliance_groups: SqlComplianceGroupRepository
    patients: SqlPatientRepository
    care_teams: SqlCareTeamRepository
    consents: SqlConsentRepository
    conversations: SqlConversationRepository
    messages: SqlMessageRepository
    outbox: SqlOutbox
    facts: SqlRelationshipFacts
    break_glass: SqlBreakGlassRepository
    consent_lifecycle: SqlConsentLifecycle
    deliveries: SqlDeliveryRepository
    opt_outs: SqlOptOutRepository
    webhook_events: SqlWebhookEventLog
    idempotency_keys: SqlIdempotencyKeys
    login_throttle: SqlLoginThrottleRepository
    contacts: SqlContactDirectory
    rosters: SqlRosterRepository
    away: SqlAwayRepository
    on_call_routes: SqlOnCallRoutes

    audit_trail: SqlAuditTrail
    policy_proposals: SqlPolicyProposalRepository
    audit_figures: SqlAuditFigures

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        sink: AuditSink | None = None,
        *,
        gate: asyncio.Semaphore | None = None,
    ) -> None:
        """``gate``, shared by the service's units of work, admits them first come, first served
        (at most its size at once): SQLAlchemy's pool, like asyncpg's, lets a newcomer take a
        returned connection ahead of the waiters, which under load sends a few requests to the
        back again and again (see integrations/db/send_uow.py, SendPool)."""
        self._sessions = sessions
        self._committed = False
        self._sink = sink or PostgresAuditSink()
        self._gate = gate

    async def __aenter__(self) -> Self:
        if self._gate is not None:
            await self._gate.acquire()
        self.session = self._sessions()
        self.audit = BufferedAuditLog()
        s = self.session
        self.users = SqlUserRepository(s)
        self.organizations = SqlOrganizationRepository(s)
        self.compliance_groups = SqlComplianceGroupRepository(s)
        self.patients = SqlPatientRepository(s)
        self.care_teams = SqlCareTeamRepository(s)
        self.consents = SqlConsentRepository(s)
        self.conversations = SqlConversationRepository(s)
        self.messages = SqlMessageRepository(s)
        self.recalls = SqlMessageRecalls(s)
        self.retention = SqlRetentionSweeps(s)
        self.legal_holds = SqlLegalHoldRepository(s)
        self.attachments = SqlMessageAttachments(s)
        self.outbox = SqlOutbox(s)
        self.facts = SqlRelationshipFacts(s)
        self.break_glass = SqlBreakGlassRepository(s)
        self.consent_lifecycle = SqlConsentLifecycle(s)
        self.deliveries = SqlDeliveryRepository(s)
        self.reads = SqlReadStateRepository(s)
        self.opt_outs = SqlOptOutRepository(s)
        self.webhook_events = SqlWebhookEventLog(s)
        self.idempotency_keys = SqlIdempotencyKeys(s)
        self.login_throttle = SqlLoginThrottleRepository(s)
        self.contacts = SqlContactDirectory(s)
        self.rosters = SqlRosterRepository(s)
        self.away = SqlAwayRepository(s)
        self.on_call_routes = SqlOnCallRoutes(s)
        self.audit_trail = SqlAuditTrail(s)
        self.policy_proposals = SqlPolicyProposalRepository(s)
        self.audit_figures = SqlAuditFigures(s)
        return self

    async def commit(self) -> None:
        events = list(self.audit.pending)
        if events:
            try:
                await self._sink.write(self.session, [audit_row(e) for e in events])
            except Exception as error:
                # Fail closed: no audit record, no action. The caller's transaction rolls back.
                raise audit_not_stored(events, error) from error
        await self.session.commit()
        self._committed = True
        self.audit.pending.clear()
        emit_audit_log(events)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            try:
                if not self._committed:
                    await self.session.rollback()
            except Exception as rollback_error:  # the connection may be gone; the original error matters more
                log.warning("db.rollback_failed", error=type(rollback_error).__name__)
            finally:
                await self.session.close()
        finally:
            if self._gate is not None:
                self._gate.release()
        if not self._committed and self.audit.pending:
            await self._record_unfinished(exc)
        if exc is not None and not isinstance(exc, CaremsgError) and is_unavailable(exc):
            raise ServiceUnavailable.database() from exc

    async def _record_unfinished(self, exc: BaseException | None) -> None:
        events = unfinished(self.audit.pending, exc)
        self.audit.pending.clear()
        try:
            async with self._sessions() as session, session.begin():
                await self._sink.write(session, [audit_row(e) for e in events])
        except Exception as error:
            log_undurable(events, error)
            return
        emit_audit_log(events)


def unfinished(pending: Sequence[AuditEvent], exc: BaseException | None) -> list[AuditEvent]:
    """The events of a workflow that did not commit, ended ``denied`` (a refusal) or ``failure``."""
    outcome: Outcome
    if isinstance(exc, Forbidden):
        outcome, cause = "denied", exc.decision.reason
    elif isinstance(exc, CaremsgError) and exc.denial is not None:
        # A denial answered as not found: the other events end as that answer, as they would for an
        # id that does not exist; the denial's own record (hidden from the actor's organization)
        # keeps the real reason.
        outcome, cause = "failure", exc.code
    elif isinstance(exc, CaremsgError):
        outcome, cause = "failure", exc.code
    else:
        outcome, cause = "failure", "error" if exc is not None else "not_committed"
    return [e.ended(outcome, cause) for e in pending]


def audit_not_stored(events: Sequence[AuditEvent], error: BaseException) -> ServiceUnavailable:
    """What a workflow whose audit record the database refused raises (fail closed: nothing was done
    or disclosed), logged without the record's content."""
    log.error("audit.write_failed", error=type(error).__name__, events=len(events))
    return ServiceUnavailable(
        "The audit record could not be written, so nothing was done; try again shortly."
    )


def log_undurable(events: Sequence[AuditEvent], error: BaseException) -> None:
    """The database is unreachable: the log line is then the only trace, and says so."""
    log.error("audit.write_failed", error=type(error).__name__, events=len(events))
    for e in events:
        audit_log.error(
            "audit",
            durable=False,
            **{k: v for k, v in audit_row(e).items() if k != "event"},
            audit_event=e.event,
        )
