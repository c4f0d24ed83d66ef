"""Reading the audit trail (auditors, compliance officers), a patient's accounting of disclosures,
and the audit record of a request refused for its token.

Reading the trail is itself a decided, audited workflow: who searched the audit records is on the
audit record too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from engine.audit import AuditEvent
from engine.audit_trail import DISCLOSURE_PERIOD, AuditFilter, AuditRecord, Disclosure
from engine.decisions import Fact
from engine.errors import FieldError, InvalidInput
from engine.model import Actor, Page
from engine.services import Guard, Services


@dataclass(frozen=True)
class SearchAuditEvents:
    """An auditor's search. ``organization_id`` defaults to the auditor's own (the only one allowed);
    ``email`` is matched through its keyed hash, never stored or compared in clear."""

    filter: AuditFilter
    email: str | None = None
    after: int | None = None
    limit: int | None = None


async def search_audit_events(services: Services, actor: Actor, cmd: SearchAuditEvents) -> Page[AuditRecord]:
    """Audit records of the actor's own organization matching the filters, by id.

    Decided as ``audit.read``: a role without it is denied as a role; asking for another
    organization's records is denied (and audited) with the field ``organizationId`` named.
    """
    query = cmd.filter
    if query.since is not None and query.until is not None and query.since >= query.until:
        raise InvalidInput([FieldError("from", "Must be earlier than to.")])
    if cmd.email is not None:
        if services.identifiers is None:
            raise InvalidInput([FieldError("email", "Searching by email is not configured.", "unsupported")])
        query = replace(query, subject_hash=services.identifiers.email(cmd.email))
    async with services.uow() as uow:
        guard = Guard(services, uow, actor)
        # A role that may not read the trail at all is told so, with no field to blame.
        guard.require_role("audit.read", resource_type="audit_event", patient_id=query.patient_id)
        facts = {Fact.OWN_ORG} if query.organization_id == actor.organization_id else set()
        guard.require(
            "audit.read",
            facts,
            resource_type="audit_event",
            resource_id=None,
            patient_id=query.patient_id,
            field="organizationId",
            details={"organization_id": query.organization_id},
        )
        page = await uow.audit_trail.search(query, cmd.after, services.page_size(cmd.limit))
        await uow.commit()
    return page


@dataclass(frozen=True)
class ListDisclosures:
    patient_id: int
    since: datetime | None = None
    until: datetime | None = None
    after: int | None = None
    limit: int | None = None


async def list_disclosures(services: Services, actor: Actor, cmd: ListDisclosures) -> Page[Disclosure]:
    """A patient's accounting of disclosures over at most six years (default: the last six).

    A disclosure is an allowed, committed access to the patient's data by someone of another
    organization under a consent, or the admission of an external party under a consent. Decided as
    ``patient.disclosures``; 404 if there is no such patient.
    """
    until = cmd.until or services.clock()
    since = cmd.since or until - DISCLOSURE_PERIOD
    if since >= until:
        raise InvalidInput([FieldError("from", "Must be earlier than to.")])
    if until - since > DISCLOSURE_PERIOD:
        raise InvalidInput([FieldError("from", "The period may be at most six years.", "period_too_long")])
    async with services.uow() as uow:
        guard = Guard(services, uow, actor)
        pid = cmd.patient_id
        guard.require_role("patient.disclosures", resource_type="patient", resource_id=pid, patient_id=pid)
        facts, details = await guard.patient_facts("patient.disclosures", pid)
        guard.require(
            "patient.disclosures",
            facts,
            resource_type="patient",
            resource_id=pid,
            patient_id=pid,
            details=details,
        )
        page = await uow.audit_trail.disclosures(pid, since, until, cmd.after, services.page_size(cmd.limit))
        await uow.commit()
    return page


async def record_rejected_token(
    services: Services,
    *,
    reason: str,
    request_id: str,
    source_address: str | None,
    route: str,
    actor_id: int | None = None,
) -> None:
    """Audit a request refused for its credentials (no token, a bad or expired one, or an account
    that changed), in a short transaction of its own.

    One small insert per refused request: cheap enough that a flood of bad tokens costs the
    database no more than the requests themselves, and the refusal never waits on anything else.
    """
    async with services.uow() as uow:
        uow.audit.record(
            AuditEvent(
                event="auth.token_rejected",
                workflow="auth.token",
                outcome="denied",
                occurred_at=services.clock(),
                actor_id=actor_id,
                request_id=request_id,
                source_address=source_address,
                reason=reason,
                details={"route": route},
            )
        )
        await uow.commit()
