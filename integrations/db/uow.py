"""The unit of work: one session and transaction per workflow, and the audit sink that rides on it.

Audit events are inserted in the same transaction as the action (fail closed: if they cannot be
written, nothing commits). If the transaction does not commit, the events are written again in a
transaction of their own, marked ``denied`` or ``failure``, so refusals and failures are on record.
Each event is also emitted as one structured log line (``caremsg.audit``) once it is durable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import structlog
from sqlalchemy import insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from engine.audit import AuditEvent, Outcome
from engine.errors import CaremsgError, Forbidden, ServiceUnavailable
from integrations.db.repositories import (
    SqlCareTeamRepository,
    SqlComplianceGroupRepository,
    SqlConsentRepository,
    SqlConversationRepository,
    SqlMessageRepository,
    SqlOrganizationRepository,
    SqlOutbox,
    SqlPatientRepository,
    SqlRelationshipFacts,
    SqlUserRepository,
)
from integrations.db.tables import metadata

audit_t = metadata.tables["audit_events"]
audit_log = structlog.get_logger("caremsg.audit")
log = structlog.get_logger("caremsg.db")


class BufferedAuditLog:
    """Collects a workflow's audit events until its transaction ends."""

    def __init__(self) -> None:
        self.pending: list[AuditEvent] = []

    def record(self, event: AuditEvent) -> None:
        self.pending.append(event)

    def amend_last(self, *, resource_id: str | None, patient_id: int | None) -> None:
        if self.pending:
            self.pending[-1] = dataclasses.replace(
                self.pending[-1], resource_id=resource_id, patient_id=patient_id
            )


def _row(event: AuditEvent) -> dict[str, Any]:
    values = dataclasses.asdict(event)
    values["details"] = dict(event.details)
    return values


def emit_audit_log(events: Sequence[AuditEvent]) -> None:
    for event in events:
        fields = _row(event)
        fields["occurred_at"] = event.occurred_at.isoformat()
        fields["audit_event"] = fields.pop("event")
        audit_log.info("audit", **fields)


def is_unavailable(exc: BaseException) -> bool:
    """True for errors that mean the database cannot be reached right now (not a bad statement)."""
    if isinstance(exc, (OSError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError))
    ):
        return True
    name = type(exc).__name__
    return name in {"CannotConnectNowError", "ConnectionDoesNotExistError", "TooManyConnectionsError"}


class SqlUnitOfWork:
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

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._committed = False

    async def __aenter__(self) -> Self:
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
        self.outbox = SqlOutbox(s)
        self.facts = SqlRelationshipFacts(s)
        return self

    async def commit(self) -> None:
        events = list(self.audit.pending)
        if events:
            await self.session.execute(insert(audit_t), [_row(e) for e in events])
        await self.session.commit()
        self._committed = True
        self.audit.pending.clear()
        emit_audit_log(events)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if not self._committed:
                await self.session.rollback()
        except Exception as rollback_error:  # the connection may be gone; the original error matters more
            log.warning("db.rollback_failed", error=type(rollback_error).__name__)
        finally:
            await self.session.close()
        if not self._committed and self.audit.pending:
            await self._record_unfinished(exc)
        if exc is not None and not isinstance(exc, CaremsgError) and is_unavailable(exc):
            raise ServiceUnavailable("The database is not reachable right now; try again shortly.") from exc

    async def _record_unfinished(self, exc: BaseException | None) -> None:
        outcome: Outcome
        if isinstance(exc, Forbidden):
            outcome, cause = "denied", exc.decision.reason
        elif isinstance(exc, CaremsgError):
            outcome, cause = "failure", exc.code
        else:
            outcome, cause = "failure", "error" if exc is not None else "not_committed"
        events = [e.ended(outcome, cause) for e in self.audit.pending]
        self.audit.pending.clear()
        try:
            async with self._sessions() as session, session.begin():
                await session.execute(insert(audit_t), [_row(e) for e in events])
        except Exception as error:
            # The database is unreachable: the log line is then the only trace, and says so.
            log.error("audit.write_failed", error=type(error).__name__, events=len(events))
            for e in events:
                audit_log.error(
                    "audit",
                    durable=False,
                    **{k: v for k, v in _row(e).items() if k != "event"},
                    audit_event=e.event,
                )
            return
        emit_audit_log(events)
