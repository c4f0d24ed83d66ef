"""Break the glass: a clinician opens emergency access to a patient they could not otherwise see.

Only to a patient their organization may ever treat (the fact ``treatable``: its own, or disclosed
to it by a consent for treatment; decided by the policy, ``break_glass.open``). It needs a reason
(at least ten characters, for the compliance review), lasts a configured time
(``policy.break_glass_minutes``) and then ends by itself: the fact ``break_glass`` is evaluated at
each decision, against the session's expiry. Each opening tells the patient's organization's
compliance officers at once (the :class:`NotifyComplianceOfBreakGlass` effect, through the outbox,
audited); every audit record made while it is in force is flagged ``break_glass``; compliance
officers list the sessions of their organization to review them.

A session on another organization's patient concerns two organizations, and each reviews it on its
own: the patient's organization reviews access to its patient's record, the clinician's reviews its
own staff's use. One's review never closes the other's, and neither reads the other's note (it may
describe the patient's circumstances); each sees the session's own facts (clinician, patient,
window, reason) as before.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

from engine.audit import AuditEvent, DetailValue
from engine.decisions import Fact
from engine.effects import NotifyComplianceOfBreakGlass, kind_of
from engine.errors import Conflict, FieldError, InvalidInput, NotFound
from engine.model import Actor, Page
from engine.ports.consents import BreakGlassSession
from engine.ports.units import BreakGlassUnitOfWork
from engine.services import Guard, Services

MIN_REASON = 10
MAX_REASON = 1000


def _unit_of_work(services: Services) -> BreakGlassUnitOfWork:
    """This family's view of the unit of work: only the repositories its workflows use."""
    return services.uow()


@dataclass(frozen=True)
class BreakGlass:
    patient_id: int
    reason: str


async def break_glass(services: Services, actor: Actor, cmd: BreakGlass) -> BreakGlassSession:
    """Open an emergency session for the actor and the patient; 404 if there is no patient."""
    reason = cmd.reason.strip()
    if not MIN_REASON <= len(reason) <= MAX_REASON:
        raise InvalidInput(
            [FieldError("reason", f"Explain the emergency in {MIN_REASON} to {MAX_REASON} characters.")]
        )
    pid = cmd.patient_id
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        await guard.require_role_for_patient(
            "break_glass.open", pid, resource_type="patient", resource_id=pid
        )
        facts, details = await guard.patient_facts("break_glass.open", pid)
        guard.require(
            "break_glass.open",
            facts,
            resource_type="break_glass",
            patient_id=pid,
            field="patientId",
            details=details,
        )
        session = await uow.break_glass.add(
            user_id=actor.user_id,
            organization_id=actor.organization_id,
            patient_id=pid,
            reason=reason,
            expires_at=guard.now + timedelta(minutes=services.settings.break_glass_minutes),
        )
        guard.identify(resource_id=session.id, patient_id=pid)

        def opening(event: str, **details: DetailValue) -> AuditEvent:
            """A success record of this opening (the session, then the alert it queued)."""
            return AuditEvent.by(
                actor,
                event=event,
                workflow="break_glass.open",
                outcome="success",
                occurred_at=guard.now,
                resource_type="break_glass",
                resource_id=str(session.id),
                patient_id=pid,
                policy_version=guard.policy.version,
                break_glass=True,
                details=details,
            )

        uow.audit.record(opening("break_glass.opened", expires_at=session.expires_at.isoformat()))
        effect = NotifyComplianceOfBreakGlass(session.id)
        await uow.outbox.enqueue(effect)
        uow.audit.record(opening("break_glass.compliance_notified", effect=kind_of(effect)))
        await uow.commit()
    services.delivery.wake()
    return session


async def list_break_glass(
    services: Services, actor: Actor, after: int | None, limit: int | None
) -> Page[BreakGlassSession]:
    """Sessions opened by the officer's organization's staff or on its patients, newest first, each
    with the officer's organization's own review."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("break_glass.list", resource_type="break_glass")
        page = await uow.break_glass.list_for_organization(
            actor.organization_id, after, services.page_size(limit)
        )
        await uow.commit()
    return page


MAX_NOTE = 2000


async def _session_of_own_org(
    guard: Guard[BreakGlassUnitOfWork], workflow: str, session_id: int
) -> BreakGlassSession:
    """The session with the officer's organization's own review, decided as ``workflow`` with
    ``own_org`` (opened by the officer's organization's staff or on its patient); 404 if there is
    none or it is another organization's."""

    def mine(session: BreakGlassSession) -> bool:
        return guard.actor.organization_id in (session.organization_id, session.patient_organization_id)

    async def facts_of() -> frozenset[str] | None:
        # For the record of a refused role only (`policy diff` replays it): the answer is the same.
        found = await guard.uow.break_glass.get(session_id, guard.actor.organization_id)
        if found is None:
            return None
        return frozenset({Fact.OWN_ORG}) if mine(found) else frozenset()

    await guard.require_role_recording_facts(
        workflow, facts_of, resource_type="break_glass", resource_id=session_id
    )
    session = await guard.uow.break_glass.get(session_id, guard.actor.organization_id)
    if session is None or not mine(session):
        guard.record_missing(workflow, "break_glass", session_id)
        raise NotFound("break_glass")
    guard.require(
        workflow,
        {Fact.OWN_ORG},
        resource_type="break_glass",
        resource_id=session.id,
        patient_id=session.patient_id,
    )
    return session


async def read_break_glass(services: Services, actor: Actor, session_id: int) -> BreakGlassSession:
    """One session of the officer's organization, for its review page (``break_glass.read``)."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        session = await _session_of_own_org(guard, "break_glass.read", session_id)
        await uow.commit()
    return session


@dataclass(frozen=True)
class ReviewBreakGlass:
    session_id: int
    note: str


async def review_break_glass(services: Services, actor: Actor, cmd: ReviewBreakGlass) -> BreakGlassSession:
    """Record the officer's organization's review of an emergency session, with a note, once per
    organization (``break_glass.review``, fact ``own_org``). Another organization's session, or
    none, answers 404; one this organization reviewed already, 409 (the other organization's review
    is no bar). The decision's record is the review's audit record; the note stays in the review's
    row only (it may name the patient's circumstances)."""
    note = cmd.note.strip()
    if not 1 <= len(note) <= MAX_NOTE:
        raise InvalidInput([FieldError("note", f"Write a review note of 1 to {MAX_NOTE} characters.")])
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        session = await _session_of_own_org(guard, "break_glass.review", cmd.session_id)
        if not await uow.break_glass.mark_reviewed(
            session.id, actor.organization_id, by=actor.user_id, note=note, at=guard.now
        ):
            raise Conflict("Your organization already reviewed this session.")
        await uow.commit()
    return replace(session, reviewed_at=guard.now, reviewed_by=actor.user_id, review_note=note)
