"""Request and response schemas of the public API: camelCase JSON, strict types, bounded sizes.

Requests forbid unknown fields and are validated in strict mode (``"1"`` is not an integer), so a
client mistake comes back as a 422 naming the field instead of being guessed at. Responses are
built from engine types, never from table rows.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

import phonenumbers
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from engine.model import (
    FULL_SCOPE,
    SELF_REGISTRABLE_ROLES,
    CareTeam,
    ComplianceGroup,
    Consent,
    ConsentScope,
    Conversation,
    DeliveryState,
    Message,
    Organization,
    Patient,
    Purpose,
    RecipientDelivery,
    RecipientType,
    RiskLevel,
    Role,
    User,
)
from engine.sms import textable
from handlers.field_docs import describe_fields

# C0 and C1 control characters other than tab, line feed and carriage return. PostgreSQL refuses NUL
# in text, and none of the others belongs in anything a person typed: every request string refuses them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Names and titles refuse line breaks and tabs too, the bidirectional controls (U+202E makes a name
# read backwards in an audit listing) and the zero-width characters (two names that look the same).
_INVISIBLE = re.compile(r"[\t\n\r\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


def _has_control(value: object) -> bool:
    if isinstance(value, str):
        return _CONTROL.search(value) is not None
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_has_control(v) for v in value)
    if isinstance(value, dict):
        return any(_has_control(k) or _has_control(v) for k, v in value.items())
    return False


def _visible_line(value: str) -> str:
    if _INVISIBLE.search(value):
        raise PydanticCustomError(
            "invisible_character",
            "must not contain line breaks, tabs, bidirectional or zero-width characters",
        )
    return value


Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), AfterValidator(_visible_line)
]
Title = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(_visible_line)
]
Id = Annotated[int, Field(ge=1, le=2**31 - 1)]
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def _email(value: str) -> str:
    if not _EMAIL.fullmatch(value):
        raise ValueError("must be an email address")
    return value.lower()


def _e164(value: str) -> str:
    """E.164 form of a number that can exist: the same libphonenumber check (``engine.sms.textable``)
    that decides whether a text is sent, so a number the API takes is never refused later as
    ``invalid_number`` (``+1234567890`` has a country code but no valid number of its plan)."""
    if not re.fullmatch(r"\+[1-9][0-9]{7,14}", value):
        raise ValueError("must be an E.164 phone number such as +12025550143")
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise ValueError("must be an E.164 phone number such as +12025550143") from None
    if phonenumbers.region_code_for_country_code(number.country_code or 0) == phonenumbers.UNKNOWN_REGION:
        raise ValueError("has no known country calling code")
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if not textable(formatted):
        raise ValueError("is not a valid number of its country's numbering plan")
    return formatted


def _birth_date(value: date) -> date:
    if not date(1900, 1, 1) <= value <= date.today():  # noqa: DTZ011 - a calendar date, not an instant
        raise ValueError("must be a date between 1900-01-01 and today")
    return value


BirthDate = Annotated[date, AfterValidator(_birth_date)]
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=254),
    AfterValidator(_visible_line),
    AfterValidator(_email),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": 254}),
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]
PhoneNumber = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=20),
    AfterValidator(_e164),
    WithJsonSchema(
        {"type": "string", "pattern": r"^\+[1-9]\d{7,14}$", "maxLength": 20, "examples": ["+12025550143"]}
    ),
]


class Request(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=False,
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra=describe_fields,
    )

    @field_validator("*")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        """Every string of every request (query strings too) refuses NUL and the other control
        characters, with a 422 naming the field, before anything is stored or looked up."""
        if _has_control(value):
            raise PydanticCustomError("control_character", "must not contain control characters such as NUL")
        return value


class Response(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, json_schema_extra=describe_fields
    )


T = TypeVar("T")


class PageOf(Response, Generic[T]):
    items: list[T]
    next_cursor: int | None = Field(
        description="Pass as ?cursor= to get the next page; null on the last page."
    )


class ListQuery(Request):
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", strict=False, frozen=True)
    cursor: Id | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] | None = None


# --- auth & users --------------------------------------------------------------------------------


#: The JSON schema of the roles registration accepts; the others are refused (422) by the workflow.
_SELF_REGISTRABLE = WithJsonSchema(
    {
        "type": "string",
        "enum": sorted(r.value for r in SELF_REGISTRABLE_ROLES),
        "description": "Only non-privileged roles may register themselves; others are given by an admin.",
    }
)


class RegisterRequest(Request):
    email: Email
    password: Password
    first_name: Name
    last_name: Name
    role: Annotated[Role, _SELF_REGISTRABLE] = Role.PEER_SUPPORT
    organization_id: Id | None = None


class LoginRequest(Request):
    email: Email
    password: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class CreateUserRequest(Request):
    email: Email
    password: Password
    first_name: Name
    last_name: Name
    role: Role
    organization_id: Id | None = None


class UserPublic(Response):
    id: int
    email: str
    first_name: str
    last_name: str
    role: Role
    organization_id: int
    is_active: bool
    pending_approval: bool = Field(description="Self-registered and not yet approved by an admin.")
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserPublic:
        return cls(
            id=user.id,
            email=user.email,
            first_name=user.first_name,
            last_name=user.last_name,
            role=user.role,
            organization_id=user.organization_id,
            is_active=user.is_active,
            pending_approval=user.pending_approval,
            created_at=user.created_at,
        )


class RegistrationAccepted(Response):
    """The same answer whether or not the email has an account already."""

    status: Literal["accepted"] = "accepted"
    detail: str


class RoleChange(Request):
    role: Role


class AuthResponse(Response):
    token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme name
    expires_in: int = Field(description="Seconds until the token expires.")
    user: UserPublic


# --- organizations & compliance groups ------------------------------------------------------------


class OrganizationCreate(Request):
    name: Title
    self_registration: bool = False


class OrganizationPublic(Response):
    id: int
    name: str
    self_registration: bool
    created_at: datetime

    @classmethod
    def of(cls, org: Organization) -> OrganizationPublic:
        return cls(
            id=org.id, name=org.name, self_registration=org.self_registration, created_at=org.created_at
        )


class ComplianceGroupCreate(Request):
    name: Title
    description: Annotated[str, StringConstraints(max_length=2000)] | None = None
    organization_ids: Annotated[list[Id], Field(min_length=1, max_length=200)]


class ComplianceGroupShare(Request):
    organization_id: Id


class ComplianceGroupPublic(Response):
    id: int
    name: str
    description: str | None
    organization_id: int  # the owner: the organization whose compliance officer created it
    organization_ids: list[int]
    created_at: datetime
    # Organizations the owner shared the group with (their consents may name it).
    shared_with: list[int]

    @classmethod
    def of(cls, group: ComplianceGroup) -> ComplianceGroupPublic:
        return cls(
            id=group.id,
            name=group.name,
            description=group.description,
            organization_id=group.organization_id,
            organization_ids=list(group.member_organization_ids),
            created_at=group.created_at,
            shared_with=list(group.shared_with),
        )


# --- consents ------------------------------------------------------------------------------------


class ExternalParty(Request):
    phone_number: PhoneNumber
    name: Name


class ConsentCreate(Request):
    patient_id: Id
    purpose: Purpose
    organization_id: Id | None = Field(None, description="Disclose to this organization...")
    compliance_group_id: Id | None = Field(None, description="...or to every organization of this group...")
    external_party: ExternalParty | None = Field(None, description="...or to this external person, by phone.")
    effective_at: AwareDatetime | None = Field(None, description="Default: now. With a time zone offset.")
    expires_at: AwareDatetime | None = Field(None, description="Optional. With a time zone offset.")
    scope: Annotated[list[ConsentScope], Field(min_length=1, max_length=4)] = Field(
        default_factory=lambda: sorted(FULL_SCOPE),
        description="What the consent discloses: read (record, care team), message (conversations), "
        "sms (texts to an external party), write (changes to the record and care team). "
        "Default: read, message and sms; write only when named.",
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
        )


# --- patients & care teams ------------------------------------------------------------------------


class PatientCreate(Request):
    first_name: Name
    last_name: Name
    risk_level: RiskLevel
    date_of_birth: BirthDate | None = None


def _not_null(schema: dict[str, Any]) -> None:
    """Document an optional field whose null is refused: drop the null branch and the null default."""
    options = [o for o in schema.pop("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1:
        schema.update(options[0])
    schema.pop("default", None)


class PatientUpdate(Request):
    # Absent means unchanged; null is refused for these three, so the schema does not offer it.
    first_name: Name | None = Field(None, json_schema_extra=_not_null)
    last_name: Name | None = Field(None, json_schema_extra=_not_null)
    risk_level: RiskLevel | None = Field(None, json_schema_extra=_not_null)
    date_of_birth: BirthDate | None = Field(None, description="Calendar date; null clears it.")

    @model_validator(mode="after")
    def _something(self) -> PatientUpdate:
        if not self.model_fields_set:
            raise ValueError("name at least one field to change")
        return self

    @field_validator("first_name", "last_name", "risk_level")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Runs per field, so the 422 names the field (dateOfBirth alone may be cleared with null).
        if value is None:
            raise ValueError("may not be null")
        return value

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class PatientPublic(Response):
    id: int
    first_name: str
    last_name: str
    date_of_birth: date | None
    risk_level: RiskLevel
    organization_id: int
    created_by: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, p: Patient) -> PatientPublic:
        return cls(
            id=p.id,
            first_name=p.first_name,
            last_name=p.last_name,
            date_of_birth=p.date_of_birth,
            risk_level=p.risk_level,
            organization_id=p.organization_id,
            created_by=p.created_by,
            created_at=p.created_at,
            updated_at=p.updated_at,
        )


class CareTeamCreate(Request):
    patient_id: Id
    name: Title = "Care team"


class CareTeamMemberAdd(Request):
    user_id: Id


class CareTeamMemberPublic(Response):
    user_id: int
    role: Role
    organization_id: int
    added_at: datetime


class CareTeamPublic(Response):
    id: int
    patient_id: int
    name: str
    organization_id: int
    created_at: datetime
    members: list[CareTeamMemberPublic]

    @classmethod
    def of(cls, team: CareTeam) -> CareTeamPublic:
        return cls(
            id=team.id,
            patient_id=team.patient_id,
            name=team.name,
            organization_id=team.organization_id,
            created_at=team.created_at,
            members=[
                CareTeamMemberPublic(
                    user_id=m.user_id, role=m.role, organization_id=m.organization_id, added_at=m.added_at
                )
                for m in team.members
            ],
        )


# --- conversations & messages ---------------------------------------------------------------------


class ExternalMemberCreate(Request):
    phone_number: PhoneNumber
    name: Name
    organization_id: Id | None = None


class ConversationCreate(Request):
    title: Title
    patient_id: Id
    member_ids: Annotated[list[Id], Field(max_length=99)] = []
    external_members: Annotated[list[ExternalMemberCreate], Field(max_length=20)] = []


class ExternalMemberPublic(Response):
    id: int
    phone_number: str
    name: str
    # Set once they were removed (their consent ended): listed still, for the record, but not texted.
    removed_at: datetime | None = None


class ConversationPublic(Response):
    id: int
    title: str
    patient_id: int
    channel_url: str
    channel_state: Literal["pending", "ready", "failed"]
    member_ids: list[int]
    external_members: list[ExternalMemberPublic]
    created_by: int
    created_at: datetime

    @classmethod
    def of(cls, c: Conversation) -> ConversationPublic:
        return cls(
            id=c.id,
            title=c.title,
            patient_id=c.patient_id,
            channel_url=c.channel_url,
            channel_state=c.channel_state,
            member_ids=list(c.member_ids),
            external_members=[
                ExternalMemberPublic(
                    id=e.id, phone_number=e.phone_number, name=e.display_name, removed_at=e.removed_at
                )
                for e in c.external_participants
            ],
            created_by=c.created_by,
            created_at=c.created_at,
        )


class SendMessageRequest(Request):
    conversation_id: Id
    message: Annotated[str, StringConstraints(min_length=1, max_length=4000)]


class DeliveryPublic(Response):
    """Delivery to one recipient: the chat channel (staff) or one external participant by SMS."""

    channel: Literal["chat", "sms"]
    external_member_id: int | None = Field(None, description="For SMS: the external member texted.")
    state: DeliveryState
    reason: str | None = Field(
        None, description="For failed: e.g. opted_out, no_sms_consent, invalid_number, chat_unavailable."
    )
    updated_at: datetime | None = None

    @classmethod
    def of(cls, d: RecipientDelivery) -> DeliveryPublic:
        external = d.recipient.removeprefix("sms:")
        return cls(
            channel="chat" if d.channel == "chat" else "sms",
            external_member_id=int(external) if d.channel == "sms" and external.isdigit() else None,
            state=d.state,
            reason=d.reason,
            updated_at=d.updated_at,
        )


class MessagePublic(Response):
    id: int
    conversation_id: int
    sender_id: int
    message: str
    state: DeliveryState = Field(description="Delivery to the chat channel.")
    created_at: datetime
    deliveries: list[DeliveryPublic] = Field(
        default_factory=list, description="Per recipient: the chat channel, then each SMS participant."
    )

    @classmethod
    def of(cls, m: Message) -> MessagePublic:
        return cls(
            id=m.id,
            conversation_id=m.conversation_id,
            sender_id=m.sender_id,
            message=m.text,
            state=m.state,
            created_at=m.created_at,
            deliveries=[DeliveryPublic.of(d) for d in m.deliveries],
        )


class WebhookAccepted(Response):
    status: Literal["accepted", "duplicate"]


class ConversationDetailPublic(ConversationPublic):
    messages: list[MessagePublic]


# --- errors --------------------------------------------------------------------------------------


class FieldProblem(Response):
    field: str
    message: str
    type: str


class Problem(Response):
    """RFC 9457 problem details, with caremsg's stable ``code`` and the request id."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    code: str
    request_id: str
    errors: list[FieldProblem] | None = None
    reason: str | None = Field(None, description="For 403: the policy's reason code.")
    hint: str | None = Field(None, description="For 403: what role, relationship or consent is missing.")
    field: str | None = Field(None, description="For 403: the member or field the denial is about.")
    rule: str | None = Field(None, description="For 403: the policy rule that came closest.")
    policy_version: str | None = None
