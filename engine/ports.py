"""Ports: what the engine needs from the outside world, as protocols.

``integrations`` provides the adapters (PostgreSQL, Sendbird, argon2, JWT); tests provide fakes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from engine.audit import AuditEvent
from engine.model import (
    Actor,
    CareTeam,
    ComplianceGroup,
    Consent,
    Conversation,
    Credentials,
    Message,
    Organization,
    Page,
    Patient,
    Purpose,
    RecipientType,
    RiskLevel,
    Role,
    User,
)


@dataclass(frozen=True)
class SentChatMessage:
    """What the chat provider says about a message it accepted."""

    message_id: int
    channel_url: str
    created_at_ms: int


class ChatGateway(Protocol):
    """Group-channel chat for staff (Sendbird in production, the emulator in development).

    Every method is safe to retry: creating what exists already is not an error, and
    ``send_message`` passes ``dedup_id`` so a retry after an ambiguous failure posts nothing twice.
    Failures raise :class:`engine.errors.ChatGatewayError` subclasses whose ``retryable`` flag
    tells the caller whether trying again can help.
    """

    async def ensure_user(self, user_id: str, nickname: str, *, phone_number: str | None = None) -> None:
        """Make sure a chat user exists with this opaque id (never PII as an id)."""
        ...

    async def ensure_channel(
        self,
        channel_url: str,
        *,
        name: str,
        user_ids: Sequence[str],
        custom_type: str = "",
        data: str = "",
    ) -> None:
        """Create the group channel, or, if it exists already, make sure these users are members."""
        ...

    async def invite_members(self, channel_url: str, user_ids: Sequence[str]) -> None:
        """Add members to an existing channel."""
        ...

    async def remove_members(self, channel_url: str, user_ids: Sequence[str]) -> None:
        """Remove members from a channel; removing a non-member is not an error."""
        ...

    async def send_message(
        self,
        channel_url: str,
        *,
        sender_id: str,
        text: str,
        dedup_id: str,
        custom_type: str = "",
        data: str = "",
    ) -> SentChatMessage:
        """Post a text message as ``sender_id``; the same ``dedup_id`` never posts twice."""
        ...


# --- persistence ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatientRelation:
    """What holds between one person (by user id and organization) and one patient."""

    patient_id: int
    patient_organization_id: int
    on_care_team: bool
    covering_consent_id: int | None


@dataclass(frozen=True)
class NewUser:
    email: str
    password_hash: str
    first_name: str
    last_name: str
    role: Role
    organization_id: int


@dataclass(frozen=True)
class NewPatient:
    organization_id: int
    first_name: str
    last_name: str
    date_of_birth: date | None
    risk_level: RiskLevel
    created_by: int


@dataclass(frozen=True)
class NewConsent:
    patient_id: int
    recipient_type: RecipientType
    organization_id: int | None
    compliance_group_id: int | None
    external_phone_number: str | None
    external_name: str | None
    purpose: Purpose
    effective_at: datetime
    expires_at: datetime | None
    recorded_by: int


@dataclass(frozen=True)
class NewExternalParticipant:
    phone_number: str
    display_name: str
    organization_id: int | None
    consent_id: int


class UserRepository(Protocol):
    async def add(self, user: NewUser) -> User:
        """Insert; raises :class:`engine.errors.Conflict` if the email is taken."""
        ...

    async def get(self, user_id: int) -> User | None: ...

    async def get_many(self, user_ids: Sequence[int]) -> dict[int, User]: ...

    async def credentials(self, email: str) -> Credentials | None: ...

    async def list_for_organization(
        self, organization_id: int, after: int | None, limit: int
    ) -> Page[User]: ...


class OrganizationRepository(Protocol):
    async def add(self, name: str, *, self_registration: bool) -> Organization:
        """Insert; raises :class:`engine.errors.Conflict` if the name is taken."""
        ...

    async def get(self, organization_id: int) -> Organization | None: ...

    async def by_name(self, name: str) -> Organization | None: ...

    async def list(self, after: int | None, limit: int) -> Page[Organization]: ...

    async def existing(self, organization_ids: Sequence[int]) -> set[int]: ...


class ComplianceGroupRepository(Protocol):
    async def add(
        self,
        name: str,
        description: str | None,
        organization_id: int,
        created_by: int,
        members: Sequence[int],
    ) -> ComplianceGroup: ...

    async def get(self, group_id: int) -> ComplianceGroup | None: ...

    async def list(self, after: int | None, limit: int) -> Page[ComplianceGroup]: ...


class PatientRepository(Protocol):
    async def add(self, patient: NewPatient) -> Patient: ...

    async def get(self, patient_id: int) -> Patient | None: ...

    async def update(self, patient_id: int, changes: Mapping[str, object]) -> Patient: ...

    async def list_on_care_team_of(self, user_id: int, after: int | None, limit: int) -> Page[Patient]:
        """Patients whose care team includes the user, by id; access is still decided per patient."""
        ...


class CareTeamRepository(Protocol):
    async def create(self, patient_id: int, name: str, organization_id: int, created_by: int) -> CareTeam:
        """Insert; raises :class:`engine.errors.Conflict` if the patient has a care team already."""
        ...

    async def get(self, care_team_id: int) -> CareTeam | None: ...

    async def for_patient(self, patient_id: int) -> CareTeam | None: ...

    async def add_member(self, care_team_id: int, user_id: int, added_by: int) -> bool:
        """Add; returns False if the user was a member already."""
        ...


class ConsentRepository(Protocol):
    async def add(self, consent: NewConsent) -> Consent: ...

    async def list_for_patient(self, patient_id: int) -> list[Consent]: ...


class ConversationRepository(Protocol):
    async def add(
        self,
        *,
        patient_id: int,
        title: str,
        organization_id: int,
        created_by: int,
        member_ids: Sequence[int],
        external: Sequence[NewExternalParticipant],
    ) -> Conversation: ...

    async def get(self, conversation_id: int) -> Conversation | None: ...

    async def list_for_member(self, user_id: int, after: int | None, limit: int) -> Page[Conversation]: ...

    async def is_member(self, conversation_id: int, user_id: int) -> bool: ...


class MessageRepository(Protocol):
    async def add(self, conversation_id: int, sender_id: int, text: str) -> Message: ...

    async def recent(self, conversation_id: int, limit: int) -> list[Message]: ...


class Outbox(Protocol):
    async def enqueue(
        self,
        kind: str,
        payload: Mapping[str, object],
        *,
        conversation_id: int | None = None,
        message_id: int | None = None,
    ) -> None:
        """Record a side effect to perform after commit; written in the caller's transaction."""
        ...


class RelationshipFacts(Protocol):
    """Relationship facts for policy decisions, read in the workflow's transaction."""

    async def patient_relation(
        self, patient_id: int, *, user_id: int, organization_id: int, at: datetime
    ) -> PatientRelation | None:
        """None if the patient does not exist."""
        ...

    async def organization_consent(self, patient_id: int, organization_id: int, at: datetime) -> int | None:
        """The id of an active consent disclosing the patient to the organization (or a group it is in)."""
        ...

    async def external_consent(
        self, patient_id: int, phone_number: str, organization_id: int | None, at: datetime
    ) -> int | None:
        """The id of an active consent disclosing the patient to this external number (or organization)."""
        ...


class AuditLog(Protocol):
    def record(self, event: AuditEvent) -> None:
        """Buffer an event; it is written with the transaction (or, on rollback, on its own)."""
        ...

    def amend_last(self, *, resource_id: str | None, patient_id: int | None) -> None:
        """Name the record the last event was about, once it exists (a create decides before the id)."""
        ...


class UnitOfWork(Protocol):
    """One transaction per workflow. Nothing is written unless ``commit()`` is awaited."""

    @property
    def users(self) -> UserRepository: ...

    @property
    def organizations(self) -> OrganizationRepository: ...

    @property
    def compliance_groups(self) -> ComplianceGroupRepository: ...

    @property
    def patients(self) -> PatientRepository: ...

    @property
    def care_teams(self) -> CareTeamRepository: ...

    @property
    def consents(self) -> ConsentRepository: ...

    @property
    def conversations(self) -> ConversationRepository: ...

    @property
    def messages(self) -> MessageRepository: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def facts(self) -> RelationshipFacts: ...

    @property
    def audit(self) -> AuditLog: ...

    async def commit(self) -> None: ...

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...


# --- identity ------------------------------------------------------------------------------------


class PasswordHasher(Protocol):
    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str, password: str) -> bool:
        """True if the password matches; never raises for a mismatch."""
        ...


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int


class TokenService(Protocol):
    def issue(self, user: User) -> IssuedToken: ...

    def verify(self, token: str) -> Actor:
        """The actor a valid access token names; raises :class:`engine.errors.Unauthenticated`."""
        ...


class AccountDirectory(Protocol):
    async def current(self, actor: Actor) -> bool:
        """True if the token's account still exists, is active, and has the role and organization
        the token claims: a deactivated or re-roled account loses access at once, not at expiry."""
        ...


class DeliveryTrigger(Protocol):
    def wake(self) -> None:
        """Tell the outbox relay there is work (after a commit); a hint, never required for delivery."""
        ...
