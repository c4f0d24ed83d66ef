"""Reading the audit trail (auditors, compliance officers), a patient's accounting of disclosures,
and the audit summaries of requests refused for their token.

Reading the trail is itself a decided, audited workflow: who searched the audit records is on the
audit record too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime

from engine.audit import AuditEvent, DetailValue
from engine.audit_trail import DISCLOSURE_PERIOD, AuditFilter, AuditRecord, Disclosure, RecordDetail
from engine.decisions import Fact
from engine.errors import FieldError, InvalidInput, NotFound
from engine.model import Actor, Page
from engine.ports.audit import AuditRecordStream
from engine.ports.units import AuditUnitOfWork
from engine.services import Guard, Services


def _unit_of_work(services: Services) -> AuditUnitOfWork:
    """This family's view of the unit of work: only the repositories its workflows use."""
    return services.uow()


@dataclass(frozen=True)
class SearchAuditEvents:
    """An auditor's search. ``organization_id`` defaults to the auditor's own (the only one allowed);
    ``email`` is matched through its keyed hash, never stored or compared in clear."""

    filter: AuditFilter
    email: str | None = None
    after: int | None = None
    limit: int | None = None


def _checked(services: Services, cmd: SearchAuditEvents) -> AuditFilter:
    """The search's filter once its period is checked and its email turned into the keyed hash."""
    query = cmd.filter
    if query.since is not None and query.until is not None and query.since >= query.until:
        raise InvalidInput([FieldError("from", "Must be earlier than to.")])
    if cmd.email is not None:
        if services.identifiers is None:
            raise InvalidInput([FieldError("email", "Searching by email is not configured.", "unsupported")])
        query = replace(query, subject_hash=services.identifiers.email(cmd.email))
    return query


async def _require_own_trail(
    guard: Guard[AuditUnitOfWork],
    workflow: str,
    query: AuditFilter,
    actor: Actor,
    details: Mapping[str, DetailValue] | None = None,
) -> None:
    """Decide ``workflow`` over the trail of ``query.organization_id``: a role that may not read
    the trail at all is told so with no field to blame (the record keeps its facts, so `policy diff`
    can replay the refusal); another organization's trail is refused naming ``organizationId``."""
    facts = {Fact.OWN_ORG} if query.organization_id == actor.organization_id else set()

    async def facts_of() -> frozenset[str]:
        return frozenset(facts)

    await guard.require_role_recording_facts(
        workflow, facts_of, resource_type="audit_event", patient_id=query.patient_id
    )
    guard.require(
        workflow,
        facts,
        resource_type="audit_event",
        resource_id=None,
        patient_id=query.patient_id,
        field="organizationId",
        details={"organization_id": query.organization_id, **(details or {})},
    )


async def search_audit_events(services: Services, actor: Actor, cmd: SearchAuditEvents) -> Page[AuditRecord]:
    """Audit records of the actor's own organization matching the filters, by id.

    Decided as ``audit.read``: a role without it is denied as a role; asking for another
    organization's records is denied (and audited) with the field ``organizationId`` named.
    """
    query = _checked(services, cmd)
    async with _unit_of_work(services) as uow:
        await _require_own_trail(Guard(services, uow, actor), "audit.read", query, actor)
        page = await uow.audit_trail.search(query, cmd.after, services.page_size(cmd.limit))
        await uow.commit()
    return page


async def read_audit_event(services: Services, actor: Actor, record_id: int) -> RecordDetail:
    """One audit record of the actor's organization with its place in the hash chain (and the
    anchor that covers it, if any). Decided as ``audit.read`` (fact ``own_org``: the record is one
    the organization's search would find); another organization's record, like a missing one,
    raises :class:`NotFound`."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        found = await uow.audit_trail.detail(record_id, actor.organization_id)
        guard.require(
            "audit.read",
            {Fact.OWN_ORG} if found is not None else set(),
            resource_type="audit_event",
            resource_id=record_id,
            unrelated_as="audit_event",
        )
        await uow.commit()
    if found is None:  # only a role the policy lets read every record gets here
        raise NotFound("audit_event")
    return found


@asynccontextmanager
async def export_audit_events(
    services: Services, actor: Actor, cmd: SearchAuditEvents, fmt: str, stream: AuditRecordStream
) -> AsyncIterator[AsyncIterator[AuditRecord]]:
    """Every record the search ``cmd`` matches (no paging), for a download in ``fmt`` (``jsonl``
    or ``fhir``), streamed as the caller reads. Decided as ``audit.export`` over one's own
    organization's trail, like :func:`search_audit_events`; the decision is committed (audited)
    before the first record is read."""
    query = _checked(services, cmd)
    async with _unit_of_work(services) as uow:
        await _require_own_trail(Guard(services, uow, actor), "audit.export", query, actor, {"format": fmt})
        await uow.commit()
    async with stream.records(query) as records:
        yield records


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
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        pid = cmd.patient_id
        await guard.require_role_for_patient(
            "patient.disclosures", pid, resource_type="patient", resource_id=pid
        )
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
    # Under a Part 2 consent the accounting carries the 2.32 notice, as the disclosure did.
    notice = guard.policy.part2_notice
    return Page(
        tuple(replace(d, part2_notice=notice) if d.part2 else d for d in page.items), page.next_cursor
    )


@dataclass(frozen=True)
class RejectionSummary:
    """The requests one source (and, for a token of a changed account, one account) had refused
    for their credentials during one window: counted per reason, the first one named."""

    source_address: str | None
    actor_id: int | None
    first_request_id: str
    first_route: str
    first_reason: str
    first_at: datetime
    last_at: datetime
    counts: Mapping[str, int]


async def record_rejection_summaries(
    services: Services, summaries: Sequence[RejectionSummary], *, window_seconds: float
) -> None:
    """Audit refused credentials (no token, a bad or expired one, a changed account) as one record
    per source and window with the count, in one short transaction: a flood of bad tokens costs one
    row per source per window, never one permanent row per request."""
    if not summaries:
        return
    async with _unit_of_work(services) as uow:
        for summary in summaries:
            details: dict[str, DetailValue] = {
                "route": summary.first_route,
                "count": sum(summary.counts.values()),
                "window_seconds": round(window_seconds),
                "last_at": summary.last_at.isoformat(),
            }
            details.update(summary.counts)
            uow.audit.record(
                AuditEvent(
                    event="auth.token_rejected",
                    workflow="auth.token",
                    outcome="denied",
                    occurred_at=summary.first_at,
                    actor_id=summary.actor_id,
                    request_id=summary.first_request_id,
                    source_address=summary.source_address,
                    reason=summary.first_reason,
                    details=details,
                )
            )
        await uow.commit()
