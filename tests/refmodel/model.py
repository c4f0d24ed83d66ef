"""A reference model of what caremsg's default policy allows, written from policies/README.md alone.

It imports nothing of the engine on purpose: it is a second, independent statement of the policy's
meaning, so that when the service and the model disagree one of them is wrong, and the test says
which decision, in which world, disagreed. The model works on abstract worlds (people, patients,
consents ... named by their index, never by database id) and answers, for one action, whether the
policy allows it, which rule allowed it or why it was refused, which consents could have been the
one used, and what the action changes.

The rules below are the README's "default policy, in words", its sections on consents (recipient,
purpose of use, scope), emergency access and external participants, and issue 9's "What must hold"
(the intended semantics: a read-only consent never allows a change, external participants are
established by a consent naming their number, break-the-glass needs a patient one's organization
may treat, a record one has no relation to answers like a nonexistent one).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

PEER = "peer_support"
CLINICIAN = "care_team_member"
ADMIN = "admin"
OFFICER = "compliance_officer"
AUDITOR = "auditor"
EXTERNAL = "external"
ROLES = (PEER, CLINICIAN, ADMIN, OFFICER, AUDITOR)
STAFF = frozenset({PEER, CLINICIAN})

PURPOSES = ("treatment", "care_coordination", "payment", "healthcare_operations")
#: What a consent may disclose. ``write`` is issue 9's "a read-only consent never allows a change":
#: changing a record needs a consent that says so.
SCOPES = ("read", "message", "sms", "write")

# Facts, in the order policies/README.md lists them: a denial names the first one missing.
SELF, OWN_ORG, CARE_TEAM, COVERED, MEMBER, EXTERNAL_CONSENT = (
    "self",
    "own_org",
    "care_team",
    "covered",
    "member",
    "external_consent",
)
BREAK_GLASS = "break_glass"
FACT_ORDER = (SELF, OWN_ORG, CARE_TEAM, COVERED, MEMBER, EXTERNAL_CONSENT, BREAK_GLASS)
REASONS = {
    SELF: "not_self",
    OWN_ORG: "other_organization",
    CARE_TEAM: "not_on_care_team",
    COVERED: "no_active_consent",
    MEMBER: "not_conversation_member",
    EXTERNAL_CONSENT: "no_external_consent",
    BREAK_GLASS: "no_break_glass",
}

CLINICAL = ("treatment", "care_coordination", "healthcare_operations")
MESSAGING = ("treatment", "care_coordination")


@dataclass(frozen=True)
class ConsentNeed:
    """Which consents count for a workflow: what they must disclose, for which purposes."""

    scope: str
    purposes: tuple[str, ...]


#: The README's consent table per workflow ("Which consents count for a workflow").
NEEDS: dict[str, ConsentNeed] = {
    "patient.read": ConsentNeed("read", CLINICAL),
    "patient.update": ConsentNeed("write", CLINICAL),
    "care_team.read": ConsentNeed("read", CLINICAL),
    "care_team.add_member": ConsentNeed("read", CLINICAL),
    "care_team.join": ConsentNeed("read", CLINICAL),
    "conversation.create": ConsentNeed("message", MESSAGING),
    "conversation.join": ConsentNeed("message", MESSAGING),
    "conversation.read": ConsentNeed("message", MESSAGING),
    "message.send": ConsentNeed("message", MESSAGING),
    # An external SMS participant needs a consent naming their number whose scope includes sms.
    "external": ConsentNeed("sms", MESSAGING),
    # Break-the-glass: a patient one's organization may ever treat (own, or a consent for treatment).
    "break_glass.open": ConsentNeed("read", ("treatment",)),
}


def _rules() -> tuple[tuple[str, str, frozenset[str]], ...]:
    rules: list[tuple[str, str, frozenset[str]]] = []

    def allow(roles: Iterable[str], workflow: str, *requires: str) -> None:
        rules.extend((role, workflow, frozenset(requires)) for role in roles)

    # Peer support and care-team members act on a patient's record only on the care team and covered.
    allow(STAFF, "patient.read", CARE_TEAM, COVERED)
    allow(STAFF, "patient.update", CARE_TEAM, COVERED)
    allow(STAFF, "care_team.read", CARE_TEAM, COVERED)
    allow([CLINICIAN], "care_team.add_member", CARE_TEAM, COVERED)
    allow(STAFF, "care_team.join", COVERED)
    # Only members of a conversation read it or send into it, and only while the patient is covered.
    allow(STAFF, "conversation.create", CARE_TEAM, COVERED)
    allow(STAFF, "conversation.read", MEMBER, COVERED)
    allow(STAFF, "message.send", MEMBER, COVERED)
    allow(STAFF, "conversation.join", COVERED)
    allow([EXTERNAL], "conversation.join", EXTERNAL_CONSENT)
    # Admins manage care teams of their own organization; never patient records.
    allow([ADMIN], "care_team.read", OWN_ORG)
    allow([ADMIN], "care_team.add_member", OWN_ORG)
    # Compliance officers record and revoke consents for their own organization's patients.
    allow([OFFICER], "consent.create", OWN_ORG)
    allow([OFFICER], "consent.revoke", OWN_ORG)
    # Staff list the patients on their care teams and their own conversations; each one shown is
    # decided again as patient.read or conversation.read.
    allow(STAFF, "patient.list")
    allow(STAFF, "conversation.list")
    # Emergency access: staff, for a patient their organization may treat; it opens reading only.
    allow(STAFF, "break_glass.open", COVERED)
    allow(STAFF, "patient.read", BREAK_GLASS)
    allow(STAFF, "care_team.read", BREAK_GLASS)
    return tuple(rules)


RULES = _rules()


# --- the world ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    org: int
    role: str


@dataclass(frozen=True)
class Group:
    owner: int
    members: frozenset[int]


@dataclass(frozen=True)
class Consent:
    patient: int
    kind: str  # organization | compliance_group | external
    target: int  # an organization, a group or a phone number (all by index)
    purpose: str
    scope: frozenset[str]
    timing: str  # active | expired | pending
    revoked: bool = False

    @property
    def active(self) -> bool:
        return self.timing == "active" and not self.revoked


@dataclass(frozen=True)
class External:
    phone: int
    removed: bool = False


@dataclass(frozen=True)
class Conversation:
    patient: int
    members: frozenset[int]
    externals: tuple[External, ...]


@dataclass
class World:
    """Everything the policy's facts rest on. Users, patients, groups: by index; so are consents
    and conversations, in the order they were created."""

    orgs: int
    users: list[User]
    patients: list[int]  # patient -> organization
    care_teams: list[set[int]]  # patient -> users on its care team
    groups: list[Group]
    phones: int
    opted_out: set[int] = field(default_factory=set)
    consents: list[Consent] = field(default_factory=list)
    conversations: list[Conversation] = field(default_factory=list)
    break_glass: set[tuple[int, int]] = field(default_factory=set)  # (user, patient), open


# --- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    workflow: str
    actor: int


@dataclass(frozen=True)
class PatientAction(Action):
    patient: int


@dataclass(frozen=True)
class UpdatePatient(PatientAction):
    risk_level: str


@dataclass(frozen=True)
class AddCareTeamMember(PatientAction):
    member: int


@dataclass(frozen=True)
class NewExternal:
    phone: int
    claimed_org: int | None  # the organization the caller says the number belongs to


@dataclass(frozen=True)
class CreateConversation(PatientAction):
    members: tuple[int, ...]
    externals: tuple[NewExternal, ...]


@dataclass(frozen=True)
class ConversationAction(Action):
    conversation: int | None  # None: one that does not exist


@dataclass(frozen=True)
class RecordConsent(PatientAction):
    kind: str
    target: int
    purpose: str
    scope: frozenset[str]
    timing: str


@dataclass(frozen=True)
class RevokeConsent(Action):
    consent: int | None  # None: one that does not exist


# --- decisions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """A decision about someone other than the actor (a member being added)."""

    role: str
    allowed: bool
    requires: frozenset[str] | None  # the rule that allowed it
    reason: str | None
    consents: frozenset[int] = frozenset()
    field: str | None = None


@dataclass(frozen=True)
class Verdict:
    """The model's answer for one action."""

    workflow: str
    allowed: bool
    status: int
    requires: frozenset[str] | None = None  # the rule that allowed it
    reason: str | None = None  # why it was refused (also kept in the audit when the answer is 404)
    consents: frozenset[int] = frozenset()  # the consents any of which may be the one recorded
    subjects: tuple[Subject, ...] = ()
    field: str | None = None
    #: For a send: per external participant (by position), ``queued`` or the failure reason.
    deliveries: tuple[tuple[int, str], ...] = ()
    #: For a revocation: (conversation, user) taken out, and externals (conversation, position).
    removed_members: frozenset[tuple[int, int]] = frozenset()
    removed_externals: frozenset[tuple[int, int]] = frozenset()
    #: A refusal before any policy decision (409 revoked twice, 404 nothing there, 422 bad input).
    undecided: bool = False
    #: For a listing: the patients or conversations (by index) it shows.
    visible: frozenset[int] | None = None
    #: Decided while the person's emergency access to the patient is open: the record is flagged.
    break_glass: bool = False


def _in(recipient_org: int, consent: Consent, world: World) -> bool:
    if consent.kind == "organization":
        return consent.target == recipient_org
    if consent.kind == "compliance_group":
        return recipient_org in world.groups[consent.target].members
    return False


def covering(world: World, workflow: str, org: int, patient: int) -> frozenset[int]:
    """The active consents that disclose ``patient`` to ``org`` for this workflow's scope and purposes."""
    need = NEEDS[workflow]
    return frozenset(
        i
        for i, c in enumerate(world.consents)
        if c.patient == patient
        and c.active
        and need.scope in c.scope
        and c.purpose in need.purposes
        and _in(org, c, world)
    )


def naming_number(world: World, patient: int, phone: int) -> frozenset[int]:
    """The active consents naming this phone number for texts (scope sms) about the patient."""
    need = NEEDS["external"]
    return frozenset(
        i
        for i, c in enumerate(world.consents)
        if c.patient == patient
        and c.active
        and c.kind == "external"
        and c.target == phone
        and need.scope in c.scope
        and c.purpose in need.purposes
    )


def related(world: World, user: int, patient: int) -> bool:
    """Whether the person may know the patient exists: own organization, on the care team, or some
    active consent (any scope, any purpose) disclosing the patient to their organization."""
    org = world.users[user].org
    if world.patients[patient] == org or user in world.care_teams[patient]:
        return True
    return any(c.patient == patient and c.active and _in(org, c, world) for c in world.consents)


def facts_about_patient(
    world: World, workflow: str, user: int, patient: int
) -> tuple[set[str], frozenset[int]]:
    org = world.users[user].org
    facts: set[str] = set()
    consents: frozenset[int] = frozenset()
    if world.patients[patient] == org:
        facts |= {OWN_ORG, COVERED}
    elif workflow in NEEDS:
        consents = covering(world, workflow, org, patient)
        if consents:
            facts.add(COVERED)
    if user in world.care_teams[patient]:
        facts.add(CARE_TEAM)
    return facts, consents


def decide(role: str, workflow: str, facts: set[str]) -> tuple[bool, frozenset[str] | None, str]:
    """Allow if a rule's facts all hold; else the reason of the closest rule (fewest facts missing,
    everyday rules before emergency ones), naming its first missing fact; no rule at all for the
    role: ``role_not_permitted``."""
    candidates = [requires for r, wf, requires in RULES if r == role and wf == workflow]
    for requires in candidates:
        if requires <= facts:
            return True, requires, "allowed"
    if not candidates:
        return False, None, "role_not_permitted"
    closest = min(candidates, key=lambda req: (BREAK_GLASS in req, len(req - facts)))
    first = next(f for f in FACT_ORDER if f in closest - facts)
    return False, None, REASONS[first]


def _deny_status(world: World, user: int, patient: int, reason: str) -> int:
    if reason == "role_not_permitted" or related(world, user, patient):
        return 403
    return 404


def verdict(world: World, action: Action) -> Verdict:
    """What the default policy says about ``action`` in ``world`` (the world is not changed)."""
    user = world.users[action.actor]
    wf = action.workflow
    if wf in {"patient.list", "conversation.list"}:
        return _list_verdict(world, action)
    if isinstance(action, ConversationAction):
        return _conversation_verdict(world, action)
    if isinstance(action, RevokeConsent):
        return _revoke_verdict(world, action)
    assert isinstance(action, PatientAction)
    patient = action.patient
    facts, consents = facts_about_patient(world, wf, action.actor, patient)
    if wf in {"patient.read", "care_team.read"} and (action.actor, patient) in world.break_glass:
        facts.add(BREAK_GLASS)
    if wf == "break_glass.open":
        facts.discard(OWN_ORG)
        facts.discard(CARE_TEAM)
    if wf in {"consent.create", "consent.revoke"}:
        facts.discard(COVERED)
        consents = frozenset()
    allowed, requires, reason = decide(user.role, wf, facts)
    used = consents if allowed and requires and COVERED in requires and OWN_ORG not in facts else frozenset()
    glass = BREAK_GLASS in facts
    if not allowed:
        status = _deny_status(world, action.actor, patient, reason)
        return Verdict(wf, False, status, reason=reason, break_glass=glass)
    ok = {"patient.read": 200, "patient.update": 200, "care_team.read": 200}
    base = Verdict(wf, True, ok.get(wf, 201), requires=requires, consents=used, break_glass=glass)
    if isinstance(action, AddCareTeamMember):
        return _join_verdict(world, base, action)
    if isinstance(action, CreateConversation):
        return _create_conversation_verdict(world, base, action)
    if (
        isinstance(action, RecordConsent)
        and action.kind == "compliance_group"
        and world.groups[action.target].owner != world.patients[patient]
    ):
        # A consent may name only its own organization's groups (none are shared in these worlds).
        return replace(base, allowed=False, status=422, field="complianceGroupId", undecided=True)
    return base


def _subject(world: World, workflow: str, member: int, patient: int, field_name: str) -> Subject:
    person = world.users[member]
    facts, consents = facts_about_patient(world, workflow, member, patient)
    facts.discard(CARE_TEAM)
    allowed, requires, reason = decide(person.role, workflow, facts)
    used = consents if allowed and OWN_ORG not in facts else frozenset()
    return Subject(
        person.role, allowed, requires, None if allowed else reason, used, None if allowed else field_name
    )


def _join_verdict(world: World, base: Verdict, action: AddCareTeamMember) -> Verdict:
    subject = _subject(world, "care_team.join", action.member, action.patient, "userId")
    if not subject.allowed:
        return replace(
            base, allowed=False, status=403, reason=subject.reason, subjects=(subject,), field="userId"
        )
    return replace(base, subjects=(subject,))


def _create_conversation_verdict(world: World, base: Verdict, action: CreateConversation) -> Verdict:
    subjects: list[Subject] = []
    for i, member in enumerate(action.members):
        if member == action.actor:
            continue
        subject = _subject(world, "conversation.join", member, action.patient, f"memberIds[{i}]")
        subjects.append(subject)
        if not subject.allowed:
            return replace(
                base,
                allowed=False,
                status=403,
                reason=subject.reason,
                subjects=tuple(subjects),
                field=subject.field,
            )
    for i, ext in enumerate(action.externals):
        # Established, never asserted: the organization the caller names for the number counts for nothing.
        consents = naming_number(world, action.patient, ext.phone)
        allowed = bool(consents)
        subject = Subject(
            EXTERNAL,
            allowed,
            frozenset({EXTERNAL_CONSENT}) if allowed else None,
            None if allowed else "no_external_consent",
            consents,
            None if allowed else f"externalMembers[{i}]",
        )
        subjects.append(subject)
        if not allowed:
            return replace(
                base,
                allowed=False,
                status=403,
                reason=subject.reason,
                subjects=tuple(subjects),
                field=subject.field,
            )
    return replace(base, subjects=tuple(subjects))


def _conversation_verdict(world: World, action: ConversationAction) -> Verdict:
    wf = action.workflow
    user = world.users[action.actor]
    if not any(r == user.role and w == wf for r, w, _ in RULES):
        return Verdict(wf, False, 403, reason="role_not_permitted")
    if action.conversation is None:
        return Verdict(wf, False, 404, undecided=True)
    conversation = world.conversations[action.conversation]
    facts, consents = facts_about_patient(world, wf, action.actor, conversation.patient)
    if action.actor in conversation.members:
        facts.add(MEMBER)
    allowed, requires, reason = decide(user.role, wf, facts)
    if not allowed:
        return Verdict(
            wf, False, _deny_status(world, action.actor, conversation.patient, reason), reason=reason
        )
    used = consents if OWN_ORG not in facts else frozenset()
    deliveries: tuple[tuple[int, str], ...] = ()
    if wf == "message.send":
        deliveries = tuple(
            (i, _sms_state(world, conversation.patient, ext))
            for i, ext in enumerate(conversation.externals)
            if not ext.removed
        )
    return Verdict(
        wf, True, 202 if wf == "message.send" else 200, requires, None, used, deliveries=deliveries
    )


def _list_verdict(world: World, action: Action) -> Verdict:
    wf = action.workflow
    allowed, requires, reason = decide(world.users[action.actor].role, wf, set())
    if not allowed:
        return Verdict(wf, False, 403, reason=reason)
    if wf == "patient.list":
        shown = [
            p
            for p, team in enumerate(world.care_teams)
            if action.actor in team and verdict(world, PatientAction("patient.read", action.actor, p)).allowed
        ]
    else:
        shown = [
            c
            for c, conversation in enumerate(world.conversations)
            if action.actor in conversation.members
            and verdict(world, ConversationAction("conversation.read", action.actor, c)).allowed
        ]
    return Verdict(wf, True, 200, requires, visible=frozenset(shown))


def _sms_state(world: World, patient: int, ext: External) -> str:
    if not naming_number(world, patient, ext.phone):
        return "no_sms_consent"
    if ext.phone in world.opted_out:
        return "opted_out"
    return "queued"


def _revoke_verdict(world: World, action: RevokeConsent) -> Verdict:
    wf = action.workflow
    user = world.users[action.actor]
    if user.role != OFFICER:
        return Verdict(wf, False, 403, reason="role_not_permitted")
    if action.consent is None:
        return Verdict(wf, False, 404, undecided=True)
    consent = world.consents[action.consent]
    if world.patients[consent.patient] != user.org:
        return Verdict(
            wf,
            False,
            _deny_status(world, action.actor, consent.patient, "other_organization"),
            reason="other_organization",
        )
    if consent.revoked:
        return Verdict(wf, False, 409, requires=frozenset({OWN_ORG}), undecided=True)
    after = list(world.consents)
    after[action.consent] = replace(consent, revoked=True)
    later = replace(world, consents=after)
    removed_members: set[tuple[int, int]] = set()
    removed_externals: set[tuple[int, int]] = set()
    patient_org = world.patients[consent.patient]
    for ci, conv in enumerate(world.conversations):
        if conv.patient != consent.patient:
            continue
        if consent.kind != "external":
            for m in conv.members:
                org = world.users[m].org
                if org != patient_org and not covering(later, "conversation.read", org, conv.patient):
                    removed_members.add((ci, m))
        for xi, ext in enumerate(conv.externals):
            if ext.removed or consent.kind != "external" or consent.target != ext.phone:
                continue
            if not naming_number(later, conv.patient, ext.phone):
                removed_externals.add((ci, xi))
    return Verdict(
        wf,
        True,
        200,
        frozenset({OWN_ORG}),
        removed_members=frozenset(removed_members),
        removed_externals=frozenset(removed_externals),
    )


# --- effects -----------------------------------------------------------------------------------


def apply(world: World, action: Action, v: Verdict) -> None:
    """Change the world as an allowed action does."""
    if not v.allowed:
        return
    if isinstance(action, AddCareTeamMember):
        world.care_teams[action.patient].add(action.member)
    elif isinstance(action, CreateConversation):
        members = frozenset({action.actor, *action.members})
        externals = tuple(External(e.phone) for e in action.externals)
        world.conversations.append(Conversation(action.patient, members, externals))
    elif isinstance(action, RecordConsent):
        world.consents.append(
            Consent(action.patient, action.kind, action.target, action.purpose, action.scope, action.timing)
        )
    elif isinstance(action, RevokeConsent):
        assert action.consent is not None
        world.consents[action.consent] = replace(world.consents[action.consent], revoked=True)
        for ci, conv in enumerate(world.conversations):
            gone = {m for c, m in v.removed_members if c == ci}
            externals = tuple(
                replace(e, removed=True) if (ci, xi) in v.removed_externals else e
                for xi, e in enumerate(conv.externals)
            )
            world.conversations[ci] = replace(conv, members=conv.members - gone, externals=externals)
    elif action.workflow == "break_glass.open":
        assert isinstance(action, PatientAction)
        world.break_glass.add((action.actor, action.patient))
