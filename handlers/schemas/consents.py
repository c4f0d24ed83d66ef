"""Schemas of consents: who a patient lets see, message or text them, for how long and for what."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    StringConstraints,
    model_validator,
)

from engine.model import (
    FULL_SCOPE,
    Consent,
    ConsentScope,
    Part2Elements,
    Purpose,
    RecipientType,
)
from handlers.schemas import (
    Id,
    Instant,
    Name,
    PhoneNumber,
    Request,
    Response,
    Title,
    visible_line,
)

# --- consents ------------------------------------------------------------------------------------


class ExternalParty(Request):
    phone_number: PhoneNumber
    name: Name


#: What information a Part 2 consent discloses, in words (1 to 500 characters, one line).
Information = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), AfterValidator(visible_line)
]


class Part2Consent(Request):
    """The elements 42 CFR 2.31(a) asks of a consent to disclose Part 2 records, besides those every
    consent has (recipient, purpose, expiry)."""

    discloser: Title = Field(
        description="Who may disclose: the Part 2 program, entity or person, by name or general designation."
    )
    information: Information = Field(
        description="How much and what kind of information may be disclosed, e.g. 'Diagnosis, medications "
        "and treatment dates'."
    )
    expiry_event: Title | None = Field(
        None,
        description="The event that ends the consent, when it has no expiresAt (e.g. 'end of treatment'). "
        "A Part 2 consent needs one or the other.",
    )
    signed_by: Title = Field(
        description="Who signed: the patient, or the person authorized to sign for them (2.31(a)(8))."
    )
    signed_on: date = Field(
        description="The date of the signature (YYYY-MM-DD); not in the future: at most today anywhere on"
        " Earth (UTC+14)."
    )
    revocation_right_stated: Literal[True] = Field(
        description="The patient was told they may revoke the consent at any time (2.31(a)(5)): must be true."
    )

    def elements(self) -> Part2Elements:
        return Part2Elements(
            discloser=self.discloser,
            information=self.information,
            signed_by=self.signed_by,
            signed_on=self.signed_on,
            expiry_event=self.expiry_event,
        )


class ConsentCreate(Request):
    patient_id: Id
    purpose: Purpose
    organization_id: Id | None = Field(None, description="Disclose to this organization...")
    compliance_group_id: Id | None = Field(None, description="...or to every organization of this group...")
    external_party: ExternalParty | None = Field(None, description="...or to this external person, by phone.")
    effective_at: Instant | None = Field(None, description="Default: now. With a time zone offset.")
    expires_at: Instant | None = Field(None, description="Optional. With a time zone offset.")
    scope: Annotated[list[ConsentScope], Field(min_length=1, max_length=4)] = Field(
        default_factory=lambda: sorted(FULL_SCOPE),
        description="What the consent discloses: read (record, care team), message (conversations), "
        "sms (texts to an external party), write (changes to the record and care team). "
        "Default: read, message and sms; write only when named.",
    )
    part2: Part2Consent | None = Field(
        None,
        description="Set when the consent covers 42 CFR Part 2 records: its 2.31 elements. Every disclosure "
        "under it then carries the 2.32 notice (policies/notices.toml).",
    )

    @model_validator(mode="after")
    def _one_recipient(self) -> ConsentCreate:
        given = [
            name
            for name, value in (
                ("organizationId", self.organization_id),
                ("complianceGroupId", self.compliance_group_id),
                ("externalParty", self.external_party),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise ValueError("exactly one of organizationId, complianceGroupId or externalParty is required")
        return self

    @property
    def recipient_type(self) -> RecipientType:
        if self.organization_id is not None:
            return RecipientType.ORGANIZATION
        if self.compliance_group_id is not None:
            return RecipientType.COMPLIANCE_GROUP
        return RecipientType.EXTERNAL


class ExternalPartyPublic(Response):
    phone_number: str
    name: str | None


class Part2Public(Response):
    discloser: str
    information: str
    expiry_event: str | None
    signed_by: str
    signed_on: date
    revocation_right_stated: bool

    @classmethod
    def of(cls, elements: Part2Elements) -> Part2Public:
        return cls(
            discloser=elements.discloser,
            information=elements.information,
            expiry_event=elements.expiry_event,
            signed_by=elements.signed_by,
            signed_on=elements.signed_on,
            revocation_right_stated=elements.revocation_right_stated,
        )


class ConsentPublic(Response):
    id: int
    patient_id: int
    recipient_type: RecipientType
    organization_id: int | None
    compliance_group_id: int | None
    external_party: ExternalPartyPublic | None
    purpose: Purpose
    effective_at: datetime
    expires_at: datetime | None
    recorded_by: int
    created_at: datetime
    revoked_at: datetime | None
    status: Literal["pending", "active", "expired", "revoked"]
    scope: list[ConsentScope]
    revoked_by: int | None
    revocation_reason: str | None
    part2: Part2Public | None = Field(
        None, description="Its 42 CFR 2.31 elements, when the consent covers Part 2 records."
    )

    @classmethod
    def of(cls, consent: Consent, now: datetime) -> ConsentPublic:
        if consent.revoked_at is not None and consent.revoked_at <= now:
            status: Literal["pending", "active", "expired", "revoked"] = "revoked"
        elif consent.expires_at is not None and consent.expires_at <= now:
            status = "expired"
        elif consent.effective_at > now:
            status = "pending"
        else:
            status = "active"
        external = (
            ExternalPartyPublic(phone_number=consent.external_phone_number, name=consent.external_name)
            if consent.external_phone_number
            else None
        )
        return cls(
            id=consent.id,
            patient_id=consent.patient_id,
            recipient_type=consent.recipient_type,
            organization_id=consent.organization_id,
            compliance_group_id=consent.compliance_group_id,
            external_party=external,
            purpose=consent.purpose,
            effective_at=consent.effective_at,
            expires_at=consent.expires_at,
            recorded_by=consent.recorded_by,
            created_at=consent.created_at,
            revoked_at=consent.revoked_at,
            status=status,
            scope=sorted(consent.scope),
            revoked_by=consent.revoked_by,
            revocation_reason=consent.revocation_reason,
            part2=Part2Public.of(consent.part2) if consent.part2 is not None else None,
        )


#: Why a consent is revoked (1 to 500 characters).
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class ConsentRevoke(Request):
    reason: Reason


class RemovedMemberPublic(Response):
    """A staff member taken out of a conversation because the revoked consent covered them."""

    conversation_id: int = Field(description="The conversation they left.")
    user_id: int = Field(description="The staff member removed.")


class RevocationPublic(Response):
    consent: ConsentPublic
    removed_members: list[RemovedMemberPublic] = Field(description="Staff taken out of conversations.")
    removed_external_participants: list[int]
