"""Domain types shared by workflows, ports and adapters. Frozen, plain data, no behaviour beyond rules
that belong to the thing itself (a consent knows when it is active, a read mark what it covers).

Longer than 400 lines because it is the one vocabulary every layer speaks: some thirty small types
of a dozen lines each, most used by several capabilities (a Message by messaging, recalls,
retention and receipts). Split by capability, each port and workflow would import the same nouns
from several modules; kept whole, a reader finds every noun in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Generic, TypeVar

T = TypeVar("T")


class Role(StrEnum):
    PEER_SUPPORT = "peer_support"
    CARE_TEAM_MEMBER = "care_team_member"
    ADMIN = "admin"
    COMPLIANCE_OFFICER = "compliance_officer"
    AUDITOR = "auditor"


#: Roles a person may give themself by registering. Everything else is granted by an admin or the CLI.
SELF_REGISTRABLE_ROLES = frozenset({Role.PEER_SUPPORT, Role.CARE_TEAM_MEMBER})

#: Participant kinds the policy decides about that are not user roles.
EXTERNAL_PARTICIPANT = "external"


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class RecipientType(StrEnum):
    ORGANIZATION = "organization"
    COMPLIANCE_GROUP = "compliance_group"
    EXTERNAL = "external"


class Purpose(StrEnum):
    """Purpose of use, as 42 CFR Part 2 and HIPAA name them."""

    TREATMENT = "treatment"
    CARE_COORDINATION = "care_coordination"
    PAYMENT = "payment"
    HEALTHCARE_OPERATIONS = "healthcare_operations"


class ConsentScope(StrEnum):
    """What a consent discloses: the record (read), conversations about the patient (message), SMS to
    an external party (sms), and changes to the record and its care team (write). A workflow
    declares the scope it needs in policies/workflows.toml."""

    READ = "read"
    MESSAGE = "message"
    SMS = "sms"
    WRITE = "write"


#: The scope of a consent recorded without one: read, message and sms (what consents meant before
#: scopes). ``write`` is never implied: a consent allows changes only if it says so.
FULL_SCOPE = frozenset({ConsentScope.READ, ConsentScope.MESSAGE, ConsentScope.SMS})


#: How far the civil time furthest ahead (Kiribati's Line Islands, UTC+14) runs ahead of UTC.
FURTHEST_AHEAD_OF_UTC = timedelta(hours=14)


def latest_today(now: datetime) -> date:
    """The latest calendar date that is "today" somewhere at ``now``. A date a person writes down
    (a signature, a birth) is in the future only after this one: the clinic's today, wherever the
    clinic is, may be a day ahead of the service's UTC date."""
    return (now.astimezone(UTC) + FURTHEST_AHEAD_OF_UTC).date()


class DeliveryState(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class Actor:
    """Who is acting: the authenticated user as the request presents them, plus request context."""

    user_id: int
    role: Role
    organization_id: int
    request_id: str = ""
    source_address: str | None = None
    #: The purpose of use the client states for this request (X-Purpose-Of-Use), if any.
    purpose_of_use: str | None = None
    #: When the access token was issued (seconds since the epoch), for session revocation.
    issued_at: float | None = None


@dataclass(frozen=True)
class Organization:
    id: int
    name: str
    self_registration: bool
    created_at: datetime


@dataclass(frozen=True)
class OrganizationContact:
    """An external phone number an organization's admins vouch for as one of its people."""

    id: int
    organization_id: int
    phone_number: str
    name: str
    added_by: int
    created_at: datetime


@dataclass(frozen=True)
class ComplianceGroup:
    id: int
    name: str
    description: str | None
    organization_id: int
    member_organization_ids: tuple[int, ...]
    created_at: datetime
    #: Organizations the owner (``organization_id``) shared the group with: their compliance officers
    #: may name it in their own patients' consents.
    shared_with: tuple[int, ...] = ()


@dataclass(frozen=True)
class User:
    id: int
    email: str
    first_name: str
    last_name: str
    role: Role
    organization_id: int
    is_active: bool
    chat_user_id: str
    created_at: datetime
    #: Self-registered and not yet approved by an admin: cannot log in.
    pending_approval: bool = False


@dataclass(frozen=True)
class Credentials:
    user: User
    password_hash: str


@dataclass(frozen=True)
class Patient:
    id: int
    organization_id: int
    first_name: str
    last_name: str
    date_of_birth: date | None
    risk_level: RiskLevel
    created_by: int
    created_at: datetime
    updated_at: datetime
    #: Covers 42 CFR Part 2 records: a consent for this patient must be a Part 2 consent.
    part2: bool = False


@dataclass(frozen=True)
class Part2Elements:
    """What a consent to disclose 42 CFR Part 2 records must hold besides its recipient, purpose and
    expiry (42 CFR 2.31(a)): who may disclose, what information, the patient's signature and its
    date, and that the patient was told of the right to revoke. ``expiry_event`` is the event that
    ends the consent when it has no expiry date (2.31(a)(6): "an expiration date or an event")."""

    discloser: str
    information: str
    signed_by: str
    signed_on: date
    expiry_event: str | None = None
    revocation_right_stated: bool = True


@dataclass(frozen=True)
class Consent:
    id: int
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
    created_at: datetime
    revoked_at: datetime | None = None
    revocation_reason: str | None = None
    scope: frozenset[ConsentScope] = FULL_SCOPE
    revoked_by: int | None = None
    #: Set when the consent covers 42 CFR Part 2 records: its 2.31 elements; every disclosure under
    #: it carries the 2.32 notice.
    part2: Part2Elements | None = None

    def is_active(self, now: datetime) -> bool:
        """Active from ``effective_at`` until it expires or is revoked, whichever comes first."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return False
        if self.expires_at is not None and self.expires_at <= now:
            return False
        return self.effective_at <= now


@dataclass(frozen=True)
class CareTeamMember:
    user_id: int
    role: Role
    organization_id: int
    added_at: datetime


@dataclass(frozen=True)
class CareTeam:
    id: int
    patient_id: int
    name: str
    organization_id: int
    created_at: datetime
    members: tuple[CareTeamMember, ...] = ()


@dataclass(frozen=True)
class ExternalParticipant:
    id: int
    phone_number: str
    display_name: str
    chat_user_id: str
    consent_id: int
    #: When they were removed from the conversation (their consent ended); None while a participant.
    removed_at: datetime | None = None


@dataclass(frozen=True)
class Conversation:
    id: int
    patient_id: int
    title: str
    channel_url: str
    organization_id: int
    created_by: int
    created_at: datetime
    channel_state: str = "pending"
    member_ids: tuple[int, ...] = ()
    external_participants: tuple[ExternalParticipant, ...] = ()
    #: The messages the person reading it has not read (not their own): set by the workflows that
    #: answer a member, None where it was not counted.
    unread_count: int | None = None
    #: The care team whose on-call role the conversation includes, and who holds it in the channel.
    on_call_care_team_id: int | None = None
    on_call_holder_id: int | None = None


@dataclass(frozen=True)
class RecipientDelivery:
    recipient: str
    channel: str
    state: DeliveryState
    reason: str | None = None
    updated_at: datetime | None = None
    #: For the chat channel: when the chat provider took the message (its ``created_at``, ms).
    provider_ts_ms: int | None = None


class ReceiptState(StrEnum):
    """Where one message stands for one member (other than its sender).

    ``sent``: accepted by caremsg, on its way to the chat channel; ``delivered``: in the chat channel,
    where the member's chat clients receive it; ``read``: the member's read state covers it (from a
    caremsg client or a chat client's receipt); ``failed``: it could not be posted to the channel.
    """

    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"


@dataclass(frozen=True)
class ReadMark:
    """A member's read state in a conversation: every message up to ``last_read_message_id`` is read.

    It only moves forward; ``read_at`` is when it last moved, ``source`` who said so (``api``: a
    caremsg client; ``chat``: a chat client's read receipt)."""

    conversation_id: int
    user_id: int
    last_read_message_id: int
    read_at: datetime
    source: str


def has_read(message: Message, user_id: int, mark: ReadMark | None) -> bool:
    """Whether user ``user_id`` has read ``message``: they sent it, or their mark (``mark``, None when
    they have none) in its conversation is at it or later. What receipts, unread counts and the
    escalation of urgent messages all rest on; its SQL spelling is
    ``integrations.db.reads.unread_sql`` (the negation)."""
    if user_id == message.sender_id:
        return True
    return (
        mark is not None
        and mark.conversation_id == message.conversation_id
        and mark.user_id == user_id
        and mark.last_read_message_id >= message.id
    )


@dataclass(frozen=True)
class MemberReceipt:
    """One member's receipt of one message: its state, when it reached the channel, when read."""

    user_id: int
    state: ReceiptState
    delivered_at: datetime | None = None
    #: When the member's read state moved past the message: they had read it by then (a later mark
    #: that covers several messages gives them all its time).
    read_at: datetime | None = None


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    sender_id: int
    text: str
    state: DeliveryState
    created_at: datetime
    chat_message_id: int | None = None
    deliveries: tuple[RecipientDelivery, ...] = field(default=())
    #: Per member other than the sender; None where not read (the send path's answer).
    receipts: tuple[MemberReceipt, ...] | None = None
    #: "routine" or "urgent" (engine/escalation.py).
    priority: str = "routine"
    #: Who acknowledged an urgent message first, and when.
    acknowledged_by: int | None = None
    acknowledged_at: datetime | None = None
    #: The escalation steps taken for an urgent message, in the order they were taken.
    escalation: tuple[EscalationTaken, ...] = field(default=())
    #: Set once the message is recalled: ``text`` is then empty (the content is in the legal record).
    recalled_at: datetime | None = None
    recalled_by: int | None = None
    #: A correction names the message it replaces; the replaced one names its correction.
    corrects_message_id: int | None = None
    corrected_by_message_id: int | None = None
    #: Set once retention deleted the content (policies/retention.toml): ``text`` is then empty.
    content_deleted_at: datetime | None = None
    #: Files attached to it (engine/workflows/attachments.py): what they are, never their bytes.
    attachments: tuple[Attachment, ...] = field(default=())

    @property
    def recalled(self) -> bool:
        return self.recalled_at is not None

    @property
    def content_deleted(self) -> bool:
        return self.content_deleted_at is not None


@dataclass(frozen=True)
class EscalationTaken:
    """One escalation step taken for an urgent message: which, when, whom it alerts, what became of it."""

    step: str
    round: int
    taken_at: datetime
    target_user_ids: tuple[int, ...]
    #: queued, done, cancelled (acknowledged before it went out), failed, or none (nobody to alert).
    state: str
    reason: str | None = None


@dataclass(frozen=True)
class Attachment:
    """A file attached to a message: its content type, size and SHA-256 (hex). No file name."""

    id: int
    message_id: int
    content_type: str
    size: int
    sha256: str


@dataclass(frozen=True)
class AttachmentFile:
    """An attachment with its bytes (a download, or the relay's post)."""

    attachment: Attachment
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class RecalledContent:
    """The legal record of a recalled message: what it said, who recalled it, when and why."""

    message_id: int
    conversation_id: int
    sender_id: int
    sent_at: datetime
    recalled_at: datetime
    recalled_by: int
    reason: str = field(repr=False)
    #: Empty once retention deleted the content (``content_deleted_at``): the record stays.
    text: str = field(repr=False)
    #: The files attached to it (their metadata), kept with the legal record: each one's bytes are
    #: read under the same decision (``message.read_recalled``).
    attachments: tuple[Attachment, ...] = ()
    content_deleted_at: datetime | None = None
    #: The message that corrects it (``message.correct``), if one was sent.
    corrected_by_message_id: int | None = None


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list, with the cursor (an opaque id) of the next page if there is one."""

    items: tuple[T, ...]
    next_cursor: int | None
