"""Consents: a patient's permission to disclose their record to an organization, a compliance group,
or an external party (by phone number). Consent is what lets staff of another organization in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from engine.errors import FieldError, InvalidInput
from engine.model import Actor, Consent, Purpose, RecipientType
from engine.ports import NewConsent
from engine.services import Guard, Services


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


async def record_consent(services: Services, actor: Actor, cmd: RecordConsent) -> Consent:
    """Record a consent for a patient of the compliance officer's own organization."""
    async with services.uow() as uow:
        guard = Guard(services, uow, actor)
        pid = cmd.patient_id
        guard.require_role("consent.create", resource_type="consent", patient_id=pid)
        facts, details = await guard.patient_facts("consent.create", pid)
        guard.require(
            "consent.create",
            facts,
            resource_type="consent",
            patient_id=pid,
            field="patientId",
            details={**details, "recipient_type": cmd.recipient_type.value},
        )
        if cmd.organization_id is not None and not await uow.organizations.existing([cmd.organization_id]):
            raise InvalidInput([FieldError("organizationId", "No such organization.", "not_found")])
        if (
            cmd.compliance_group_id is not None
            and await uow.compliance_groups.get(cmd.compliance_group_id) is None
        ):
            raise InvalidInput([FieldError("complianceGroupId", "No such compliance group.", "not_found")])
        effective_at = cmd.effective_at or guard.now
        if cmd.expires_at is not None and cmd.expires_at <= effective_at:
            raise InvalidInput([FieldError("expiresAt", "Must be later than effectiveAt.")])
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
            )
        )
        guard.identify(resource_id=consent.id, patient_id=pid)
        await uow.commit()
    return consent


async def list_consents(services: Services, actor: Actor, patient_id: int) -> list[Consent]:
    async with services.uow() as uow:
        guard = Guard(services, uow, actor)
        guard.require_role("consent.list", resource_type="consent", patient_id=patient_id)
        facts, details = await guard.patient_facts("consent.list", patient_id)
        guard.require("consent.list", facts, resource_type="consent", patient_id=patient_id, details=details)
        consents = await uow.consents.list_for_patient(patient_id)
        await uow.commit()
    return consents
