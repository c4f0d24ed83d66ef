"""In-memory fakes of the engine's ports, for workflow tests that run in milliseconds.

Wire them with :func:`fake_services`, which builds the real :class:`engine.services.Services` over
the real policy files, so a workflow decides exactly as in production; only storage, hashing,
tokens, delivery and time are doubles. Model: cosmicpython/code tests/unit/test_handlers.py.

``FakeDatabase`` is what the repositories share across units of work. A unit of work works on a
copy and writes it back only on ``commit()``; audit events follow the real unit of work's rule
(integrations/db/uow.py): committed with the work, or, when the work does not commit, kept anyway
and ended ``denied`` (a refusal) or ``failure``. So a denial's audit record is visible in
``db.audit`` exactly as it would be in ``audit_events``.

Repositories faked so far: users, organizations, compliance groups (with sharing), patients, care
teams, relationship facts, break-glass lookups, the login throttle, the audit log, and the audit
trail's queries. The others
raise ``NotImplementedError`` naming themselves, so a workflow test that needs one fails loudly
rather than passing on a stub.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from engine.audit import AuditEvent
from engine.consent_index import ConsentIndex, IndexedConsent
from engine.errors import Conflict, Unauthenticated
from engine.login_throttle import Backoff, ThrottleState, blocked_until
from engine.model import (
    Actor,
    CareTeam,
    CareTeamMember,
    ComplianceGroup,
    Credentials,
    Organization,
    Page,
    Patient,
    RecipientType,
    RiskLevel,
    Role,
    User,
)
from engine.policy import PolicyHolder
from engine.ports import (
    IssuedToken,
    NewPatient,
    NewUser,
    PatientRelation,
    ReloadResult,
    SentChatMessage,
)
from engine.services import EngineSettings, Services
from integrations.db.uow import BufferedAuditLog, unfinished
from integrations.policy_files import load_policy

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


class FakePasswords:
    """A reversible 'hash': tests see what was hashed; verify compares."""

    async def hash(self, password: str) -> str:
        return f"fake-hash:{password}"

    async def verify(self, password_hash: str, password: str) -> bool:
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
    """Counts wake-ups of the outbox relay."""

    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


# --- the chat and SMS gateways ---------------------------------------------------------------------


@dataclass
class FakeChannel:
    name: str
    members: list[str]
    custom_type: str = ""
    data: str = ""
    messages: list[tuple[str, str, str]] = field(default_factory=list)  # (sender, text, dedup id)


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
        *,
        channel_url: str,
        name: str,
        user_ids: Sequence[str],
        custom_type: str = "",
        data: str = "",
    ) -> None:
        channel = self.channels.setdefault(channel_url, FakeChannel(name, [], custom_type, data))
        channel.members.extend(u for u in user_ids if u not in channel.members)

    async def invite_members(self, channel_url: str, user_ids: Sequence[str]) -> None:
        channel = self.channels[channel_url]
        channel.members.extend(u for u in user_ids if u not in channel.members)

    async def remove_members(self, channel_url: str, user_ids: Sequence[str]) -> None:
        channel = self.channels[channel_url]
        channel.members[:] = [u for u in channel.members if u not in user_ids]

    async def send_message(
        self,
        *,
        channel_url: str,
        sender_id: str,
        text: str,
        dedup_id: str,
        custom_type: str = "",
        data: str = "",
    ) -> SentChatMessage:
        channel = self.channels[channel_url]
        if not any(d == dedup_id for _, _, d in channel.messages):
            channel.messages.append((sender_id, text, dedup_id))
        message_id = self._next_message_id
        self._next_message_id += 1
        return SentChatMessage(message_id, channel_url, int(self.clock().timestamp() * 1000))


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


# --- storage -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeThrottleRow:
    """One row of ``login_throttles`` (integrations/db/tables.py)."""

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
    compliance_groups: dict[int, ComplianceGroup] = field(default_factory=dict)
    patients: dict[int, Patient] = field(default_factory=dict)
    care_teams: dict[int, CareTeam] = field(default_factory=dict)
    #: (user id, patient id) -> open break-glass session id
    break_glass_sessions: dict[tuple[int, int], int] = field(default_factory=dict)
    #: the login_throttles table: key -> its row
    login_throttles: dict[str, FakeThrottleRow] = field(default_factory=dict)
    next_id: int = 1
    audit: list[AuditEvent] = field(default_factory=list)
    #: what the audit trail was asked (search / disclosures), in order
    audit_queries: list[tuple[str, Any]] = field(default_factory=list)
    commits: int = 0

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def copy_of_tables(self) -> FakeDatabase:
        return dataclasses.replace(
            self,
            organizations=dict(self.organizations),
            users=dict(self.users),
            password_hashes=dict(self.password_hashes),
            compliance_groups=dict(self.compliance_groups),
            patients=dict(self.patients),
            care_teams=dict(self.care_teams),
            break_glass_sessions=dict(self.break_glass_sessions),
            login_throttles=dict(self.login_throttles),
            audit=[],
        )

    def events(self, workflow: str | None = None) -> list[AuditEvent]:
        """The stored audit events, of one workflow if given."""
        return [e for e in self.audit if workflow is None or e.workflow == workflow]


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


_PATIENT_FIELDS = {"first_name", "last_name", "date_of_birth", "risk_level"}


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
        )
        self.data.patients[new.id] = new
        return new

    async def get(self, patient_id: int) -> Patient | None:
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
            session_id = self.data.break_glass_sessions.get((user_id, patient_id))
        return PatientRelation(patient_id, patient.organization_id, on_team, session_id)

    async def external_consents(self, patient_id: int, phone_number: str, organization_id: int | None) -> Any:
        raise NotImplementedError("FakeRelationshipFacts.external_consents is not faked yet")


class FakeBreakGlassRepository(_Repo):
    async def open_session(self, user_id: int, patient_id: int, at: datetime) -> int | None:
        return self.data.break_glass_sessions.get((user_id, patient_id))

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(f"FakeBreakGlassRepository.{name} is not faked yet")


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


_NOT_FAKED = (
    "consents",
    "conversations",
    "messages",
    "outbox",
    "messaging",
    "consent_lifecycle",
    "contacts",
)


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
        self._committed = False

    def __getattr__(self, name: str) -> Any:
        if name in _NOT_FAKED:
            raise NotImplementedError(
                f"FakeUnitOfWork.{name} is not faked yet: test this workflow over the API"
            )
        raise AttributeError(name)

    async def __aenter__(self) -> FakeUnitOfWork:
        return self

    async def commit(self) -> None:
        db, work = self.database, self._work
        for name in ("organizations", "users", "password_hashes", "compliance_groups", "patients"):
            setattr(db, name, getattr(work, name))
        db.care_teams, db.break_glass_sessions = work.care_teams, work.break_glass_sessions
        db.login_throttles = work.login_throttles
        db.next_id = work.next_id
        db.audit.extend(self.audit.pending)
        db.commits += 1
        self.audit.pending.clear()
        self._committed = True
        self._work = db.copy_of_tables()
        for repo in (self.users, self.organizations, self.compliance_groups, self.patients, self.care_teams):
            repo.data = self._work
        self.facts.data = self.break_glass.data = self.audit_trail.data = self._work
        self.login_throttle.data = self._work

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._committed and self.audit.pending:
            self.database.audit.extend(unfinished(self.audit.pending, exc))
            self.audit.pending.clear()


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


_POLICY: PolicyHolder | None = None


def _policy() -> PolicyHolder:
    """The shipped policy, parsed once per test session (it is read-only)."""
    global _POLICY
    if _POLICY is None:
        _POLICY = PolicyHolder(load_policy(POLICY_DIR))
    return _POLICY


def fake_services(settings: EngineSettings | None = None) -> FakeWorld:
    """The real :class:`Services` and the shipped policy over in-memory fakes of every port used."""
    clock = FakeClock()
    db = FakeDatabase(clock=clock)
    passwords, tokens, delivery, notifier = FakePasswords(), FakeTokens(), FakeDelivery(), FakeNotifier()
    consents = ConsentIndex()
    consents.replace_all([], {}, clock(), seq=0)  # loaded, and empty: no consent covers anyone
    services = Services(
        uow=lambda: FakeUnitOfWork(db),  # type: ignore[arg-type,return-value]
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


__all__ = [
    "FakeChatGateway",
    "FakeClock",
    "FakeDatabase",
    "FakeDelivery",
    "FakeLoginThrottleRepository",
    "FakeNotifier",
    "FakePasswords",
    "FakePolicyReloader",
    "FakeSmsGateway",
    "FakeTokens",
    "FakeUnitOfWork",
    "FakeWorld",
    "fake_services",
]
