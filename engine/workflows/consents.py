"""Consents: a patient's permission to disclose their record to an organization, a compliance group,
or an external party (by phone number). Consent is what lets staff of another organization in.

The lifecycle follows 42 CFR Part 2: a consent names its recipient, the purpose of use, its scope
(which data and actions), when it takes effect, when it expires (optional) and who recorded it; it
can be revoked with a reason. Every change is written to the numbered change log in the same
transaction, so every service instance's consent index learns of it (LISTEN/NOTIFY), and this
instance applies it to its own index right after commit: access ends here before the response.

Revocation is a workflow, not just a flag: staff of other organizations whom the consent covered
are taken out of the patient's conversations (their membership rows go, and the chat channel
removal goes through the outbox), and external SMS participants admitted under it are marked
removed (``external_participants.removed_at``), unless another active consent still covers them.
Each of those effects is audited. An expired consent's grants end the same way, by the service's
expiry sweep (:func:`sweep_expired_consents`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from engine.audit import AuditEvent, DetailValue
from engine.consent_index import IndexedConsent
from engine.decisions import Fact
from engine.effects import RemoveMembers
from engine.errors import Conflict, FieldError, Forbidden, InvalidInput, NotFound
from engine.model import (
    FULL_SCOPE,
    Actor,
    Consent,
    ConsentScope,
    Part2Elements,
    Purpose,
    RecipientType,
    latest_today,
)
from engine.ports.consents import NewConsent
from engine.ports.units import ConsentsUnitOfWork
from engine.services import ConsentView, Guard, Services
from engine.workflows.organizations import group_facts

RECORDED = "recorded"
REVOKED = "revoked"


def _unit_of_work(services: Services) -> ConsentsUnitOfWork:
    """This family's view of the unit of work: only the repositories its workflows use."""
    return services.uow()


@dataclass(frozen=True)
class RecordConsent:
    patient_id: int
    recipient_type: RecipientType
    purpose: Purpose
    organization_id: int | None = None
    compliance_group_id: int | None = None
    external_phone_number: str | None = None
    external_name: str | None = None
    effective_at: datetime | None = None
    expires_at: datetime | None = None
    scope: frozenset[ConsentScope] = FULL_SCOPE
    part2: Part2Elements | None = None


async def record_consent(services: Services, actor: Actor, cmd: RecordConsent) -> Consent:
    """Record a consent for a patient of the compliance officer's own organization."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        pid = cmd.patient_id
        await guard.require_role_for_patient("consent.create", pid, resource_type="consent")
        facts, details = await guard.patient_facts("consent.create", pid)
        guard.require(
            "consent.create",
            facts,
            resource_type="consent",
            patient_id=pid,
            field="patientId",
            details={
                **details,
                "recipient_type": cmd.recipient_type.value,
                **({"part2": True} if cmd.part2 is not None else {}),
            },
        )
        if cmd.organization_id is not None and not await uow.organizations.existing([cmd.organization_id]):
            raise InvalidInput([FieldError("organizationId", "No such organization.", "not_found")])
        group = None
        if cmd.compliance_group_id is not None:
            group = await uow.compliance_groups.get(cmd.compliance_group_id)
            no_such_group = InvalidInput(
                [FieldError("complianceGroupId", "No such compliance group.", "not_found")]
            )
            if group is None:
                raise no_such_group
            # Only a group the organization owns or was shared by name may receive its patients' data.
            facts = group_facts(group, actor.organization_id)
            try:
                guard.require(
                    "compliance_group.use",
                    facts,
                    resource_type="compliance_group",
                    resource_id=group.id,
                    patient_id=pid,
                    field="complianceGroupId",
                )
            except Forbidden as denied:
                if not facts:  # another organization's group, not shared: as if there were none
                    guard.hide_last("compliance_group.use")
                    raise no_such_group.concealing(denied.decision) from None
                raise
        if not cmd.scope:
            raise InvalidInput([FieldError("scope", "Name at least one of read, message, sms.")])
        effective_at = cmd.effective_at or guard.now
        if cmd.expires_at is not None and cmd.expires_at <= effective_at:
            raise InvalidInput([FieldError("expiresAt", "Must be later than effectiveAt.")])
        if cmd.part2 is not None:
            _check_part2(cmd.part2, cmd.expires_at, guard.now)
        else:
            patient = await uow.patients.get(pid, hold=True)  # a Part 2 mark being set: seen, or waits
            if patient is not None and patient.part2:
                raise InvalidInput(
                    [
                        FieldError(
                            "part2",
                            "The patient's records include 42 CFR Part 2 records: the consent must hold"
                            " the elements of 42 CFR 2.31.",
                        )
                    ]
                )
        consent = await uow.consents.add(
            NewConsent(
                patient_id=pid,
                recipient_type=cmd.recipient_type,
                organization_id=cmd.organization_id,
                compliance_group_id=cmd.compliance_group_id,
                external_phone_number=cmd.external_phone_number,
                external_name=cmd.external_name,
                purpose=cmd.purpose,
                effective_at=effective_at,
                expires_at=cmd.expires_at,
                recorded_by=actor.user_id,
                scope=cmd.scope,
                part2=cmd.part2,
            )
        )
        guard.identify(resource_id=consent.id, patient_id=pid)
        seq = await uow.consent_lifecycle.record_change(consent.id, pid, RECORDED)
        await uow.commit()
    if group is not None:
        services.consents.set_group(group.id, group.member_organization_ids)
    services.consents.apply(seq, consent.id, pid, IndexedConsent.of(consent), services.clock())
    return consent


def _check_part2(elements: Part2Elements, expires_at: datetime | None, now: datetime) -> None:
    """What 42 CFR 2.31(a) asks beyond the request's shape: an expiry date or an expiry event, a
    signature that has happened, and the patient told of the right to revoke."""
    problems = []
    if expires_at is None and elements.expiry_event is None:
        problems.append(
            FieldError(
                "part2.expiryEvent",
                "A Part 2 consent needs an expiry date (expiresAt) or the event that ends it"
                " (42 CFR 2.31(a)(6)).",
            )
        )
    if elements.signed_on > latest_today(now):
        problems.append(FieldError("part2.signedOn", "Must not be in the future."))
    if not elements.revocation_right_stated:
        problems.append(
            FieldError("part2.revocationRightStated", "The patient must be told of the right to revoke.")
        )
    if problems:
        raise InvalidInput(problems)


async def list_consents(services: Services, actor: Actor, patient_id: int) -> list[Consent]:
    """A patient's consents (``consent.list``). Its own organization sees them all; staff of another
    organization, covered by a consent, see only the consents disclosing the patient to their own
    organization (directly or through a compliance group it is in): the others name other
    recipients, external parties' names and numbers, revocation reasons and Part 2 elements that are
    none of theirs, whatever their own consent discloses."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        await guard.require_role_for_patient("consent.list", patient_id, resource_type="consent")
        facts, details = await guard.patient_facts("consent.list", patient_id)
        guard.require("consent.list", facts, resource_type="consent", patient_id=patient_id, details=details)
        own = Fact.OWN_ORG in facts
        guard.annotate(shown="all" if own else "disclosed_to_own_organization")
        disclosed_to = None if own else actor.organization_id
        consents = await uow.consents.list_for_patient(patient_id, disclosed_to=disclosed_to)
        await uow.commit()
    return consents


@dataclass(frozen=True)
class RevokeConsent:
    consent_id: int
    reason: str


@dataclass(frozen=True)
class Revocation:
    """What a revocation ended: the consent, and who lost access because of it."""

    consent: Consent
    removed_members: Sequence[tuple[int, int]] = field(default=())  # (conversation id, user id)
    removed_external_participants: Sequence[int] = field(default=())


async def revoke_consent(services: Services, actor: Actor, cmd: RevokeConsent) -> Revocation:
    """Revoke a consent of the officer's own organization's patient; access it granted ends now.

    Raises NotFound for an unknown consent and Conflict for one that is revoked already.
    """
    reason = cmd.reason.strip()
    if not reason:
        raise InvalidInput([FieldError("reason", "Must not be blank.")])
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)

        async def facts_of() -> frozenset[str] | None:
            # For the record of a refused role only (`policy diff` replays it): the answer is the same.
            found = await uow.consent_lifecycle.get_for_update(cmd.consent_id)
            if found is None:
                return None
            return (await guard.patient_facts("consent.revoke", found.patient_id, unknown_as="consent"))[0]

        await guard.require_role_recording_facts(
            "consent.revoke", facts_of, resource_type="consent", resource_id=cmd.consent_id
        )
        consent = await uow.consent_lifecycle.get_for_update(cmd.consent_id)
        if consent is None:
            guard.record_missing("consent.revoke", "consent", cmd.consent_id)
            raise NotFound("consent")
        pid = consent.patient_id
        facts, details = await guard.patient_facts("consent.revoke", pid, unknown_as="consent")
        guard.require(
            "consent.revoke",
            facts,
            resource_type="consent",
            resource_id=consent.id,
            patient_id=pid,
            details={**details, "recipient_type": consent.recipient_type.value},
        )
        if consent.revoked_at is not None:
            raise Conflict("This consent is revoked already.")
        revoked = await uow.consent_lifecycle.revoke(
            consent.id, revoked_by=actor.user_id, reason=reason, at=guard.now
        )
        seq = await uow.consent_lifecycle.record_change(consent.id, pid, REVOKED)
        # consent.revoke requires own_org: the officer's organization is the patient's.
        ending = _Ending(uow, guard, actor, "consent.revoke", consent, actor.organization_id)
        removed_members = await _remove_uncovered_members(ending)
        removed_externals = await _remove_uncovered_externals(ending)
        await uow.commit()
    # This instance stops granting access before it answers; the others follow the notification.
    services.consents.apply(seq, consent.id, pid, None, services.clock())
    services.delivery.wake()
    return Revocation(revoked, tuple(removed_members), tuple(removed_externals))


#: The workflow the expiry sweep's records carry. Nobody decides it: the consent said when it ends.
EXPIRE = "consent.expire"


async def sweep_expired_consents(services: Services, *, limit: int = 100) -> int:
    """End what expired consents granted, as a revocation does; returns how many were swept.

    Access itself ends at ``expires_at`` without this (decisions compare the time). What does not
    end by itself is what the consent let happen outside a decision: staff of other organizations
    stay members of the patient's chat channels, and external participants stay admitted for SMS.
    The service runs this on a schedule; each consent is swept once (``expiry_swept_at``), and
    several instances claim different consents (``SKIP LOCKED``). The records name no actor: the
    service acts, on the consent's own terms.
    """
    async with _unit_of_work(services) as uow:
        view = ConsentView(services)
        due = await uow.consent_lifecycle.claim_expired(view.now, limit)
        for expired in due:
            consent = expired.consent
            await uow.consent_lifecycle.mark_expiry_swept(consent.id, view.now)
            uow.audit.record(
                AuditEvent.by(
                    None,
                    event="consent.expired",
                    workflow=EXPIRE,
                    outcome="success",
                    occurred_at=view.now,
                    resource_type="consent",
                    resource_id=str(consent.id),
                    patient_id=consent.patient_id,
                    policy_version=view.policy.version,
                    details={
                        "recipient_type": consent.recipient_type.value,
                        "expired_at": consent.expires_at.isoformat() if consent.expires_at else None,
                    },
                )
            )
            if consent.expires_at is not None and consent.expires_at <= consent.created_at:
                continue  # recorded after it had expired: it never let anyone in
            ending = _Ending(uow, view, None, EXPIRE, consent, expired.patient_organization_id)
            await _remove_uncovered_members(ending)
            await _remove_uncovered_externals(ending)
        await uow.commit()
    if due:
        services.delivery.wake()
    return len(due)


@dataclass(frozen=True)
class _Ending:
    """One consent's grants ending: revoked by an officer (``actor``) or expired (the service,
    ``actor`` None). Who stays covered is worked out by ``view`` at its moment and policy version."""

    uow: ConsentsUnitOfWork
    view: ConsentView
    actor: Actor | None
    workflow: str
    consent: Consent
    patient_organization_id: int

    def record(self, event: str, conversation_id: int, **details: DetailValue) -> None:
        self.uow.audit.record(
            AuditEvent.by(
                self.actor,
                event=event,
                workflow=self.workflow,
                outcome="success",
                occurred_at=self.view.now,
                resource_type="conversation",
                resource_id=str(conversation_id),
                patient_id=self.consent.patient_id,
                policy_version=self.view.policy.version,
                details={"consent_id": self.consent.id, **details},
            )
        )


async def _remove_uncovered_members(ending: _Ending) -> list[tuple[int, int]]:
    """Staff of other organizations who were covered only by this consent leave the conversations."""
    consent = ending.consent
    if consent.recipient_type == RecipientType.EXTERNAL:
        return []
    uow, view = ending.uow, ending.view
    conversations = await uow.consent_lifecycle.patient_conversations(consent.patient_id)
    users = await uow.users.get_many(sorted({m for c in conversations for m in c.member_ids}))
    removed: list[tuple[int, int]] = []
    for conversation in conversations:
        leaving = [
            users[uid]
            for uid in conversation.member_ids
            if uid in users
            and users[uid].organization_id != ending.patient_organization_id
            and view.covering_consent(
                "conversation.read", consent.patient_id, users[uid].organization_id, exclude=consent.id
            )
            is None
        ]
        if not leaving:
            continue
        await uow.consent_lifecycle.remove_members(conversation.id, [u.id for u in leaving])
        await uow.outbox.enqueue(RemoveMembers(conversation.id, tuple(u.chat_user_id for u in leaving)))
        for user in leaving:
            ending.record("conversation.member_removed", conversation.id, subject_user_id=user.id)
            removed.append((conversation.id, user.id))
    return removed


async def _remove_uncovered_externals(ending: _Ending) -> list[int]:
    """External participants admitted under this consent stop receiving SMS, unless another active
    consent names them (then that one carries them from now on)."""
    uow, consent = ending.uow, ending.consent
    removed: list[int] = []
    for ext in await uow.consent_lifecycle.externals_admitted_by(consent.id):
        # Read in this transaction: a revocation is already visible, so it cannot count itself; an
        # expired consent no longer counts at the view's moment.
        candidates = await uow.facts.external_consents(
            consent.patient_id, ext.phone_number, ext.organization_id
        )
        _, details = ending.view.external_facts("conversation.join", candidates)
        other = details.get("consent_id")
        if isinstance(other, int) and other != consent.id:
            await uow.consent_lifecycle.readmit_external(ext.participant_id, other)
            ending.record(
                "conversation.external_readmitted",
                ext.conversation_id,
                external_participant_id=ext.participant_id,
                now_covered_by=other,
            )
            continue
        await uow.consent_lifecycle.remove_external(ext.participant_id, ending.view.now)
        await uow.outbox.enqueue(RemoveMembers(ext.conversation_id, (ext.chat_user_id,)))
        ending.record(
            "conversation.external_removed", ext.conversation_id, external_participant_id=ext.participant_id
        )
        removed.append(ext.participant_id)
    return removed
