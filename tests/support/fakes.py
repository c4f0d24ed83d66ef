"""In-memory fakes of the engine's ports, for workflow tests that run in milliseconds.

Wire them with :func:`fake_services`, which builds the real :class:`engine.services.Services` over
the real policy files, so a workflow decides exactly as in production; only storage, hashing,
tokens, delivery and time are doubles. Model: cosmicpython/code tests/unit/test_handlers.py.

``FakeDatabase`` is what the repositories share across units of work. A unit of work works on a
copy and writes it back only on ``commit()``; audit events follow the real unit of work's rule
(integrations/db/uow.py): committed with the work, or, when the work does not commit, kept anyway
and ended ``denied`` (a refusal) or ``failure``. So a denial's audit record is visible in
``db.audit`` exactly as it would be in ``audit_events``.

Every repository of :class:`engine.ports.units.UnitOfWork` is faked, each behaving as its SQL
counterpart in integrations/db (tests/integration/test_fake_repositories.py runs the same scenarios
against both). The audit trail's searches answer empty pages and record what was asked.

Longer than 400 lines because every fake shares FakeDatabase and the unit of work's copy-and-commit.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from engine.audit import AuditEvent
from engine.audit_chain import ChainHead, Problem, VerifyReport
from engine.audit_trail import Anchor, AuditFilter, AuditRecord, ChainStatus, VerificationRun
from engine.consent_index import ConsentIndex, IndexedConsent
from engine.effects import Effect, PostAttachment, PostMessage, TextMessage
from engine.errors import Conflict, Unauthenticated
from engine.facts import ConsentCandidate, millis
from engine.login_throttle import Backoff, ThrottleState, blocked_until
from engine.model import (
    Actor,
    Attachment,
    AttachmentFile,
    CareTeam,
    CareTeamMember,
    ComplianceGroup,
    Consent,
    Conversation,
    Credentials,
    DeliveryState,
    EscalationTaken,
    ExternalParticipant,
    Message,
    Organization,
    OrganizationContact,
    Page,
    Patient,
    ReadMark,
    RecalledContent,
    RecipientDelivery,
    RecipientType,
    RiskLevel,
    Role,
    User,
    has_read,
)
from engine.policy import Policy, PolicyHolder
from engine.policy_edits import PolicyFiles
from engine.ports.attachments import NewAttachment
from engine.ports.consents import BreakGlassSession, ExpiredConsent, ExternalCoverage, NewConsent
from engine.ports.gateways import ChatPostKind, SentChatMessage
from engine.ports.identity import IssuedToken, NewUser
from engine.ports.messaging import (
    Acknowledged,
    NewDelivery,
    NewExternalParticipant,
    NewSend,
    RecallOutcome,
    ReplyRoute,
    SendContext,
    SmsRecipient,
)
from engine.ports.patients import NewPatient, PatientRead, PatientRelation
from engine.ports.policy import NewPolicyProposal, PolicyProposal, ProposalState, ReloadResult
from engine.ports.retention import Cutoffs, ExpiredContent, ExpiredSmsReply, NewLegalHold
from engine.ports.rosters import OnCallRole
from engine.retention import LegalHold
from engine.rosters import OnCallShift, StaffAway
from engine.services import EngineSettings, Services
from engine.sms import CHANNEL_RECIPIENT
from engine.workflows.messaging import texted
from integrations.db.uow import BufferedAuditLog, unfinished
from integrations.effects.executor import RelayContext
from integrations.effects.outbox import OutboxEntry
from integrations.policy_edits import POLICY_FILES
from integrations.policy_files import load_policy, read_policy_files, tested_sources

T = TypeVar("T")

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


# --- time, passwords, tokens, delivery ---------------------------------------------------------------


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class ShiftedClock:
    """The real time, moved forward when a test says so: the clock of a real app (``create_app``'s
    ``clock``), whose database and tokens keep real time, so it never runs behind them."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        if timedelta(**delta) < timedelta():
            raise ValueError("a shifted clock only moves forward")
        self.offset += timedelta(**delta)

    def move_to(self, moment: datetime) -> None:
        """Now is ``moment`` (a moment later, the real time having moved on meanwhile)."""
        self.advance(seconds=(moment - self()).total_seconds())

    def reset(self) -> None:
        """Back on the real time."""
        self.offset = timedelta()


class FakePasswords:
    """A reversible 'hash': tests see what was hashed; verify compares."""

    async def hash(self, password: str) -> str:
        return f"fake-hash:{password}"

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return password_hash == f"fake-hash:{password}"


class FakeTokens:
    """Tokens that name their user; verify answers the actor the token was issued for."""

    def __init__(self) -> None:
        self.issued: dict[str, User] = {}

    def issue(self, user: User) -> IssuedToken:
        token = f"token-{user.id}-{secrets.token_hex(4)}"
        self.issued[token] = user
        return IssuedToken(token, 3600)

    def verify(self, token: str) -> Actor:
        user = self.issued.get(token)
        if user is None:
            raise Unauthenticated("Invalid token.")
        return Actor(user.id, user.role, user.organization_id)


class FakeDelivery:
    """Counts wake-ups of the outbox relay, and checks what each says it was woken for: a wake that
    names the effect types queued must name the type of every effect enqueued since the wake before
    it (one naming too little would leave the relay that delivers the rest asleep until its poll)."""

    def __init__(self, database: FakeDatabase) -> None:
        self.wakes = 0
        #: What each wake named, in order (None: it did not say).
        self.named: list[frozenset[type[Effect]] | None] = []
        self._database = database
        self._seen: list[Effect] = []

    def wake(self, queued: Collection[type[Effect]] | None = None) -> None:
        self.wakes += 1
        self.named.append(None if queued is None else frozenset(queued))
        seen = {id(e) for e in self._seen}
        new = [e for e in self._database.outbox if id(e) not in seen]
        self._seen = list(self._database.outbox)
        if queued is not None:
            missed = sorted({type(e).__name__ for e in new} - {t.__name__ for t in queued})
            if missed:
                named = sorted(t.__name__ for t in queued)
                raise AssertionError(f"a wake named {named}, not {missed} queued")


# --- the chat and SMS gateways ---------------------------------------------------------------------


@dataclass
class FakeChannel:
    name: str
    members: list[str]
    custom_type: str = ""
    data: str = ""
    messages: list[FakePost] = field(default_factory=list)


@dataclass(frozen=True)
class FakePost:
    """One message in a fake channel."""

    message_id: int
    sender_id: str
    text: str
    dedup_id: str
    custom_type: str
    data: str
    created_at_ms: int
    #: A file message's file: (name, content type, bytes).
    file: tuple[str, str, bytes] | None = None


class FakeChatGateway:
    """The chat service in memory: users, channels, members, messages (deduplicated by dedup id)."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self.clock = clock or FakeClock()
        self.users: dict[str, tuple[str, str | None]] = {}
        self.channels: dict[str, FakeChannel] = {}
        self._next_message_id = 1

    async def ensure_user(self, user_id: str, nickname: str, *, phone_number: str | None = None) -> None:
        self.users[user_id] = (nickname, phone_number)

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
        channel = self.channels.setdefault(channel_url, FakeChannel(name, [], custom_type, data))
        channel.members.extend(u for u in user_ids if u not in channel.members)

    async def invite_members(self, channel_url: str, user_ids: Sequence[str]) -> None:
        channel = self.channels[channel_url]
        channel.members.extend(u for u in user_ids if u not in channel.members)

    async def remove_members(
        self, channel_url: str, user_ids: Sequence[str], *, repeat: bool = False
    ) -> None:
        channel = self.channels[channel_url]
        channel.members[:] = [u for u in channel.members if u not in user_ids]

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
        """Posts once per dedup id: a repeat answers the message posted the first time."""
        channel = self.channels[channel_url]
        post = next((m for m in channel.messages if m.dedup_id == dedup_id), None)
        if post is None:
            post = FakePost(
                self._next_message_id,
                sender_id,
                text,
                dedup_id,
                custom_type,
                data,
                int(self.clock().timestamp() * 1000),
            )
            self._next_message_id += 1
            channel.messages.append(post)
        return SentChatMessage(post.message_id, channel_url, post.created_at_ms)

    async def send_file(
        self,
        channel_url: str,
        *,
        sender_id: str,
        file: bytes,
        file_name: str,
        content_type: str,
        dedup_id: str,
        custom_type: str = "",
        data: str = "",
    ) -> SentChatMessage:
        """A file message, posted once per dedup id like a text."""
        sent = await self.send_message(
            channel_url, sender_id=sender_id, text="", dedup_id=dedup_id, custom_type=custom_type, data=data
        )
        channel = self.channels[channel_url]
        channel.messages[:] = [
            dataclasses.replace(m, file=(file_name, content_type, file))
            if m.message_id == sent.message_id and m.file is None
            else m
            for m in channel.messages
        ]
        return sent

    async def find_message(
        self,
        channel_url: str,
        *,
        sender_id: str,
        custom_type: str,
        data: str,
        kind: ChatPostKind | None,
        text: str | None = None,
    ) -> SentChatMessage | None:
        """Among the posts of ``kind`` only, as Sendbird lists them: a file post is no text post."""
        for post in reversed(self.channels[channel_url].messages):
            if kind is not None and ("text" if post.file is None else "file") != kind:
                continue
            if (post.sender_id, post.custom_type, post.data) == (sender_id, custom_type, data) and (
                text is None or post.text == text
            ):
                return SentChatMessage(post.message_id, channel_url, post.created_at_ms)
        return None

    async def delete_message(self, channel_url: str, message_id: int) -> None:
        """Removed messages leave the channel's list (a message gone already is not an error)."""
        channel = self.channels[channel_url]
        channel.messages[:] = [m for m in channel.messages if m.message_id != message_id]


@dataclass(frozen=True)
class FakeText:
    recipient_user_id: str
    phone_number: str
    text: str


class FakeSmsGateway:
    """The SMS provider in memory: what it was asked to text, in order."""

    def __init__(self) -> None:
        self.sent: list[FakeText] = []

    async def send_sms(self, *, recipient_user_id: str, phone_number: str, text: str) -> str:
        self.sent.append(FakeText(recipient_user_id, phone_number, text))
        return f"fake-sms-{len(self.sent)}"


class FakeNotifier:
    """Tells no one: remembers whom it would have told, and of what."""

    def __init__(self) -> None:
        self.told: list[tuple[str, int]] = []  # (what, user id)

    async def registration_received(self, user: User) -> None:
        self.told.append(("registration_received", user.id))

    async def registration_attempted(self, user: User) -> None:
        self.told.append(("registration_attempted", user.id))


class FakePolicyReloader:
    """Reloads nothing: answers the result it was given and counts the calls."""

    def __init__(self, result: ReloadResult) -> None:
        self.result = result
        self.triggers: list[str] = []

    async def reload(self, trigger: str) -> ReloadResult:
        self.triggers.append(trigger)
        return self.result


class FakePolicyDirectory:
    """The policy directory in memory, read once from the shipped files: ``files`` maps each name
    (``roles.csv``, ``tests/default.csv``) to its content. Proposals are checked with the real
    ``policy check`` + ``policy test`` code over it; applying replaces the entry and answers what a
    reload would (``applied`` lists every write, in order)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.current = read_policy_files(directory or POLICY_DIR)
        self.version = self.current.sources.version
        self.applied: list[tuple[str, str]] = []

    @property
    def files(self) -> dict[str, str]:
        return {name: self.current.text_of(name) or "" for name in self.current.names}

    def editable(self) -> tuple[str, ...]:
        return POLICY_FILES + tuple(n for n, _ in self.current.tables)

    async def read(self, name: str) -> str:
        return self.current.text_of(name) or ""

    def _tested(self, files: PolicyFiles) -> tuple[Any, list[str]]:
        return tested_sources(files.sources, list(files.tables))

    async def problems(self, name: str, content: str) -> tuple[str, ...]:
        return tuple(self._tested(self.current.replaced(name, content))[1])

    async def apply(self, name: str, content: str) -> ReloadResult:
        self.current = self.current.replaced(name, content)
        self.applied.append((name, content))
        policy, problems = self._tested(self.current)
        previous = self.version
        if policy is None:
            return ReloadResult("rejected", previous, previous, tuple(problems))
        self.version = policy.version
        return ReloadResult(
            "swapped" if policy.version != previous else "unchanged", policy.version, previous
        )


# --- storage -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeThrottleRow:
    """One row of ``login_throttles`` (integrations/db/tables/identity.py)."""

    failures: int
    last_failure_at: datetime
    blocked_until: datetime | None = None
    locked_at: datetime | None = None


@dataclass
class FakeDatabase:
    """The committed state the fake repositories share; ``audit`` is the audit trail as stored."""

    clock: Callable[[], datetime] = field(default_factory=FakeClock)
    organizations: dict[int, Organization] = field(default_factory=dict)
    users: dict[int, User] = field(default_factory=dict)
    password_hashes: dict[int, str] = field(default_factory=dict)
    #: user id -> when their sessions were last ended (users.sessions_valid_after)
    sessions_valid_after: dict[int, datetime] = field(default_factory=dict)
    #: user id -> the number urgent-message alerts are texted to (users.alert_phone)
    alert_phones: dict[int, str] = field(default_factory=dict)
    compliance_groups: dict[int, ComplianceGroup] = field(default_factory=dict)
    patients: dict[int, Patient] = field(default_factory=dict)
    care_teams: dict[int, CareTeam] = field(default_factory=dict)
    break_glass_sessions: dict[int, BreakGlassSession] = field(default_factory=dict)
    #: Each organization's own review of a session: (session, organization) -> (at, by, note).
    break_glass_reviews: dict[tuple[int, int], tuple[datetime, int, str]] = field(default_factory=dict)
    #: the login_throttles table: key -> its row
    login_throttles: dict[str, FakeThrottleRow] = field(default_factory=dict)
    consents: dict[int, Consent] = field(default_factory=dict)
    #: the consent change log: (consent id, patient id, op); a change's seq is its position + 1
    consent_changes: list[tuple[int, int, str]] = field(default_factory=list)
    #: consent id -> when the expiry sweep ended its grants (consents.expiry_swept_at)
    consent_expiry_swept: dict[int, datetime] = field(default_factory=dict)
    contacts: dict[int, OrganizationContact] = field(default_factory=dict)
    #: conversations without their members and externals (see _hydrated)
    conversations: dict[int, Conversation] = field(default_factory=dict)
    conversation_members: dict[int, tuple[int, ...]] = field(default_factory=dict)
    externals: dict[int, FakeExternalRow] = field(default_factory=dict)
    messages: dict[int, Message] = field(default_factory=dict)
    deliveries: dict[int, FakeDeliveryRow] = field(default_factory=dict)
    #: conversation_reads: (conversation id, user id) -> the member's read mark
    reads: dict[tuple[int, int], ReadMark] = field(default_factory=dict)
    #: message id -> the escalation steps taken for it (the escalation_steps table)
    escalations: dict[int, tuple[EscalationTaken, ...]] = field(default_factory=dict)
    #: The effects enqueued, in order (the ``outbox`` table holds one row per effect).
    outbox: list[Effect] = field(default_factory=list)
    #: Effects a recall cancelled before they went out (outbox rows ``cancelled``), in order.
    cancelled_outbox: list[Effect] = field(default_factory=list)
    #: legal holds as (patient id or None, conversation id or None), while they last
    legal_holds: list[tuple[int | None, int | None]] = field(default_factory=list)
    #: legal hold id -> the hold (``legal_holds`` rows)
    legal_hold_rows: dict[int, LegalHold] = field(default_factory=dict)
    #: message id -> its legal record (``message_recalls``)
    message_recalls: dict[int, RecalledContent] = field(default_factory=dict)
    message_attachments: dict[int, AttachmentFile] = field(default_factory=dict)
    #: phone number -> the provider id of the STOP
    opt_outs: dict[str, str] = field(default_factory=dict)
    #: webhook event id -> how it ended (processed / ignored)
    webhook_events: dict[int, str] = field(default_factory=dict)
    #: The stored events whose body was emptied when they were finished.
    webhook_bodies_dropped: set[int] = field(default_factory=set)
    #: Idempotency-Key claim id -> the resource it created
    idempotency_keys: dict[int, int] = field(default_factory=dict)
    on_call_shifts: dict[int, OnCallShift] = field(default_factory=dict)
    staff_away: dict[int, StaffAway] = field(default_factory=dict)
    #: conversation id -> its on-call role (conversation_on_call)
    on_call_routes: dict[int, OnCallRole] = field(default_factory=dict)
    policy_proposals: dict[int, PolicyProposal] = field(default_factory=dict)
    next_id: int = 1
    audit: list[AuditEvent] = field(default_factory=list)
    #: what the audit trail was asked (search / disclosures), in order
    audit_queries: list[tuple[str, Any]] = field(default_factory=list)
    commits: int = 0

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def copy_of_tables(self) -> FakeDatabase:
        """A unit of work's working copy: every table copied (rows are immutable), the audit trail empty."""
        tables = {name: copy.copy(getattr(self, name)) for name in _TABLES}
        return dataclasses.replace(self, **tables, audit=[])

    def events(self, workflow: str | None = None) -> list[AuditEvent]:
        """The stored audit events, of one workflow if given."""
        return [e for e in self.audit if workflow is None or e.workflow == workflow]


#: The FakeDatabase fields a unit of work copies and, on commit, writes back.
_TABLES = tuple(
    f.name
    for f in dataclasses.fields(FakeDatabase)
    if f.name not in ("clock", "next_id", "audit", "audit_queries", "commits")
)


def _page(items: Sequence[T], after: int | None, limit: int, key: Callable[[T], int]) -> Page[T]:
    """Keyset pagination as the SQL repositories do it: ids after the cursor, one page."""
    items = sorted((i for i in items if after is None or key(i) > after), key=key)
    if len(items) > limit:
        kept = tuple(items[:limit])
        return Page(kept, key(kept[-1]))
    return Page(tuple(items), None)


class _Repo:
    def __init__(self, data: FakeDatabase) -> None:
        self.data = data


class FakeUserRepository(_Repo):
    async def add(self, user: NewUser) -> User:
        if any(u.email == user.email for u in self.data.users.values()):
            raise Conflict("An account with this email exists already.")
        new = User(
            self.data.new_id(),
            user.email,
            user.first_name,
            user.last_name,
            user.role,
            user.organization_id,
            True,
            f"staff_{secrets.token_hex(12)}",
            self.data.clock(),
            user.pending_approval,
        )
        self.data.users[new.id] = new
        self.data.password_hashes[new.id] = user.password_hash
        return new

    async def exists(self, email: str) -> bool:
        return any(u.email == email for u in self.data.users.values())

    async def get(self, user_id: int) -> User | None:
        return self.data.users.get(user_id)

    async def get_many(self, user_ids: Sequence[int]) -> dict[int, User]:
        return {i: self.data.users[i] for i in user_ids if i in self.data.users}

    async def update_account(
        self,
        user_id: int,
        *,
        is_active: bool | None = None,
        role: Role | None = None,
        pending_approval: bool | None = None,
        sessions_valid_after: datetime | None = None,
    ) -> User:
        """Changes the given fields; ``sessions_valid_after`` is kept apart (User does not carry it)."""
        user = self.data.users[user_id]
        changes: dict[str, Any] = {"is_active": is_active, "role": role, "pending_approval": pending_approval}
        updated = dataclasses.replace(user, **{k: v for k, v in changes.items() if v is not None})
        self.data.users[user_id] = updated
        if sessions_valid_after is not None:
            self.data.sessions_valid_after[user_id] = sessions_valid_after
        return updated

    async def alert_phone(self, user_id: int) -> str | None:
        return self.data.alert_phones.get(user_id)

    async def set_alert_phone(self, user_id: int, phone_number: str | None) -> None:
        if phone_number is None:
            self.data.alert_phones.pop(user_id, None)
        else:
            self.data.alert_phones[user_id] = phone_number

    async def by_chat_id(self, chat_user_id: str) -> User | None:
        return next(
            (u for u in self.data.users.values() if u.chat_user_id == chat_user_id and u.is_active), None
        )

    async def credentials(self, email: str) -> Credentials | None:
        for user in self.data.users.values():
            if user.email == email:
                return Credentials(user, self.data.password_hashes[user.id])
        return None

    async def list_for_organization(self, organization_id: int, after: int | None, limit: int) -> Page[User]:
        mine = [u for u in self.data.users.values() if u.organization_id == organization_id]
        return _page(mine, after, limit, lambda u: u.id)


class FakeOrganizationRepository(_Repo):
    async def add(self, name: str, *, self_registration: bool) -> Organization:
        if any(o.name == name for o in self.data.organizations.values()):
            raise Conflict("An organization with this name exists already.")
        organization = Organization(self.data.new_id(), name, self_registration, self.data.clock())
        self.data.organizations[organization.id] = organization
        return organization

    async def get(self, organization_id: int) -> Organization | None:
        return self.data.organizations.get(organization_id)

    async def by_name(self, name: str) -> Organization | None:
        return next((o for o in self.data.organizations.values() if o.name == name), None)

    async def list(self, after: int | None, limit: int, *, only: int | None = None) -> Page[Organization]:
        organizations = [o for o in self.data.organizations.values() if only is None or o.id == only]
        return _page(organizations, after, limit, lambda o: o.id)

    async def existing(self, organization_ids: Sequence[int]) -> set[int]:
        return {i for i in organization_ids if i in self.data.organizations}


class FakeComplianceGroupRepository(_Repo):
    async def add(
        self,
        name: str,
        description: str | None,
        organization_id: int,
        created_by: int,
        members: Sequence[int],
    ) -> ComplianceGroup:
        taken = any(
            g.name == name and g.organization_id == organization_id
            for g in self.data.compliance_groups.values()
        )
        if taken:
            raise Conflict("A compliance group with this name exists already.")
        group = ComplianceGroup(
            self.data.new_id(), name, description, organization_id, tuple(members), self.data.clock()
        )
        self.data.compliance_groups[group.id] = group
        return group

    async def get(self, group_id: int) -> ComplianceGroup | None:
        return self.data.compliance_groups.get(group_id)

    async def list(
        self, after: int | None, limit: int, *, visible_to: int | None = None, owned: bool, shared: bool
    ) -> Page[ComplianceGroup]:
        def visible(group: ComplianceGroup) -> bool:
            if visible_to is None:
                return True
            return (owned and group.organization_id == visible_to) or (
                shared and visible_to in group.shared_with
            )

        groups = [g for g in self.data.compliance_groups.values() if visible(g)]
        return _page(groups, after, limit, lambda g: g.id)

    async def share(self, group_id: int, organization_id: int, shared_by: int) -> bool:
        group = self.data.compliance_groups[group_id]
        if organization_id in group.shared_with:
            return False
        shared_with = tuple(sorted((*group.shared_with, organization_id)))  # SQL hydrates by id
        self.data.compliance_groups[group_id] = dataclasses.replace(group, shared_with=shared_with)
        return True


_PATIENT_FIELDS = {"first_name", "last_name", "date_of_birth", "risk_level", "part2"}


class FakePatientRepository(_Repo):
    async def add(self, patient: NewPatient) -> Patient:
        now = self.data.clock()
        new = Patient(
            self.data.new_id(),
            patient.organization_id,
            patient.first_name,
            patient.last_name,
            patient.date_of_birth,
            patient.risk_level,
            patient.created_by,
            now,
            now,
            patient.part2,
        )
        self.data.patients[new.id] = new
        return new

    async def get(self, patient_id: int, *, hold: bool = False, for_update: bool = False) -> Patient | None:
        # One fake unit of work at a time: nothing to hold against.
        return self.data.patients.get(patient_id)

    async def update(self, patient_id: int, changes: Mapping[str, object]) -> Patient:
        unknown = set(changes) - _PATIENT_FIELDS
        if unknown:
            raise ValueError(f"not patient columns: {sorted(unknown)}")
        values: dict[str, Any] = {k: RiskLevel(v) if k == "risk_level" else v for k, v in changes.items()}
        updated = dataclasses.replace(self.data.patients[patient_id], **values, updated_at=self.data.clock())
        self.data.patients[patient_id] = updated
        return updated

    async def list_on_care_team_of(self, user_id: int, after: int | None, limit: int) -> Page[Patient]:
        ids = {
            t.patient_id
            for t in self.data.care_teams.values()
            if any(m.user_id == user_id for m in t.members)
        }
        return _page([self.data.patients[i] for i in ids], after, limit, lambda p: p.id)


class FakeCareTeamRepository(_Repo):
    async def create(self, patient_id: int, name: str, organization_id: int, created_by: int) -> CareTeam:
        if any(t.patient_id == patient_id for t in self.data.care_teams.values()):
            raise Conflict("This patient has a care team already.")
        team = CareTeam(self.data.new_id(), patient_id, name, organization_id, self.data.clock())
        self.data.care_teams[team.id] = team
        return team

    async def get(self, care_team_id: int) -> CareTeam | None:
        return self.data.care_teams.get(care_team_id)

    async def for_patient(self, patient_id: int) -> CareTeam | None:
        return next((t for t in self.data.care_teams.values() if t.patient_id == patient_id), None)

    async def add_member(self, care_team_id: int, user_id: int, added_by: int) -> bool:
        team = self.data.care_teams[care_team_id]
        if any(m.user_id == user_id for m in team.members):
            return False
        user = self.data.users[user_id]
        member = CareTeamMember(user.id, user.role, user.organization_id, self.data.clock())
        self.data.care_teams[care_team_id] = dataclasses.replace(team, members=(*team.members, member))
        return True


class FakeRelationshipFacts(_Repo):
    async def patient_relation(
        self, patient_id: int, *, user_id: int, break_glass_at: datetime | None = None
    ) -> PatientRelation | None:
        patient = self.data.patients.get(patient_id)
        if patient is None:
            return None
        on_team = any(
            t.patient_id == patient_id and any(m.user_id == user_id for m in t.members)
            for t in self.data.care_teams.values()
        )
        session_id = None
        if break_glass_at is not None:
            # As the SQL relation's subquery: the latest of the person's sessions open at that moment.
            session_id = await FakeBreakGlassRepository(self.data).open_session(
                user_id, patient_id, break_glass_at
            )
        return PatientRelation(patient_id, patient.organization_id, on_team, session_id)

    async def external_consents(
        self, patient_id: int, phone_number: str, organization_id: int | None, *, hold: bool = False
    ) -> list[ConsentCandidate]:
        # One fake unit of work at a time: nothing to hold against.
        return _consent_candidates(self.data, patient_id, phone_number, organization_id)


class FakeRosterRepository(_Repo):
    """integrations/db/rosters.py in memory: a care team's on-call shifts."""

    async def lock_team(self, care_team_id: int) -> None:
        return None  # one fake unit of work at a time: nothing to serialise

    async def between(self, care_team_id: int, starts_at: datetime, ends_at: datetime) -> list[OnCallShift]:
        found = [
            s
            for s in self.data.on_call_shifts.values()
            if s.care_team_id == care_team_id and s.overlaps(starts_at, ends_at)
        ]
        return sorted(found, key=lambda s: (s.starts_at, s.id))

    async def get(self, shift_id: int) -> OnCallShift | None:
        return self.data.on_call_shifts.get(shift_id)

    async def add(
        self, care_team_id: int, user_id: int, starts_at: datetime, ends_at: datetime, created_by: int
    ) -> OnCallShift:
        assert ends_at > starts_at, "ck_on_call_shifts_window"
        shift = OnCallShift(
            self.data.new_id(), care_team_id, user_id, starts_at, ends_at, created_by, self.data.clock()
        )
        self.data.on_call_shifts[shift.id] = shift
        return shift

    async def remove(self, shift_id: int) -> None:
        self.data.on_call_shifts.pop(shift_id, None)


class FakeAwayRepository(_Repo):
    """integrations/db/rosters.py in memory: staff away with a delegate."""

    async def of_user(self, user_id: int, at: datetime) -> list[StaffAway]:
        found = [
            w
            for w in self.data.staff_away.values()
            if w.user_id == user_id and (w.ends_at is None or w.ends_at > at)
        ]
        return sorted(found, key=lambda w: (w.starts_at, w.id))

    async def add(
        self, user_id: int, delegate_id: int, starts_at: datetime, ends_at: datetime | None
    ) -> StaffAway:
        assert delegate_id != user_id, "ck_staff_away_delegate_not_self"
        assert ends_at is None or ends_at > starts_at, "ck_staff_away_window"
        away = StaffAway(self.data.new_id(), user_id, delegate_id, starts_at, ends_at, self.data.clock())
        self.data.staff_away[away.id] = away
        return away

    async def end_from(self, user_id: int, at: datetime) -> int:
        changed = 0
        for w in list(self.data.staff_away.values()):
            if w.user_id != user_id:
                continue
            if w.starts_at >= at:
                del self.data.staff_away[w.id]
                changed += 1
            elif w.ends_at is None or w.ends_at > at:
                self.data.staff_away[w.id] = dataclasses.replace(w, ends_at=at)
                changed += 1
        return changed


class FakeOnCallRoutes(_Repo):
    async def include(
        self, conversation_id: int, care_team_id: int, holder_id: int | None, added_by: int
    ) -> None:
        self.data.on_call_routes.setdefault(
            conversation_id, OnCallRole(conversation_id, care_team_id, holder_id)
        )

    async def of_conversation(self, conversation_id: int) -> OnCallRole | None:
        return self.data.on_call_routes.get(conversation_id)


class FakeLoginThrottleRepository(_Repo):
    """integrations/db/login_throttle.py in memory: the same counting, forgetting and locking."""

    async def states(self, keys: Sequence[str]) -> dict[str, ThrottleState]:
        rows = self.data.login_throttles
        return {
            k: ThrottleState(rows[k].failures, rows[k].blocked_until, rows[k].locked_at is not None)
            for k in keys
            if k in rows
        }

    async def record_failure(self, key: str, now: datetime, backoff: Backoff) -> ThrottleState:
        forget_before = now - backoff.window
        row = self.data.login_throttles.get(key)
        # Counts from one again when the last failure is older than the window, unless locked.
        if row is None or (row.locked_at is None and row.last_failure_at < forget_before):
            failures, locked_at = 1, None
        else:
            failures, locked_at = row.failures + 1, row.locked_at
        until = blocked_until(backoff, failures, now)
        locked = locked_at is not None or backoff.locks(failures)
        self.data.login_throttles[key] = FakeThrottleRow(
            failures, now, until, locked_at or (now if locked else None)
        )
        # The SQL repository purges a few stale, unlocked keys of the same kind on each failure.
        kind = key.partition(":")[0] + ":"
        for stale in [
            k
            for k, r in self.data.login_throttles.items()
            if k.startswith(kind) and r.locked_at is None and r.last_failure_at < forget_before
        ][:20]:
            del self.data.login_throttles[stale]
        return ThrottleState(failures, until, locked)

    async def clear(self, key: str) -> bool:
        return self.data.login_throttles.pop(key, None) is not None


class FakeAuditTrail(_Repo):
    """Answers each search or disclosure query with an empty page and remembers the query, so a
    workflow test sees what was asked; what the search finds is tests/api/test_audit_logs.py's."""

    def __init__(self, data: FakeDatabase) -> None:
        super().__init__(data)
        self.queries = data.audit_queries

    async def search(self, query: Any, after: int | None, limit: int) -> Page[Any]:
        self.queries.append(("search", (query, after, limit)))
        return Page((), None)

    async def disclosures(
        self, patient_id: int, since: datetime, until: datetime, after: int | None, limit: int
    ) -> Page[Any]:
        self.queries.append(("disclosures", (patient_id, since, until, after, limit)))
        return Page((), None)

    async def decisions(
        self, organization_id: int | None, since: datetime, until: datetime | None, limit: int
    ) -> list[Any]:
        self.queries.append(("decisions", (organization_id, since, until, limit)))
        return []

    async def detail(self, record_id: int, organization_id: int) -> Any:
        self.queries.append(("detail", (record_id, organization_id)))
        return None


class FakeAuditChain:
    """The hash chain's port in memory: a status, anchors numbered from 1, and verification runs
    that end when the test says so (:meth:`finish`). Also the record stream of exports, which
    yields the records a test put in ``streamed`` and remembers each query."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.anchors: list[Anchor] = []
        self.runs: dict[str, tuple[VerificationRun, Callable[[VerificationRun], Awaitable[None]]]] = {}
        self.started: list[str] = []
        self.streamed: list[AuditRecord] = []
        self.stream_queries: list[AuditFilter] = []

    async def status(self, anchors: int) -> ChainStatus:
        return ChainStatus(ChainHead(), 0, tuple(reversed(self.anchors))[:anchors])

    async def anchor_document(self, anchor_id: int) -> Mapping[str, object] | None:
        found = [a for a in self.anchors if a.id == anchor_id]
        return {"chain": "caremsg-audit", "seq": found[0].seq} if found else None

    async def create_anchor(self, signed_at: datetime) -> Anchor:
        anchor = Anchor(len(self.anchors) + 1, 7, 9, "a" * 64, "fakekey", signed_at)
        self.anchors.append(anchor)
        return anchor

    def running(self) -> VerificationRun | None:
        return next((r for r, _ in self.runs.values() if r.state == "running"), None)

    def verification(self, run_id: str) -> VerificationRun | None:
        found = self.runs.get(run_id)
        return found[0] if found else None

    def start_verification(
        self, run_id: str, started_by: int, on_finished: Callable[[VerificationRun], Awaitable[None]]
    ) -> VerificationRun:
        run = VerificationRun(run_id, started_by, self.clock(), total=3)
        self.runs[run_id] = (run, on_finished)
        self.started.append(run_id)
        return run

    async def finish(self, run_id: str, problem: Problem | None = None) -> VerificationRun:
        run, on_finished = self.runs[run_id]
        run.checked = 3
        run.report = VerifyReport(3, ChainHead(3, "b" * 64, 3), 0, problem)
        run.finished_at = self.clock()
        await on_finished(run)
        return run

    @asynccontextmanager
    async def records(self, query: AuditFilter) -> AsyncIterator[AsyncIterator[AuditRecord]]:
        self.stream_queries.append(query)

        async def each() -> AsyncIterator[AuditRecord]:
            for record in self.streamed:
                yield record

        yield each()


class FakeAuditFigures(_Repo):
    """Counts nothing and remembers what was asked, like :class:`FakeAuditTrail`; what the counts
    are is tests/console/test_console_charts.py's."""

    def __init__(self, data: FakeDatabase) -> None:
        super().__init__(data)
        self.queries = data.audit_queries

    async def decisions(
        self, organization_id: int, since: datetime, until: datetime, period: Any
    ) -> list[Any]:
        self.queries.append(("decisions", (organization_id, since, until, period)))
        return []

    async def break_glass_openings(self, organization_id: int, since: datetime, until: datetime) -> list[Any]:
        self.queries.append(("break_glass_openings", (organization_id, since, until)))
        return []


# --- consents, contacts, break-the-glass --------------------------------------------------------------


def _consent_candidates(
    data: FakeDatabase, patient_id: int, phone: str, org: int | None
) -> list[ConsentCandidate]:
    """integrations/db/patients.py EXTERNAL_CONSENTS_SQL in memory: consents naming the number, and, only
    if the number is in ``org``'s contact directory, those naming ``org`` or a group it belongs to."""
    listed = org is not None and any(
        c.organization_id == org and c.phone_number == phone for c in data.contacts.values()
    )
    groups = {g.id for g in data.compliance_groups.values() if org in g.member_organization_ids}
    chosen = [
        k
        for k in sorted(data.consents.values(), key=lambda k: k.id)
        if k.patient_id == patient_id
        and (
            (k.recipient_type == RecipientType.EXTERNAL and k.external_phone_number == phone)
            or (listed and (k.organization_id == org or k.compliance_group_id in groups))
        )
    ]
    return [
        ConsentCandidate(
            k.id,
            k.recipient_type,
            frozenset(s.value for s in k.scope),
            k.purpose.value,
            millis(k.effective_at),
            None if k.expires_at is None else millis(k.expires_at),
            None if k.revoked_at is None else millis(k.revoked_at),
            k.part2 is not None,
        )
        for k in chosen
    ]


class FakeConsentRepository(_Repo):
    async def add(self, consent: NewConsent) -> Consent:
        new = Consent(
            self.data.new_id(),
            consent.patient_id,
            consent.recipient_type,
            consent.organization_id,
            consent.compliance_group_id,
            consent.external_phone_number,
            consent.external_name,
            consent.purpose,
            consent.effective_at,
            consent.expires_at,
            consent.recorded_by,
            self.data.clock(),
            scope=consent.scope,
            part2=consent.part2,
        )
        self.data.consents[new.id] = new
        return new

    async def list_for_patient(self, patient_id: int, *, disclosed_to: int | None = None) -> list[Consent]:
        groups = {
            g.id for g in self.data.compliance_groups.values() if disclosed_to in g.member_organization_ids
        }
        return sorted(
            (
                k
                for k in self.data.consents.values()
                if k.patient_id == patient_id
                and (
                    disclosed_to is None
                    or k.organization_id == disclosed_to
                    or k.compliance_group_id in groups
                )
            ),
            key=lambda k: k.id,
        )


class FakeConsentLifecycle(_Repo):
    async def get_for_update(self, consent_id: int) -> Consent | None:
        return self.data.consents.get(consent_id)

    async def revoke(self, consent_id: int, *, revoked_by: int, reason: str, at: datetime) -> Consent:
        revoked = dataclasses.replace(
            self.data.consents[consent_id], revoked_at=at, revoked_by=revoked_by, revocation_reason=reason
        )
        self.data.consents[consent_id] = revoked
        return revoked

    async def record_change(self, consent_id: int, patient_id: int, op: str) -> int:
        self.data.consent_changes.append((consent_id, patient_id, op))
        return len(self.data.consent_changes)

    async def patient_conversations(self, patient_id: int) -> list[Conversation]:
        ids = sorted(c.id for c in self.data.conversations.values() if c.patient_id == patient_id)
        return [_hydrated(self.data, i) for i in ids]

    async def remove_members(self, conversation_id: int, user_ids: Sequence[int]) -> None:
        members = self.data.conversation_members.get(conversation_id, ())
        self.data.conversation_members[conversation_id] = tuple(m for m in members if m not in user_ids)

    async def externals_admitted_by(self, consent_id: int) -> list[ExternalCoverage]:
        return [
            ExternalCoverage(e.id, e.conversation_id, e.phone_number, e.organization_id, e.chat_user_id)
            for e in sorted(self.data.externals.values(), key=lambda e: e.id)
            if e.consent_id == consent_id and e.removed_at is None
        ]

    async def readmit_external(self, participant_id: int, consent_id: int) -> None:
        row = self.data.externals[participant_id]
        self.data.externals[participant_id] = dataclasses.replace(row, consent_id=consent_id)

    async def remove_external(self, participant_id: int, at: datetime) -> None:
        row = self.data.externals[participant_id]
        self.data.externals[participant_id] = dataclasses.replace(row, removed_at=at)

    async def claim_expired(self, at: datetime, limit: int) -> list[ExpiredConsent]:
        due = sorted(
            (
                k
                for k in self.data.consents.values()
                if k.expires_at is not None
                and k.expires_at <= at
                and k.revoked_at is None
                and k.id not in self.data.consent_expiry_swept
            ),
            key=lambda k: (k.expires_at, k.id),
        )
        return [ExpiredConsent(k, self.data.patients[k.patient_id].organization_id) for k in due[:limit]]

    async def mark_expiry_swept(self, consent_id: int, at: datetime) -> None:
        self.data.consent_expiry_swept[consent_id] = at


class FakeContactDirectory(_Repo):
    async def add(
        self, organization_id: int, phone_number: str, name: str, added_by: int
    ) -> OrganizationContact:
        if any(
            c.organization_id == organization_id and c.phone_number == phone_number
            for c in self.data.contacts.values()
        ):
            raise Conflict("This number is in the organization's contact directory already.")
        new = OrganizationContact(
            self.data.new_id(), organization_id, phone_number, name, added_by, self.data.clock()
        )
        self.data.contacts[new.id] = new
        return new

    async def list(self, organization_id: int) -> list[OrganizationContact]:
        mine = (c for c in self.data.contacts.values() if c.organization_id == organization_id)
        return sorted(mine, key=lambda c: c.id)

    async def remove(self, organization_id: int, contact_id: int) -> bool:
        contact = self.data.contacts.get(contact_id)
        if contact is None or contact.organization_id != organization_id:
            return False
        del self.data.contacts[contact_id]
        return True


class FakeBreakGlassRepository(_Repo):
    async def add(
        self, *, user_id: int, organization_id: int, patient_id: int, reason: str, expires_at: datetime
    ) -> BreakGlassSession:
        session = BreakGlassSession(
            self.data.new_id(),
            user_id,
            organization_id,
            patient_id,
            self.data.patients[patient_id].organization_id,
            reason,
            self.data.clock(),
            expires_at,
        )
        self.data.break_glass_sessions[session.id] = session
        return session

    async def open_session(self, user_id: int, patient_id: int, at: datetime) -> int | None:
        open_ids = [
            s.id
            for s in self.data.break_glass_sessions.values()
            if s.user_id == user_id and s.patient_id == patient_id and s.is_open(at)
        ]
        return max(open_ids, default=None)

    def _reviewed_by(self, session: BreakGlassSession, organization_id: int) -> BreakGlassSession:
        """The session with ``organization_id``'s own review of it, if any (never another's)."""
        review = self.data.break_glass_reviews.get((session.id, organization_id))
        if review is None:
            return session
        at, by, note = review
        return dataclasses.replace(session, reviewed_at=at, reviewed_by=by, review_note=note)

    async def list_for_organization(
        self, organization_id: int, after: int | None, limit: int
    ) -> Page[BreakGlassSession]:
        """Newest first: the cursor is the last id shown, and the next page has lower ids."""
        mine = sorted(
            (
                self._reviewed_by(s, organization_id)
                for s in self.data.break_glass_sessions.values()
                if organization_id in (s.organization_id, s.patient_organization_id)
                and (after is None or s.id < after)
            ),
            key=lambda s: -s.id,
        )
        if len(mine) > limit:
            return Page(tuple(mine[:limit]), mine[limit - 1].id)
        return Page(tuple(mine), None)

    async def get(self, session_id: int, organization_id: int) -> BreakGlassSession | None:
        session = self.data.break_glass_sessions.get(session_id)
        return None if session is None else self._reviewed_by(session, organization_id)

    async def mark_reviewed(
        self, session_id: int, organization_id: int, *, by: int, note: str, at: datetime
    ) -> bool:
        key = (session_id, organization_id)
        if session_id not in self.data.break_glass_sessions or key in self.data.break_glass_reviews:
            return False
        self.data.break_glass_reviews[key] = (at, by, note)
        return True


# --- conversations and messaging -----------------------------------------------------------------------


@dataclass(frozen=True)
class FakeExternalRow:
    """One row of ``external_participants``: more than the engine's ExternalParticipant shows."""

    id: int
    conversation_id: int
    phone_number: str
    display_name: str
    organization_id: int | None
    consent_id: int
    chat_user_id: str
    reply_code: int
    removed_at: datetime | None = None


@dataclass(frozen=True)
class FakeDeliveryRow:
    """One row of ``message_deliveries``."""

    id: int
    message_id: int
    delivery: NewDelivery
    updated_at: datetime


def _hydrated(data: FakeDatabase, conversation_id: int) -> Conversation:
    """The conversation with its member ids (ascending) and external participants (by id)."""
    externals = sorted(
        (e for e in data.externals.values() if e.conversation_id == conversation_id), key=lambda e: e.id
    )
    route = data.on_call_routes.get(conversation_id)
    return dataclasses.replace(
        data.conversations[conversation_id],
        on_call_care_team_id=route.care_team_id if route else None,
        on_call_holder_id=route.holder_id if route else None,
        member_ids=tuple(sorted(data.conversation_members.get(conversation_id, ()))),
        external_participants=tuple(
            ExternalParticipant(
                e.id, e.phone_number, e.display_name, e.chat_user_id, e.consent_id, e.removed_at
            )
            for e in externals
        ),
    )


class FakeConversationRepository(_Repo):
    async def add(
        self,
        *,
        patient_id: int,
        title: str,
        organization_id: int,
        created_by: int,
        member_ids: Sequence[int],
        external: Sequence[NewExternalParticipant],
    ) -> Conversation:
        data = self.data
        conversation = Conversation(
            data.new_id(),
            patient_id,
            title,
            f"caremsg_{secrets.token_hex(16)}",
            organization_id,
            created_by,
            data.clock(),
        )
        data.conversations[conversation.id] = conversation
        data.conversation_members[conversation.id] = tuple(dict.fromkeys(member_ids))
        for e in external:
            # Reply codes are never reused: one more than the highest the number ever had.
            codes = [x.reply_code for x in data.externals.values() if x.phone_number == e.phone_number]
            row = FakeExternalRow(
                data.new_id(),
                conversation.id,
                e.phone_number,
                e.display_name,
                e.organization_id,
                e.consent_id,
                f"ext_{secrets.token_hex(12)}",
                max(codes, default=0) + 1,
            )
            data.externals[row.id] = row
        return _hydrated(data, conversation.id)

    async def get(self, conversation_id: int) -> Conversation | None:
        if conversation_id not in self.data.conversations:
            return None
        return _hydrated(self.data, conversation_id)

    async def by_channel(self, channel_url: str) -> Conversation | None:
        found = [c.id for c in self.data.conversations.values() if c.channel_url == channel_url]
        return _hydrated(self.data, found[0]) if found else None

    async def list_for_member(self, user_id: int, after: int | None, limit: int) -> Page[Conversation]:
        mine = [
            _hydrated(self.data, cid)
            for cid, members in self.data.conversation_members.items()
            if user_id in members
        ]
        return _page(mine, after, limit, lambda c: c.id)

    async def reply_routes(self, phone_number: str) -> list[ReplyRoute]:
        data = self.data

        def last_texted(e: FakeExternalRow) -> datetime | None:
            times = [
                d.updated_at for d in data.deliveries.values() if d.delivery.external_participant_id == e.id
            ]
            return max(times, default=None)

        rows = [e for e in data.externals.values() if e.phone_number == phone_number]
        # The conversation that texted the number last; else the newest admission.
        rows.sort(key=lambda e: (last_texted(e) is None, -(last_texted(e) or START).timestamp(), -e.id))
        return [
            ReplyRoute(
                e.conversation_id,
                data.conversations[e.conversation_id].patient_id,
                data.conversations[e.conversation_id].channel_url,
                e.id,
                e.chat_user_id,
                e.phone_number,
                e.organization_id,
                e.reply_code,
                e.removed_at is None,
                e.phone_number in data.opt_outs,
            )
            for e in rows
        ]

    async def recipient_organizations(self, conversation_id: int, sender_id: int) -> tuple[int, ...]:
        data = self.data
        conversation = data.conversations.get(conversation_id)
        patient = None if conversation is None else data.patients.get(conversation.patient_id)
        return tuple(
            sorted(
                {
                    data.users[m].organization_id
                    for m in data.conversation_members.get(conversation_id, ())
                    if m != sender_id
                    and m in data.users
                    and (patient is None or data.users[m].organization_id != patient.organization_id)
                }
            )
        )


class FakeMessageRepository(_Repo):
    async def get(self, message_id: int) -> Message | None:
        return self.data.messages.get(message_id)

    async def acknowledge(self, message_id: int, user_id: int, at: datetime) -> Acknowledged:
        message = self.data.messages[message_id]
        if message.acknowledged_by is not None and message.acknowledged_at is not None:
            return Acknowledged(message.acknowledged_by, message.acknowledged_at, False)
        self.data.messages[message_id] = dataclasses.replace(
            message, acknowledged_by=user_id, acknowledged_at=at
        )
        return Acknowledged(user_id, at, True)

    async def recent(self, conversation_id: int, limit: int) -> list[Message]:
        mine = sorted(
            (m for m in self.data.messages.values() if m.conversation_id == conversation_id),
            key=lambda m: m.id,
        )
        return mine[-limit:] if limit > 0 else []

    async def add_posted(
        self, conversation_id: int, sender_id: int, text: str, chat_message_id: int, chat_ts_ms: int
    ) -> Message | None:
        if any(
            m.conversation_id == conversation_id and m.chat_message_id == chat_message_id
            for m in self.data.messages.values()
        ):
            return None
        message = Message(
            self.data.new_id(),
            conversation_id,
            sender_id,
            text,
            DeliveryState.SENT,
            self.data.clock(),
            chat_message_id,
        )
        self.data.messages[message.id] = message
        return message


class FakeRetentionSweeps(_Repo):
    """The retention sweep's reads and writes as the SQL adapter does them (no locks: one fake)."""

    def _due(self, cutoffs: Cutoffs) -> list[ExpiredContent]:
        data = self.data
        out = []
        for m in sorted(data.messages.values(), key=lambda m: (m.created_at, m.id)):
            conversation = data.conversations[m.conversation_id]
            org = data.patients[conversation.patient_id].organization_id
            cutoff = cutoffs.by_organization.get(org, cutoffs.default)
            held = any(p == conversation.patient_id or c == conversation.id for p, c in data.legal_holds)
            if m.content_deleted_at is None and cutoff is not None and m.created_at < cutoff and not held:
                out.append(ExpiredContent(m.id, conversation.id, conversation.patient_id, org, m.recalled))
        return out

    async def plan(self, cutoffs: Cutoffs) -> dict[int, int]:
        counts: dict[int, int] = {}
        for e in self._due(cutoffs):
            counts[e.organization_id] = counts.get(e.organization_id, 0) + 1
        return counts

    async def claim(self, cutoffs: Cutoffs, limit: int) -> list[ExpiredContent]:
        return self._due(cutoffs)[:limit]

    async def delete_content(self, message_ids: list[int], at: datetime) -> None:
        data = self.data
        for mid in message_ids:
            data.messages[mid] = dataclasses.replace(data.messages[mid], text="", content_deleted_at=at)
            if mid in data.message_recalls:
                data.message_recalls[mid] = dataclasses.replace(data.message_recalls[mid], text="")
        for attachment_id, f in list(data.message_attachments.items()):
            if f.attachment.message_id in message_ids:
                del data.message_attachments[attachment_id]

    async def claim_sms_replies(self, cutoffs: Cutoffs, limit: int) -> list[ExpiredSmsReply]:
        """No SMS replies here: their text lives in outbox rows and stored webhooks, which only the
        SQL adapter has (tests/integration/test_retention_copies.py)."""
        return []

    async def delete_sms_replies(self, replies: list[ExpiredSmsReply]) -> None:
        assert not replies


class FakeLegalHoldRepository(_Repo):
    """Legal holds in memory; the ones that last are mirrored in ``legal_holds`` for the sweep."""

    async def add(self, hold: NewLegalHold) -> LegalHold:
        data = self.data
        held = LegalHold(
            data.new_id(),
            hold.organization_id,
            hold.patient_id,
            hold.conversation_id,
            hold.subject_patient_id,
            hold.placed_by,
            hold.placed_at,
            hold.reason,
        )
        data.legal_hold_rows[held.id] = held
        data.legal_holds.append((hold.patient_id, hold.conversation_id))
        return held

    async def get(self, hold_id: int) -> LegalHold | None:
        return self.data.legal_hold_rows.get(hold_id)

    async def lift(self, hold_id: int, *, by: int, at: datetime, reason: str) -> bool:
        data = self.data
        hold = data.legal_hold_rows[hold_id]
        if not hold.active:
            return False
        data.legal_hold_rows[hold_id] = dataclasses.replace(
            hold, lifted_by=by, lifted_at=at, lift_reason=reason
        )
        data.legal_holds.remove((hold.patient_id, hold.conversation_id))
        return True

    async def of_organization(self, organization_id: int, *, active_only: bool) -> list[LegalHold]:
        holds = [h for h in self.data.legal_hold_rows.values() if h.organization_id == organization_id]
        return sorted((h for h in holds if h.active or not active_only), key=lambda h: -h.id)


class FakeMessageRecalls(_Repo):
    """Recall as the SQL adapter does it; every enqueued effect counts as not gone out yet."""

    async def recall(self, message_id: int, *, at: datetime, by: int, reason: str) -> RecallOutcome | None:
        data = self.data
        message = data.messages[message_id]
        if message.recalled or message.content_deleted:
            return None
        data.message_recalls[message_id] = RecalledContent(
            message_id,
            message.conversation_id,
            message.sender_id,
            message.created_at,
            at,
            by,
            reason,
            message.text,
        )
        data.messages[message_id] = dataclasses.replace(message, text="", recalled_at=at, recalled_by=by)
        mine = [
            e
            for e in data.outbox
            if isinstance(e, (PostMessage, PostAttachment, TextMessage)) and e.message_id == message_id
        ]
        data.outbox[:] = [e for e in data.outbox if e not in mine]
        data.cancelled_outbox.extend(mine)
        cancelled = {e.delivery_id for e in mine if isinstance(e, TextMessage)}
        posts = sum(isinstance(e, (PostMessage, PostAttachment)) for e in mine)
        for row in list(data.deliveries.values()):
            d = row.delivery
            if row.message_id != message_id or d.state != DeliveryState.QUEUED:
                continue
            if row.id in cancelled or (d.recipient == CHANNEL_RECIPIENT and posts):
                failed = dataclasses.replace(d, state=DeliveryState.FAILED, reason="recalled")
                data.deliveries[row.id] = dataclasses.replace(row, delivery=failed, updated_at=at)
        left = [
            row.delivery.state
            for row in data.deliveries.values()
            if row.message_id == message_id and row.delivery.recipient != CHANNEL_RECIPIENT
        ]
        sent = sum(state in (DeliveryState.SENT, DeliveryState.DELIVERED) for state in left)
        return RecallOutcome(posts, len(cancelled), sent, left.count(DeliveryState.QUEUED))

    async def legal_record(self, message_id: int) -> RecalledContent | None:
        record = self.data.message_recalls.get(message_id)
        deleted = self.data.messages[message_id].content_deleted_at
        return None if record is None else dataclasses.replace(record, content_deleted_at=deleted)

    async def add_correction(self, original: Message, text: str, *, at: datetime) -> Message | None:
        data = self.data
        if data.messages[original.id].corrected_by_message_id is not None:
            return None
        message = Message(
            data.new_id(),
            original.conversation_id,
            original.sender_id,
            text,
            DeliveryState.QUEUED,
            at,
            corrects_message_id=original.id,
        )
        data.messages[message.id] = message
        data.messages[original.id] = dataclasses.replace(
            data.messages[original.id], corrected_by_message_id=message.id
        )
        return message


class FakeMessageAttachments(_Repo):
    """integrations/db/attachments.py in memory."""

    async def add(
        self, conversation_id: int, sender_id: int, text: str, file: NewAttachment, *, at: datetime
    ) -> tuple[Message, Attachment]:
        data = self.data
        message = Message(data.new_id(), conversation_id, sender_id, text, DeliveryState.QUEUED, at)
        data.messages[message.id] = message
        attachment = Attachment(data.new_id(), message.id, file.content_type, file.size, file.sha256)
        data.message_attachments[attachment.id] = AttachmentFile(attachment, file.data)
        return message, attachment

    async def of_messages(self, message_ids: list[int]) -> dict[int, tuple[Attachment, ...]]:
        found: dict[int, list[Attachment]] = {}
        for f in sorted(self.data.message_attachments.values(), key=lambda f: f.attachment.id):
            if f.attachment.message_id in message_ids:
                found.setdefault(f.attachment.message_id, []).append(f.attachment)
        return {m: tuple(a) for m, a in found.items()}

    async def file(self, message_id: int, attachment_id: int) -> AttachmentFile | None:
        f = self.data.message_attachments.get(attachment_id)
        return f if f is not None and f.attachment.message_id == message_id else None


class FakeOutbox(_Repo):
    async def enqueue(self, effect: Effect) -> None:
        self.data.outbox.append(effect)

    async def enqueue_all(self, effects: Sequence[Effect]) -> None:
        self.data.outbox.extend(effects)


class FakeDeliveryRepository(_Repo):
    async def escalation_of(self, message_ids: Sequence[int]) -> dict[int, tuple[EscalationTaken, ...]]:
        return {m: self.data.escalations[m] for m in message_ids if m in self.data.escalations}

    async def sms_recipients(self, conversation_id: int, patient_id: int) -> list[SmsRecipient]:
        data = self.data
        out = []
        for e in sorted(data.externals.values(), key=lambda e: e.id):
            if e.conversation_id != conversation_id:
                continue
            listed = any(
                c.organization_id == e.organization_id and c.phone_number == e.phone_number
                for c in data.contacts.values()
            )
            groups = frozenset(
                g.id
                for g in data.compliance_groups.values()
                if listed and e.organization_id in g.member_organization_ids
            )
            out.append(
                SmsRecipient(
                    e.id,
                    e.phone_number,
                    e.chat_user_id,
                    e.organization_id,
                    e.phone_number in data.opt_outs,
                    e.removed_at is not None,
                    groups,
                    tuple(_consent_candidates(data, patient_id, e.phone_number, e.organization_id)),
                )
            )
        return out

    async def add(self, message_id: int, deliveries: Sequence[NewDelivery]) -> list[int]:
        ids = []
        for delivery in deliveries:
            row = FakeDeliveryRow(self.data.new_id(), message_id, delivery, self.data.clock())
            self.data.deliveries[row.id] = row
            ids.append(row.id)
        return ids

    async def for_messages(self, message_ids: Sequence[int]) -> dict[int, tuple[RecipientDelivery, ...]]:
        out: dict[int, list[RecipientDelivery]] = {}
        for row in sorted(self.data.deliveries.values(), key=lambda r: r.id):
            if row.message_id in message_ids:
                d = row.delivery
                channel = "chat" if d.recipient == CHANNEL_RECIPIENT else "sms"
                out.setdefault(row.message_id, []).append(
                    RecipientDelivery(
                        d.recipient, channel, d.state, d.reason, row.updated_at, d.provider_ts_ms
                    )
                )
        return {k: tuple(v) for k, v in out.items()}

    async def mark_read(self, conversation_id: int, reader_chat_id: str, read_ts_ms: int) -> int:
        data, now, count = self.data, self.data.clock(), 0
        for row in list(data.deliveries.values()):
            d, message = row.delivery, data.messages.get(row.message_id)
            if (
                message is not None
                and message.conversation_id == conversation_id
                and d.recipient == CHANNEL_RECIPIENT
                and d.state == DeliveryState.SENT
                and d.provider_ts_ms is not None
                and d.provider_ts_ms <= read_ts_ms
                and data.users[message.sender_id].chat_user_id != reader_chat_id
            ):
                delivered = dataclasses.replace(d, state=DeliveryState.DELIVERED)
                data.deliveries[row.id] = dataclasses.replace(row, delivery=delivered, updated_at=now)
                count += 1
        for row in data.deliveries.values():
            message = data.messages.get(row.message_id)
            if (
                message is not None
                and message.conversation_id == conversation_id
                and message.state == DeliveryState.SENT
                and row.delivery.recipient == CHANNEL_RECIPIENT
                and row.delivery.state == DeliveryState.DELIVERED
            ):
                data.messages[message.id] = dataclasses.replace(message, state=DeliveryState.DELIVERED)
        return count


class FakeReadStateRepository(_Repo):
    """conversation_reads: one mark per conversation and member, moved forward only."""

    async def mark(
        self, conversation_id: int, user_id: int, message_id: int, at: datetime, source: str
    ) -> tuple[ReadMark, bool]:
        current = self.data.reads.get((conversation_id, user_id))
        if current is not None and current.last_read_message_id >= message_id:
            return current, False
        mark = ReadMark(conversation_id, user_id, message_id, at, source)
        self.data.reads[(conversation_id, user_id)] = mark
        return mark, True

    async def of_conversation(self, conversation_id: int) -> dict[int, ReadMark]:
        return {user: mark for (conv, user), mark in self.data.reads.items() if conv == conversation_id}

    async def unread_counts(self, user_id: int, conversation_ids: Sequence[int]) -> dict[int, int]:
        out: dict[int, int] = {}
        for m in self.data.messages.values():
            if m.conversation_id in conversation_ids and not has_read(
                m, user_id, self.data.reads.get((m.conversation_id, user_id))
            ):
                out[m.conversation_id] = out.get(m.conversation_id, 0) + 1
        return out

    async def last_in_channel_by(self, conversation_id: int, ts_ms: int) -> int | None:
        found = [
            row.message_id
            for row in self.data.deliveries.values()
            if row.delivery.recipient == CHANNEL_RECIPIENT
            and row.delivery.provider_ts_ms is not None
            and row.delivery.provider_ts_ms <= ts_ms
            and (m := self.data.messages.get(row.message_id)) is not None
            and m.conversation_id == conversation_id
        ]
        return max(found, default=None)


class FakeOptOutRepository(_Repo):
    async def set(self, phone_number: str, opted_out: bool, provider_message_id: str) -> bool:
        if opted_out:
            if phone_number in self.data.opt_outs:
                return False
            self.data.opt_outs[phone_number] = provider_message_id
            return True
        return self.data.opt_outs.pop(phone_number, None) is not None


class FakeWebhookEventLog(_Repo):
    """Records how each stored event ended (storing and claiming them is integrations/webhooks.py's):
    an event with no ending recorded is pending."""

    async def take(self, event_id: int) -> bool:
        return event_id not in self.data.webhook_events

    async def finish(self, event_id: int, status: str, *, keep_body: bool = True) -> None:
        if event_id in self.data.webhook_events:
            return  # no longer pending: ended already
        self.data.webhook_events[event_id] = status
        if status == "ignored" or not keep_body:
            self.data.webhook_bodies_dropped.add(event_id)


class FakeIdempotencyKeys(_Repo):
    """Records which resource each claim created (taking claims is integrations/idempotency.py's)."""

    async def bind(self, claim_id: int, resource_id: int) -> None:
        self.data.idempotency_keys[claim_id] = resource_id


class FakePolicyProposalRepository(_Repo):
    async def add(self, proposal: NewPolicyProposal, *, at: datetime) -> PolicyProposal:
        import hashlib

        def sha(text: str) -> str:
            return hashlib.sha256(text.encode()).hexdigest()

        stored = PolicyProposal(
            self.data.new_id(),
            proposal.file,
            proposal.content,
            sha(proposal.content),
            proposal.base_content,
            sha(proposal.base_content),
            proposal.reason,
            proposal.proposed_by,
            proposal.organization_id,
            at,
            ProposalState.PROPOSED,
            restores_id=proposal.restores_id,
            restores_version=proposal.restores_version,
        )
        self.data.policy_proposals[stored.id] = stored
        return stored

    async def get(self, proposal_id: int) -> PolicyProposal | None:
        return self.data.policy_proposals.get(proposal_id)

    async def list(
        self, *, state: ProposalState | None, file: str | None, before: int | None, limit: int
    ) -> Page[PolicyProposal]:
        found = sorted(
            (
                p
                for p in self.data.policy_proposals.values()
                if (state is None or p.state is state)
                and (file is None or p.file == file)
                and (before is None or p.id < before)
            ),
            key=lambda p: -p.id,
        )
        if len(found) > limit:
            return Page(tuple(found[:limit]), found[limit - 1].id)
        return Page(tuple(found), None)

    async def history(self, file: str, limit: int) -> tuple[PolicyProposal, ...]:
        applied = [
            p
            for p in self.data.policy_proposals.values()
            if p.file == file and p.state is ProposalState.APPLIED
        ]
        applied.sort(key=lambda p: (p.decided_at or START, p.id), reverse=True)
        return tuple(applied[:limit])

    async def lock_files(self) -> None:
        return None  # one process, one event loop: the fake's units of work never interleave a write

    async def decide(
        self,
        proposal_id: int,
        state: ProposalState,
        *,
        by: int,
        at: datetime,
        note: str | None,
        applied_version: str | None = None,
    ) -> bool:
        found = self.data.policy_proposals.get(proposal_id)
        if found is None or found.state is not ProposalState.PROPOSED:
            return False
        if state is ProposalState.APPLIED and by == found.proposed_by:
            raise AssertionError("ck_policy_proposals_four_eyes: the approver is the proposer")
        self.data.policy_proposals[proposal_id] = dataclasses.replace(
            found,
            state=state,
            decided_by=by,
            decided_at=at,
            decision_note=note,
            applied_version=applied_version,
        )
        return True

    async def supersede(
        self, file: str, *, applied: PolicyProposal, by: int, at: datetime
    ) -> tuple[int, ...]:
        ids = sorted(
            p.id
            for p in self.data.policy_proposals.values()
            if p.file == file
            and p.state is ProposalState.PROPOSED
            and p.id != applied.id
            and p.base_sha256 != applied.content_sha256
        )
        for proposal_id in ids:
            self.data.policy_proposals[proposal_id] = dataclasses.replace(
                self.data.policy_proposals[proposal_id],
                state=ProposalState.SUPERSEDED,
                decided_by=by,
                decided_at=at,
                decision_note=f"superseded by proposal {applied.id}",
            )
        return tuple(ids)


class FakeUnitOfWork:
    """One workflow's transaction over a :class:`FakeDatabase`: all or nothing, audit as in production."""

    def __init__(self, database: FakeDatabase) -> None:
        self.database = database
        self._work = database.copy_of_tables()
        self.audit = BufferedAuditLog()  # pure: the real buffer, amend_last rule included
        self.users = FakeUserRepository(self._work)
        self.organizations = FakeOrganizationRepository(self._work)
        self.compliance_groups = FakeComplianceGroupRepository(self._work)
        self.patients = FakePatientRepository(self._work)
        self.care_teams = FakeCareTeamRepository(self._work)
        self.facts = FakeRelationshipFacts(self._work)
        self.break_glass = FakeBreakGlassRepository(self._work)
        self.login_throttle = FakeLoginThrottleRepository(self._work)
        self.audit_trail = FakeAuditTrail(self._work)
        self.audit_figures = FakeAuditFigures(self._work)
        self.consents = FakeConsentRepository(self._work)
        self.consent_lifecycle = FakeConsentLifecycle(self._work)
        self.contacts = FakeContactDirectory(self._work)
        self.conversations = FakeConversationRepository(self._work)
        self.messages = FakeMessageRepository(self._work)
        self.recalls = FakeMessageRecalls(self._work)
        self.retention = FakeRetentionSweeps(self._work)
        self.legal_holds = FakeLegalHoldRepository(self._work)
        self.attachments = FakeMessageAttachments(self._work)
        self.outbox = FakeOutbox(self._work)
        self.deliveries = FakeDeliveryRepository(self._work)
        self.reads = FakeReadStateRepository(self._work)
        self.opt_outs = FakeOptOutRepository(self._work)
        self.webhook_events = FakeWebhookEventLog(self._work)
        self.idempotency_keys = FakeIdempotencyKeys(self._work)
        self.rosters = FakeRosterRepository(self._work)
        self.away = FakeAwayRepository(self._work)
        self.on_call_routes = FakeOnCallRoutes(self._work)
        self.policy_proposals = FakePolicyProposalRepository(self._work)
        self._committed = False

    def _repositories(self) -> list[_Repo]:
        return [r for r in vars(self).values() if isinstance(r, _Repo)]

    async def __aenter__(self) -> FakeUnitOfWork:
        return self

    async def commit(self) -> None:
        db, work = self.database, self._work
        for name in _TABLES:
            setattr(db, name, getattr(work, name))
        db.next_id = work.next_id
        db.audit.extend(self.audit.pending)
        db.commits += 1
        self.audit.pending.clear()
        self._committed = True
        self._work = db.copy_of_tables()
        for repo in self._repositories():
            repo.data = self._work

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._committed and self.audit.pending:
            self.database.audit.extend(unfinished(self.audit.pending, exc))
            self.audit.pending.clear()


class FakeSendUnitOfWork:
    """integrations/db/send_uow.py over a :class:`FakeDatabase`: one read (:meth:`context`) and one
    all-or-nothing write (:meth:`commit`) of the message, its deliveries, its outbox entries (the chat
    post and one text per queued SMS delivery), the Idempotency-Key binding and the audit events."""

    def __init__(self, database: FakeDatabase) -> None:
        self.database = database
        self.audit = BufferedAuditLog()
        self._committed = False

    async def __aenter__(self) -> FakeSendUnitOfWork:
        return self

    async def context(self, conversation_id: int, user_id: int, at: datetime) -> SendContext | None:
        db = self.database
        conversation = db.conversations.get(conversation_id)
        if conversation is None:
            return None
        pid = conversation.patient_id
        patient = db.patients.get(pid)
        on_team = any(
            t.patient_id == pid and any(m.user_id == user_id for m in t.members)
            for t in db.care_teams.values()
        )
        open_sessions = [
            s.id
            for s in db.break_glass_sessions.values()
            if s.user_id == user_id and s.patient_id == pid and s.is_open(at)
        ]
        recipients = await FakeDeliveryRepository(db).sms_recipients(conversation_id, pid)
        return SendContext(
            conversation_id=conversation_id,
            patient_id=pid,
            patient_organization_id=patient.organization_id if patient is not None else None,
            is_member=user_id in db.conversation_members.get(conversation_id, ()),
            on_care_team=on_team,
            message_id=db.new_id(),
            sms_recipients=tuple(recipients),
            break_glass_session_id=max(open_sessions, default=None),
            on_call=(route.care_team_id, route.holder_id)
            if (route := db.on_call_routes.get(conversation_id))
            else None,
            recipient_organization_ids=tuple(
                sorted(
                    {
                        db.users[m].organization_id
                        for m in db.conversation_members.get(conversation_id, ())
                        if m != user_id
                        and m in db.users
                        and (patient is None or db.users[m].organization_id != patient.organization_id)
                    }
                )
            ),
        )

    async def commit(self, send: NewSend) -> datetime:
        db, now = self.database, self.database.clock()
        db.messages[send.message_id] = Message(
            send.message_id,
            send.conversation_id,
            send.sender_id,
            send.text,
            DeliveryState.QUEUED,
            now,
            priority=send.priority,
        )
        ids = await FakeDeliveryRepository(db).add(send.message_id, send.deliveries)
        db.outbox.append(PostMessage(send.conversation_id, send.message_id))
        db.outbox += [
            TextMessage(send.conversation_id, send.message_id, delivery_id)
            for delivery_id, d in zip(ids, send.deliveries, strict=True)
            if texted(d)
        ]
        if send.idempotency_claim is not None:
            db.idempotency_keys[send.idempotency_claim] = send.message_id
        db.audit.extend(self.audit.pending)
        db.commits += 1
        self.audit.pending.clear()
        self._committed = True
        return now

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._committed and self.audit.pending:
            self.database.audit.extend(unfinished(self.audit.pending, exc))
            self.audit.pending.clear()


class FakePatientReadUnitOfWork:
    """integrations/db/patient_reads.py over a :class:`FakeDatabase`: the reader's relation to a
    patient with the record (:meth:`read`), then the audit events stored whole (:meth:`commit`)."""

    def __init__(self, database: FakeDatabase) -> None:
        self.database = database
        self.audit = BufferedAuditLog()
        self._committed = False

    async def __aenter__(self) -> FakePatientReadUnitOfWork:
        return self

    async def read(self, patient_id: int, *, user_id: int, at: datetime) -> PatientRead | None:
        relation = await FakeRelationshipFacts(self.database).patient_relation(
            patient_id, user_id=user_id, break_glass_at=at
        )
        if relation is None:
            return None
        return PatientRead(relation, self.database.patients[patient_id])

    async def commit(self) -> None:
        self.database.audit.extend(self.audit.pending)
        self.database.commits += 1
        self.audit.pending.clear()
        self._committed = True

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._committed and self.audit.pending:
            self.database.audit.extend(unfinished(self.audit.pending, exc))
            self.audit.pending.clear()


class FakeAccountDirectory:
    """integrations/db/identity.py SqlAccountDirectory over a :class:`FakeDatabase`: a token counts
    while its account is active, approved, of the role and organization it claims, and its sessions
    were not ended after it was issued."""

    def __init__(self, database: FakeDatabase) -> None:
        self.database = database

    async def current(self, actor: Actor) -> bool:
        user = self.database.users.get(actor.user_id)
        ended = self.database.sessions_valid_after.get(actor.user_id)
        return (
            user is not None
            and user.is_active
            and not user.pending_approval
            and (user.role, user.organization_id) == (actor.role, actor.organization_id)
            and (ended is None or (actor.issued_at is not None and actor.issued_at >= ended.timestamp()))
        )


class FakePasswordStrength:
    """Calls a password ``common`` if it is on its list, ``guessable`` if it contains a user input."""

    def __init__(self, common: Sequence[str] = ("correct horse battery staple",)) -> None:
        self.common = set(common)

    async def weakness(self, password: str, user_inputs: Sequence[str]) -> str | None:
        if password in self.common:
            return "common"
        if any(len(i) >= 3 and i.lower() in password.lower() for i in user_inputs):
            return "guessable"
        return None


# --- wiring ------------------------------------------------------------------------------------------


@dataclass
class FakeWorld:
    """The engine's services over fakes, with handles on each fake and helpers to add data directly."""

    services: Services
    db: FakeDatabase
    clock: FakeClock
    passwords: FakePasswords
    tokens: FakeTokens
    delivery: FakeDelivery
    notifier: FakeNotifier
    _seq: int = 0

    def organization(self, name: str | None = None, *, self_registration: bool = True) -> Organization:
        name = name or f"Org {secrets.token_hex(3)}"
        org = Organization(self.db.new_id(), name, self_registration, self.clock())
        self.db.organizations[org.id] = org
        return org

    def governing_organization(self) -> Organization:
        """The organization that governs the policy (``EngineSettings.governing_organization``),
        added the first time it is asked for."""
        name = self.services.settings.governing_organization
        found = [org for org in self.db.organizations.values() if org.name == name]
        return found[0] if found else self.organization(name)

    def actor(self, role: Role | str, organization_id: int, **context: Any) -> Actor:
        """A stored user of this role, as the actor of a request."""
        role = Role(role)
        user = User(
            self.db.new_id(),
            f"{role.value}.{secrets.token_hex(3)}@example.org",
            "Test",
            "Person",
            role,
            organization_id,
            True,
            f"staff_{secrets.token_hex(6)}",
            self.clock(),
        )
        self.db.users[user.id] = user
        self.db.password_hashes[user.id] = "fake-hash:correct horse battery"
        return Actor(user.id, role, organization_id, **context)

    def events(self, workflow: str | None = None) -> list[AuditEvent]:
        return self.db.events(workflow)

    def consent(
        self,
        patient_id: int,
        organization_id: int,
        *,
        purpose: str = "treatment",
        scope: frozenset[str] = frozenset({"read", "message", "sms"}),
    ) -> int:
        """An active consent disclosing the patient to an organization, as the consent index holds it
        (the index is what decisions read; the consents table is the consent workflows' business)."""
        consent_id = self.db.new_id()
        self._seq += 1
        state = IndexedConsent(
            consent_id,
            patient_id,
            RecipientType.ORGANIZATION,
            organization_id,
            scope,
            purpose,
            self.clock() - timedelta(days=1),
            None,
        )
        self.services.consents.apply(self._seq, consent_id, patient_id, state, self.clock())
        return consent_id

    def revoke(self, consent_id: int, patient_id: int) -> None:
        """The consent no longer covers anyone, as the index sees a revocation."""
        self._seq += 1
        self.services.consents.apply(self._seq, consent_id, patient_id, None, self.clock())


_POLICY: Policy | None = None


def _policy() -> PolicyHolder:
    """The shipped policy, parsed once per test session (a Policy is immutable), in a holder of the
    world's own: a test that swaps its policy (a reload) changes no other test's."""
    global _POLICY
    if _POLICY is None:
        _POLICY = load_policy(POLICY_DIR)
    return PolicyHolder(_POLICY)


def fake_services(settings: EngineSettings | None = None) -> FakeWorld:
    """The real :class:`Services` and the shipped policy over in-memory fakes of every port used."""
    clock = FakeClock()
    db = FakeDatabase(clock=clock)
    passwords, tokens, delivery, notifier = FakePasswords(), FakeTokens(), FakeDelivery(db), FakeNotifier()
    consents = ConsentIndex()
    consents.replace_all([], {}, clock(), seq=0)  # loaded, and empty: no consent covers anyone
    services = Services(
        uow=lambda: FakeUnitOfWork(db),
        send_uow=lambda: FakeSendUnitOfWork(db),
        patient_reads=lambda: FakePatientReadUnitOfWork(db),
        policy=_policy(),
        passwords=passwords,
        tokens=tokens,
        delivery=delivery,
        settings=settings or EngineSettings(),
        clock=clock,
        consents=consents,
        notifier=notifier,
    )
    return FakeWorld(services, db, clock, passwords, tokens, delivery, notifier)


def counting_open_transactions(world: FakeWorld) -> tuple[Services, list[int]]:
    """The world's services, and how many units of work were open at each hash or verify they did."""
    open_units: list[FakeUnitOfWork] = []
    hashed_with: list[int] = []

    class Tracked(FakeUnitOfWork):
        async def __aenter__(self) -> FakeUnitOfWork:
            open_units.append(self)
            return await super().__aenter__()

        async def __aexit__(
            self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
        ) -> None:
            open_units.remove(self)
            await super().__aexit__(exc_type, exc, tb)

    class Watching(FakePasswords):
        async def hash(self, password: str) -> str:
            hashed_with.append(len(open_units))
            return await super().hash(password)

        async def verify(self, password_hash: str | None, password: str) -> bool:
            hashed_with.append(len(open_units))
            return await super().verify(password_hash, password)

    services = dataclasses.replace(world.services, uow=lambda: Tracked(world.db), passwords=Watching())
    return services, hashed_with


@dataclass(eq=False)  # registered and grouped by identity, as the real executors are
class FakeExecutor:
    """Performs the effect types it is given by recording them, or by raising ``fails_with``."""

    handles: tuple[type[Effect], ...]
    fails_with: BaseException | None = None
    delivered: list[Effect] = field(default_factory=list)
    #: Whether each delivery was told what the claim read is fresh (``entry.fresh``), in order.
    fresh: list[bool] = field(default_factory=list)
    #: Set to hold every delivery until the test sets it.
    hold: asyncio.Event | None = None

    async def deliver(self, effect: Effect, entry: OutboxEntry, ctx: RelayContext) -> None:
        self.delivered.append(effect)
        self.fresh.append(entry.fresh)
        if self.hold is not None:
            await self.hold.wait()
        if self.fails_with is not None:
            raise self.fails_with

    async def settle(
        self, done: Sequence[OutboxEntry], failed: Sequence[tuple[OutboxEntry, str]], session: object
    ) -> None:
        raise AssertionError("settle is not called without a database")


__all__ = [
    "FakeAccountDirectory",
    "FakeAwayRepository",
    "FakeBreakGlassRepository",
    "FakeChatGateway",
    "FakeClock",
    "FakeConsentLifecycle",
    "FakeConsentRepository",
    "FakeContactDirectory",
    "FakeConversationRepository",
    "FakeDatabase",
    "FakeDelivery",
    "FakeDeliveryRepository",
    "FakeExecutor",
    "FakeIdempotencyKeys",
    "FakeLoginThrottleRepository",
    "FakeMessageRepository",
    "FakeNotifier",
    "FakeOnCallRoutes",
    "FakeOptOutRepository",
    "FakeOutbox",
    "FakePasswordStrength",
    "FakePasswords",
    "FakePatientReadUnitOfWork",
    "FakePolicyDirectory",
    "FakePolicyProposalRepository",
    "FakePolicyReloader",
    "FakeReadStateRepository",
    "FakeRosterRepository",
    "FakeSendUnitOfWork",
    "FakeSmsGateway",
    "FakeTokens",
    "FakeUnitOfWork",
    "FakeWebhookEventLog",
    "FakeWorld",
    "counting_open_transactions",
    "fake_services",
]
