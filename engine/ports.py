"""Ports: what the engine needs from the outside world, as protocols.

``integrations`` provides the adapters (PostgreSQL, Sendbird, argon2, JWT); tests provide fakes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from engine.audit import AuditEvent, DetailValue
from engine.audit_trail import AuditFilter, AuditRecord, Disclosure
from engine.facts import ConsentCandidate
from engine.login_throttle import Backoff, ThrottleState
from engine.model import (
    FULL_SCOPE,
    Actor,
    CareTeam,
    ComplianceGroup,
    Consent,
    ConsentScope,
    Conversation,
    Credentials,
    DeliveryState,
    Message,
    Organization,
    OrganizationContact,
    Page,
    Patient,
    Purpose,
    RecipientDelivery,
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

    Every method is safe to retry: creating what exists already is not an error. Whether a call that
    failed ambiguously took effect is learned by reading, never from an undocumented answer: the
    channel for creation and membership (``repeat``), the channel's recent messages for posts
    (``find_message`` on the caller's own id in ``data``); ``dedup_id`` is only a second layer.
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
        repeat: bool = False,
    ) -> None:
        """Create the group channel, or, if it exists already, make sure these users are members.

        ``repeat``: an earlier attempt may have taken effect; read the channel before acting again.
        """
        ...

    async def invite_members(self, channel_url: str, user_ids: Sequence[str]) -> None:
        """Add members to an existing channel."""
        ...

    async def remove_members(
        self, channel_url: str, user_ids: Sequence[str], *, repeat: bool = False
    ) -> None:
        """Remove members from a channel; removing a non-member is not an error.

        ``repeat``: an earlier attempt may have taken effect; read the channel before acting again.
        """
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
        """Post a text message as ``sender_id``, passing ``dedup_id`` as a second layer against repeats.

        Does not by itself guarantee one post per ``dedup_id``: the caller reconciles with
        :meth:`find_message` after an ambiguous failure.
        """
        ...

    async def find_message(
        self, channel_url: str, *, sender_id: str, custom_type: str, data: str, text: str | None = None
    ) -> SentChatMessage | None:
        """The message ``sender_id`` posted with exactly this ``custom_type`` and ``data`` (which
        carries the caller's own id of it) among the channel's recent messages, or None.

        Raises :class:`engine.errors.ChatGatewayError` when the channel cannot be read.
        """
        ...


# --- persistence ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatientRelation:
    """What holds between one person (by user id and organization) and one patient."""

    patient_id: int
    patient_organization_id: int
    on_care_team: bool
    #: The person's emergency session for the patient that is open now, if any (and asked for).
    break_glass_session_id: int | None = None


@dataclass(frozen=True)
class NewUser:
    email: str
    password_hash: str
    first_name: str
    last_name: str
    role: Role
    organization_id: int
    #: Self-registered while ``auth.require_approval`` holds: no login until an admin approves.
    pending_approval: bool = False


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
    scope: frozenset[ConsentScope] = FULL_SCOPE


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

    async def exists(self, email: str) -> bool:
        """Whether any account (any organization, any state) has this lower-cased email."""
        ...

    async def update_account(
        self,
        user_id: int,
        *,
        is_active: bool | None = None,
        role: Role | None = None,
        pending_approval: bool | None = None,
        sessions_valid_after: datetime | None = None,
    ) -> User:
        """Change the given fields (None leaves one as it is) and return the account."""
        ...


class OrganizationRepository(Protocol):
    async def add(self, name: str, *, self_registration: bool) -> Organization:
        """Insert; raises :class:`engine.errors.Conflict` if the name is taken."""
        ...

    async def get(self, organization_id: int) -> Organization | None: ...

    async def by_name(self, name: str) -> Organization | None: ...

    async def list(self, after: int | None, limit: int, *, only: int | None = None) -> Page[Organization]:
        """Organizations by id; ``only`` restricts the page to that one organization."""
        ...

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

    async def list(
        self, after: int | None, limit: int, *, visible_to: int | None = None, owned: bool, shared: bool
    ) -> Page[ComplianceGroup]:
        """Groups by id. With ``visible_to``, only those that organization owns (if ``owned``) or that
        were shared with it (if ``shared``); without, every group."""
        ...

    async def share(self, group_id: int, organization_id: int, shared_by: int) -> bool:
        """Share the group with the organization; False if it was shared with it already."""
        ...


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
        self, patient_id: int, *, user_id: int, break_glass_at: datetime | None = None
    ) -> PatientRelation | None:
        """None if the patient does not exist. Whether a consent covers the person's organization is
        answered by the in-memory consent index (:meth:`engine.services.Decider.relation_facts`),
        which, unlike a plain lookup, also weighs the workflow's scope and purposes. With
        ``break_glass_at``, ``break_glass_session_id`` is the person's emergency session for the
        patient open at that moment (as :meth:`BreakGlassRepository.open_session`), read with the
        relation instead of in a round trip of its own."""
        ...

    async def external_consents(
        self, patient_id: int, phone_number: str, organization_id: int | None
    ) -> list[ConsentCandidate]:
        """The consents that could let this external number take part for the patient: those naming
        the number, and (only if the number is in ``organization_id``'s contact directory) those
        naming that organization or a group it belongs to. Which one counts, if any, is decided by
        :func:`engine.facts.choose_consent`."""
        ...


class ContactDirectory(Protocol):
    """Organizations' directories of external phone numbers, in the workflow's transaction."""

    async def add(
        self, organization_id: int, phone_number: str, name: str, added_by: int
    ) -> OrganizationContact:
        """Insert; raises :class:`engine.errors.Conflict` if the number is listed already."""
        ...

    async def list(self, organization_id: int) -> list[OrganizationContact]: ...

    async def remove(self, organization_id: int, contact_id: int) -> bool:
        """Delete the organization's entry; False if it has no such entry."""
        ...


class AuditLog(Protocol):
    def record(self, event: AuditEvent) -> None:
        """Buffer an event; it is written with the transaction (or, on rollback, on its own)."""
        ...

    def amend_last(
        self,
        workflow: str,
        *,
        resource_id: str | None = None,
        patient_id: int | None = None,
        details: Mapping[str, DetailValue] | None = None,
    ) -> None:
        """Complete the latest ``workflow`` decision once the record exists (a create decides before
        the record has an id): set the given ids, merge the given details; None leaves a field."""
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
    def messaging(self) -> MessagingRepository: ...

    @property
    def audit(self) -> AuditLog: ...

    @property
    def audit_trail(self) -> AuditTrail: ...

    @property
    def break_glass(self) -> BreakGlassRepository: ...

    @property
    def consent_lifecycle(self) -> ConsentLifecycle: ...

    @property
    def login_throttle(self) -> LoginThrottleRepository: ...

    @property
    def contacts(self) -> ContactDirectory: ...

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
        """True if the token's account still exists, is active and approved, has the role and
        organization the token claims, and its sessions were not ended after the token was issued:
        a deactivated, re-roled or logged-out account loses access at once, not at expiry."""
        ...


class LoginThrottleRepository(Protocol):
    """Failed-login counts shared by every instance (keys from :mod:`engine.login_throttle`)."""

    async def states(self, keys: Sequence[str]) -> dict[str, ThrottleState]:
        """The state of each key that has one; a key without failures is absent."""
        ...

    async def record_failure(self, key: str, now: datetime, backoff: Backoff) -> ThrottleState:
        """Count one failure (atomically: concurrent failures are all counted) and set the back-off
        or lock it earns; failures older than the back-off's window are forgotten first."""
        ...

    async def clear(self, key: str) -> bool:
        """Forget the key's failures, lock included; returns whether there was anything to forget."""
        ...


class PasswordStrength(Protocol):
    async def weakness(self, password: str, user_inputs: Sequence[str]) -> str | None:
        """None for an acceptable password, else why not: ``common`` (on a list of common or
        breached passwords) or ``guessable`` (easy to guess, e.g. built from ``user_inputs``)."""
        ...


class AccountNotifier(Protocol):
    """Tells an account's owner about something done with their address (by email in a real
    deployment). Called after the transaction commits; it must not fail the request."""

    async def registration_attempted(self, user: User) -> None:
        """Someone tried to register an account with this user's email address."""
        ...

    async def registration_received(self, user: User) -> None:
        """A new account was registered with this address (and may await approval)."""
        ...


class DeliveryTrigger(Protocol):
    def wake(self) -> None:
        """Tell the outbox relay there is work (after a commit); a hint, never required for delivery."""
        ...


# --- messaging: per-recipient delivery, SMS, webhooks, idempotency (issue 3) -------------------------


@dataclass(frozen=True)
class SmsRecipient:
    """An external participant of a conversation as the SMS fan-out needs them."""

    participant_id: int
    phone_number: str
    chat_user_id: str
    organization_id: int | None
    opted_out: bool
    #: The participant was removed from the conversation (their coverage ended): never text them.
    removed: bool
    #: Compliance groups the participant's organization belongs to (for the full-text SMS rule).
    compliance_group_ids: frozenset[int]
    #: The consents that could let them be texted about this patient (naming their number, or their
    #: directory organization); which one counts now is the fact builder's decision.
    consents: tuple[ConsentCandidate, ...] = ()


@dataclass(frozen=True)
class NewDelivery:
    recipient: str
    state: DeliveryState
    external_participant_id: int | None = None
    reason: str | None = None
    content: str | None = None
    #: For a message already in the channel: the chat provider's created_at (read receipts use it).
    provider_ts_ms: int | None = None


@dataclass(frozen=True)
class ReplyRoute:
    """One conversation an inbound SMS from a number could go to: the number's participant there."""

    conversation_id: int
    patient_id: int
    channel_url: str
    participant_id: int
    chat_user_id: str
    phone_number: str
    organization_id: int | None
    #: The participant's reply code ("#2"); see engine.sms.reply_code.
    reply_code: int = 0
    #: False once the participant was removed from the conversation (their consent revoked).
    active: bool = True


class MessagingRepository(Protocol):
    """Per-recipient delivery state, SMS opt-outs and webhook bookkeeping, in the workflow's transaction."""

    async def sms_recipients(self, conversation_id: int, patient_id: int) -> list[SmsRecipient]:
        """Every external participant of the conversation, with opt-out and removal flags and the
        consent that lets them be texted about the patient at ``at``."""
        ...

    async def add_deliveries(self, message_id: int, deliveries: Sequence[NewDelivery]) -> list[int]:
        """Insert delivery rows; returns their ids in order."""
        ...

    async def deliveries_for(self, message_ids: Sequence[int]) -> dict[int, tuple[RecipientDelivery, ...]]:
        """The delivery rows of these messages, channel first."""
        ...

    async def get_message(self, message_id: int) -> Message | None: ...

    async def conversation_by_channel(self, channel_url: str) -> Conversation | None: ...

    async def user_by_chat_id(self, chat_user_id: str) -> User | None: ...

    async def add_posted_message(
        self, conversation_id: int, sender_id: int, text: str, chat_message_id: int, chat_ts_ms: int
    ) -> Message | None:
        """Store a message a staff member posted in the chat app itself; None if stored already."""
        ...

    async def mark_read(self, conversation_id: int, reader_chat_id: str, read_ts_ms: int) -> int:
        """Channel deliveries of others' messages posted up to ``read_ts_ms`` become ``delivered``."""
        ...

    async def reply_routes(self, phone_number: str) -> list[ReplyRoute]:
        """Every conversation the number is (or was) an external participant in: the one that texted
        it last first, then the newest admission first."""
        ...

    async def set_opt_out(self, phone_number: str, opted_out: bool, provider_message_id: str) -> bool:
        """Record STOP (True) or START (False); returns whether anything changed."""
        ...

    async def finish_webhook_event(self, event_id: int, status: str) -> None:
        """Mark a stored webhook event processed or ignored, in the transaction of its effects."""
        ...

    async def bind_idempotency_key(self, claim_id: int, resource_id: int) -> None:
        """Name the resource an Idempotency-Key created, in the transaction that created it."""
        ...


@dataclass(frozen=True)
class SendContext:
    """Everything deciding and planning one send needs, read in one round trip."""

    conversation_id: int
    patient_id: int
    #: None when the conversation's patient record no longer exists.
    patient_organization_id: int | None
    is_member: bool
    on_care_team: bool
    #: The id the message will have if it is stored (reserved from its sequence; a refused send
    #: leaves a gap, as a rolled-back insert would).
    message_id: int
    sms_recipients: tuple[SmsRecipient, ...]
    #: The sender's emergency (break-the-glass) session for the patient open now, if any.
    break_glass_session_id: int | None = None


@dataclass(frozen=True)
class NewSend:
    """A decided send: the message, its delivery rows, and the Idempotency-Key claim to bind."""

    message_id: int
    conversation_id: int
    sender_id: int
    text: str
    deliveries: tuple[NewDelivery, ...]
    idempotency_claim: int | None = None


class SendUnitOfWork(Protocol):
    """The send-message workflow's unit of work: one read and one atomic write.

    Sending is the busiest workflow, so it does not go through the general :class:`UnitOfWork`:
    :meth:`context` reads the conversation, the sender's relation to its patient and the SMS
    recipients in one statement, and :meth:`commit` stores the message, its delivery rows, its
    outbox entries (the chat post, one text per queued SMS delivery), the Idempotency-Key binding
    and the buffered audit events in one statement, so they are written together or not at all.
    Leaving the ``async with`` block without committing writes the buffered events on their own,
    marked ``denied`` or ``failure``, as :class:`UnitOfWork` does.
    """

    @property
    def audit(self) -> AuditLog: ...

    async def context(self, conversation_id: int, user_id: int, at: datetime) -> SendContext | None:
        """None if there is no such conversation."""
        ...

    async def commit(self, send: NewSend) -> datetime:
        """Store the send with the buffered audit events; returns the message's ``created_at``."""
        ...

    async def __aenter__(self) -> SendUnitOfWork: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None: ...


class SendUnitOfWorkFactory(Protocol):
    def __call__(self) -> SendUnitOfWork: ...


class SmsGateway(Protocol):
    """Text messages to external participants (Sendbird Business Messaging in production).

    ``send_sms`` either hands the text to the provider or raises a
    :class:`engine.errors.ChatGatewayError` subclass whose ``retryable`` flag tells the relay
    whether to try again. The provider offers no dedup key, so a retry after an ambiguous failure
    (timeout, dropped connection) may text twice: delivery is at least once, never lost.
    """

    async def send_sms(self, *, recipient_user_id: str, phone_number: str, text: str) -> str:
        """Send ``text`` to the Sendbird user carrying ``phone_number``; returns the provider's id."""
        ...


# --- consent lifecycle, consent index, break-the-glass (issue 4) ------------------------------------


@dataclass(frozen=True)
class ExternalCoverage:
    """An external SMS participant still in a conversation, and the consent that let them in."""

    participant_id: int
    conversation_id: int
    phone_number: str
    organization_id: int | None
    chat_user_id: str


@dataclass(frozen=True)
class BreakGlassSession:
    """Emergency access one clinician opened to one patient, until ``expires_at``."""

    id: int
    user_id: int
    organization_id: int
    patient_id: int
    patient_organization_id: int
    reason: str
    opened_at: datetime
    expires_at: datetime

    def is_open(self, now: datetime) -> bool:
        return self.opened_at <= now < self.expires_at


class ConsentLifecycle(Protocol):
    """Revocation and the numbered change log, in the workflow's transaction."""

    async def get_for_update(self, consent_id: int) -> Consent | None:
        """The consent, locked until the transaction ends (two revocations cannot interleave)."""
        ...

    async def revoke(self, consent_id: int, *, revoked_by: int, reason: str, at: datetime) -> Consent:
        """Mark the consent revoked at ``at``; it stops counting from that moment."""
        ...

    async def record_change(self, consent_id: int, patient_id: int, op: str) -> int:
        """Append to the change log and notify every instance on commit (same transaction); the
        returned sequence number orders the change. The notification carries ids only."""
        ...

    async def patient_conversations(self, patient_id: int) -> list[Conversation]:
        """Every conversation about the patient, with its current staff members."""
        ...

    async def remove_members(self, conversation_id: int, user_ids: Sequence[int]) -> None:
        """Take staff out of a conversation: they can no longer read it or send into it."""
        ...

    async def externals_admitted_by(self, consent_id: int) -> list[ExternalCoverage]:
        """External participants (not yet removed) whose admission rests on this consent."""
        ...

    async def readmit_external(self, participant_id: int, consent_id: int) -> None:
        """Another active consent names the participant: let it carry them from now on."""
        ...

    async def remove_external(self, participant_id: int, at: datetime) -> None:
        """Mark the participant removed (``external_participants.removed_at``): no SMS after this."""
        ...


class BreakGlassRepository(Protocol):
    async def add(
        self, *, user_id: int, organization_id: int, patient_id: int, reason: str, expires_at: datetime
    ) -> BreakGlassSession: ...

    async def open_session(self, user_id: int, patient_id: int, at: datetime) -> int | None:
        """The id of the user's emergency session for the patient that is open at ``at``, if any."""
        ...

    async def list_for_organization(
        self, organization_id: int, after: int | None, limit: int
    ) -> Page[BreakGlassSession]:
        """Sessions opened by the organization's staff or on its patients, newest first."""
        ...


# --- audit trail: searches and the accounting of disclosures (issue 5) -------------------------------


class AuditTrail(Protocol):
    """Reads of the stored audit trail, in the workflow's transaction. Never writes."""

    async def search(self, query: AuditFilter, after: int | None, limit: int) -> Page[AuditRecord]:
        """Events matching every given filter, by ascending id (a stable order: ids never change)."""
        ...

    async def disclosures(
        self, patient_id: int, since: datetime, until: datetime, after: int | None, limit: int
    ) -> Page[Disclosure]:
        """Allowed, committed accesses to the patient's data by people of another organization under
        a consent, and disclosures to external parties, in the period, by ascending id."""
        ...


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did: ``swapped`` in a new version, found it ``unchanged``, or ``rejected`` it
    (``problems`` says why, with file and line; the previous version keeps serving)."""

    outcome: str
    version: str
    previous_version: str
    problems: tuple[str, ...] = ()


class PolicyReloader(Protocol):
    async def reload(self, trigger: str) -> ReloadResult:
        """Read the policy files, check them and run their test tables; swap only if all pass."""
        ...
