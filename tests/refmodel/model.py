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

Longer than 400 lines because it is one independent statement of the policy: the rule table, the
world and its actions, and the verdict and change of every action share the facts and the choice of
consent (``facts_about_patient``, ``choose``, ``decide``), and each verdict is read next to the
rules it applies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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
SELF, OWN_ORG, CARE_TEAM, COVERED, MEMBER, EXTERNAL_CONSENT, BREAK_GLASS, TREATABLE = (
    "self",
    "own_org",
    "care_team",
    "covered",
    "member",
    "external_consent",
    "break_glass",
    "treatable",
)
#: Between a person and a proposed policy change: they proposed it, or someone else did (four eyes).
PROPOSED_BY_SELF, PROPOSED_BY_OTHER = "proposed_by_self", "proposed_by_other"
#: The person's organization governs the deployment's policy (policy.governing_organization).
GOVERNING = "governing"
#: A message's own facts (recall): its sender, and whether it is still within the recall window.
SENDER, RECALL_WINDOW = "sender", "recall_window"
FACT_ORDER = (
    SELF,
    OWN_ORG,
    CARE_TEAM,
    COVERED,
    MEMBER,
    EXTERNAL_CONSENT,
    BREAK_GLASS,
    TREATABLE,
    PROPOSED_BY_SELF,
    PROPOSED_BY_OTHER,
    GOVERNING,
    SENDER,
    RECALL_WINDOW,
)
REASONS = {
    SELF: "not_self",
    OWN_ORG: "other_organization",
    CARE_TEAM: "not_on_care_team",
    COVERED: "no_active_consent",
    MEMBER: "not_conversation_member",
    EXTERNAL_CONSENT: "no_external_consent",
    BREAK_GLASS: "no_break_glass",
    TREATABLE: "not_treatable",
    PROPOSED_BY_SELF: "not_proposer",
    PROPOSED_BY_OTHER: "own_proposal",
    GOVERNING: "not_governing_organization",
    SENDER: "not_sender",
    RECALL_WINDOW: "recall_window_passed",
}
PURPOSE_NOT_PERMITTED = "purpose_not_permitted"
#: Facts that let a person know a patient's records exist: a refusal then answers 403 with its
#: reason; without them (and without any active consent for their organization) it answers 404.
KNOWING = frozenset({OWN_ORG, CARE_TEAM, COVERED, MEMBER, BREAK_GLASS})

CLINICAL = ("treatment", "care_coordination", "healthcare_operations")
MESSAGING = ("treatment", "care_coordination")


@dataclass(frozen=True)
class Declared:
    """A workflow's declaration: the facts it computes, and which consents count for it (what they
    must disclose, for which purposes; no purposes: any)."""

    facts: frozenset[str]
    scopes: frozenset[str] = frozenset()
    purposes: tuple[str, ...] = ()


def _declared(facts: str, scopes: str = "", purposes: tuple[str, ...] = ()) -> Declared:
    return Declared(frozenset(facts.split()), frozenset(scopes.split()), purposes)


#: The README's declarations ("Which consents count for a workflow", emergency access, write scope).
WORKFLOWS: dict[str, Declared] = {
    "patient.read": _declared("own_org care_team covered break_glass treatable", "read", CLINICAL),
    "patient.update": _declared("own_org care_team covered", "write", CLINICAL),
    # Taking the 42 CFR Part 2 mark off (``{"part2": false}`` alone; with other changes, decided
    # after patient.update, and only for a marked patient).
    "patient.unmark_part2": _declared("own_org"),
    "care_team.read": _declared("own_org care_team covered break_glass treatable", "read", CLINICAL),
    "care_team.add_member": _declared("own_org care_team covered", "write", CLINICAL),
    "care_team.join": _declared("own_org covered", "read", CLINICAL),
    "conversation.create": _declared("own_org care_team covered", "message", MESSAGING),
    "conversation.join": _declared("own_org covered external_consent", "message", MESSAGING),
    "conversation.read": _declared("member covered break_glass", "message", MESSAGING),
    "message.send": _declared("member covered break_glass", "message", MESSAGING),
    # An urgent message: message.send, then this, for the sender on the patient's care team.
    "message.send_urgent": _declared("member care_team covered", "message", MESSAGING),
    # Acknowledging an urgent message (a member of the patient's care team). Decided by the rules
    # below; the random scenarios do not drive it (tests/api/test_urgent_messages.py does).
    "message.acknowledge": _declared("member care_team covered", "message", MESSAGING),
    "break_glass.open": _declared("own_org treatable"),
    "consent.create": _declared("own_org care_team covered"),
    "consent.revoke": _declared("own_org"),
    "consent.list": _declared("own_org care_team covered"),
    "organization_contact.add": _declared("own_org"),
    "organization_contact.remove": _declared("own_org"),
    "patient.create": _declared(""),
    "care_team.create": _declared("own_org care_team covered", "write", CLINICAL),
    "patient.disclosures": _declared("own_org care_team covered"),
    "organization.create": _declared(""),
    "compliance_group.create": _declared(""),
    "user.list": _declared("own_org"),
    "user.create": _declared("own_org"),
    "audit.read": _declared("own_org"),
    "audit.export": _declared("own_org"),
    "audit.chain.read": _declared(""),
    "audit.verify": _declared(""),
    "audit.anchor": _declared(""),
    "break_glass.list": _declared(""),
    "break_glass.read": _declared("own_org"),
    "break_glass.review": _declared("own_org"),
    "policy.read": _declared(""),
    "policy.reload": _declared(""),
    "organization_contact.list": _declared("own_org"),
    "compliance_group.share": _declared("own_org"),
    "auth.profile": _declared("self"),
    "auth.logout": _declared("self"),
    "user.approve": _declared("own_org"),
    "user.deactivate": _declared("own_org"),
    "user.reactivate": _declared("own_org"),
    "user.change_role": _declared("own_org"),
    "user.revoke_sessions": _declared("own_org"),
    "user.unlock": _declared("own_org"),
    "organization.list": _declared(""),
    "compliance_group.list": _declared(""),
    "patient.list": _declared(""),
    "conversation.list": _declared(""),
    "console.sign_in": _declared("self"),
    "console.policy.read": _declared(""),
    "console.policy.tests": _declared(""),
    "console.policy.what_if": _declared(""),
    "on_call.read": _declared("own_org care_team covered", "read", CLINICAL),
    "on_call.add": _declared("own_org care_team covered", "write", CLINICAL),
    "on_call.remove": _declared("own_org care_team covered", "write", CLINICAL),
    "away.set": _declared("self"),
    "away.end": _declared("self"),
    "alert_phone.set": _declared("self"),
    "policy.change.list": _declared(""),
    "policy.change.read": _declared(""),
    "policy.propose": _declared("governing"),
    "policy.restore": _declared("governing"),
    "policy.approve": _declared("proposed_by_self proposed_by_other own_org governing"),
    "policy.reject": _declared("proposed_by_self proposed_by_other own_org governing"),
    "policy.withdraw": _declared("proposed_by_self proposed_by_other own_org governing"),
    # Recall: the message's sender soon after sending, a compliance officer of the patient's
    # organization at any time; the legal record of what it said, for compliance officers.
    "message.recall": _declared("member covered own_org sender recall_window", "message", MESSAGING),
    "message.read_recalled": _declared("own_org"),
    # A correction: a new message from the original's sender, naming the one it replaces.
    "message.correct": _declared("member covered sender", "message", MESSAGING),
    # Legal holds on a patient or a conversation of the officer's organization; their listing.
    "legal_hold.place": _declared("own_org"),
    "legal_hold.lift": _declared("own_org"),
    "legal_hold.list": _declared(""),
    # A file sent as a new message: decided apart from message.send, on the same facts.
    "message.attach": _declared("member covered break_glass", "message", MESSAGING),
}
#: Workflows the model decides only as part of another action: a member or external participant
#: joining (decided for each person a conversation or care team is created with or given), a
#: listing's slices (organization.read, compliance_group.read), a compliance group named in a
#: consent (compliance_group.use), an inbound text (sms.reply) and each text a send queues
#: (sms.send_full_text).
DECIDED_WITHIN = frozenset(
    {
        "care_team.join",
        "conversation.join",
        "organization.read",
        "compliance_group.read",
        "compliance_group.use",
        "sms.reply",
        "sms.send_full_text",
        # Decided by the escalation scheduler for each person an unacknowledged urgent message's
        # step alerts (tests/api/test_urgent_messages.py), not by a request.
        "message.escalate",
    }
)
#: An external SMS participant is admitted by a consent naming their number whose scope includes sms
#: and conversation.join's own scope; a text goes out under one whose scope includes sms.
ADMISSION = Declared(frozenset({EXTERNAL_CONSENT}), frozenset({"sms", "message"}), MESSAGING)
TEXTING = Declared(frozenset({EXTERNAL_CONSENT}), frozenset({"sms"}), MESSAGING)
#: An SMS reply is posted only while a consent still names its sender (``sms.reply``).
REPLYING = Declared(frozenset({EXTERNAL_CONSENT}), frozenset({"sms"}), MESSAGING)


ACCOUNT_WORKFLOWS = (
    "user.approve",
    "user.deactivate",
    "user.reactivate",
    "user.change_role",
    "user.revoke_sessions",
    "user.unlock",
)


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
    # Urgent messages: sent by a member who is on the patient's care team, acknowledged by anyone on it.
    allow(STAFF, "message.send_urgent", MEMBER, CARE_TEAM, COVERED)
    allow(STAFF, "message.acknowledge", CARE_TEAM, COVERED)
    allow(STAFF, "conversation.join", COVERED)
    allow([EXTERNAL], "conversation.join", EXTERNAL_CONSENT)
    # Admins manage care teams of their own organization; never patient records.
    allow([ADMIN], "care_team.read", OWN_ORG)
    allow([ADMIN], "care_team.add_member", OWN_ORG)
    # Compliance officers record and revoke consents for their own organization's patients.
    allow([OFFICER], "consent.create", OWN_ORG)
    allow([OFFICER], "consent.revoke", OWN_ORG)
    # Ordinary consents could disclose a patient's records again once its Part 2 mark is off.
    allow([OFFICER], "patient.unmark_part2", OWN_ORG)
    # A patient's consents: the compliance officers of its organization, and its care team if covered.
    allow([OFFICER], "consent.list", OWN_ORG)
    allow(STAFF, "consent.list", CARE_TEAM, COVERED)
    # Admins keep their organization's contact directory of external numbers.
    allow([ADMIN], "organization_contact.add", OWN_ORG)
    allow([ADMIN], "organization_contact.remove", OWN_ORG)
    allow([ADMIN, OFFICER], "organization_contact.list", OWN_ORG)
    # A compliance group belongs to its organization; its compliance officers share it by name.
    allow([OFFICER], "compliance_group.share", OWN_ORG)
    # Admins manage the accounts of their own organization, one workflow per action; everyone sees
    # their own profile and ends their own sessions.
    for account in ACCOUNT_WORKFLOWS:
        allow([ADMIN], account, OWN_ORG)
    allow(ROLES, "auth.profile", SELF)
    allow([ADMIN], "user.list", OWN_ORG)
    allow([ADMIN], "user.create", OWN_ORG)
    # Whoever registers a patient (peer support, care-team members) joins its care team; admins
    # make sure a patient of their organization has one.
    allow(STAFF, "patient.create")
    allow([ADMIN], "care_team.create", OWN_ORG)
    allow([ADMIN], "organization.create")
    allow([OFFICER], "compliance_group.create")
    # Auditors (and compliance officers) read the audit records of their own organization; compliance
    # officers review emergency sessions and a patient's accounting of disclosures.
    allow([AUDITOR, OFFICER], "audit.read", OWN_ORG)
    allow([AUDITOR, OFFICER], "audit.export", OWN_ORG)
    # ... and both see, verify and anchor the one hash chain of the whole trail (no content shown).
    allow([AUDITOR, OFFICER], "audit.chain.read")
    allow([AUDITOR, OFFICER], "audit.verify")
    allow([AUDITOR, OFFICER], "audit.anchor")
    allow([OFFICER], "break_glass.list")
    # ... one at a time, of their own organization, and mark each reviewed once.
    allow([OFFICER], "break_glass.read", OWN_ORG)
    allow([OFFICER], "break_glass.review", OWN_ORG)
    allow([OFFICER], "patient.disclosures", OWN_ORG)
    # The policy in force: read by admins, compliance officers and auditors, reloaded by the first two.
    allow([ADMIN, OFFICER, AUDITOR], "policy.read")
    allow([ADMIN, OFFICER], "policy.reload")
    allow(ROLES, "auth.logout", SELF)
    # The web console: compliance officers and auditors enter it (their own account); compliance
    # officers read the policy in words there. Its audit search is audit.read, as above.
    allow([OFFICER, AUDITOR], "console.sign_in", SELF)
    allow([OFFICER], "console.policy.read")
    # ... and the test tables with their results, and a what-if of an edited file (a dry run).
    allow([OFFICER], "console.policy.tests")
    allow([OFFICER], "console.policy.what_if")
    # Four eyes: every compliance officer reads the proposals; the files decide for every organization,
    # so only the governing organization's officers propose policy changes, and another of them
    # approves or rejects one; its proposer may withdraw it.
    for workflow in ("policy.change.list", "policy.change.read"):
        allow([OFFICER], workflow)
    for workflow in ("policy.propose", "policy.restore"):
        allow([OFFICER], workflow, GOVERNING)
    allow([OFFICER], "policy.approve", PROPOSED_BY_OTHER, GOVERNING)
    allow([OFFICER], "policy.reject", PROPOSED_BY_OTHER, GOVERNING)
    allow([OFFICER], "policy.withdraw", PROPOSED_BY_SELF)
    # A message is recalled by its sender while the recall window lasts (a member, the patient
    # covered), or by a compliance officer of the patient's organization at any time; what it said
    # stays in the legal record, which that organization's compliance officers read.
    allow(STAFF, "message.recall", SENDER, RECALL_WINDOW, MEMBER, COVERED)
    allow([OFFICER], "message.recall", OWN_ORG)
    allow([OFFICER], "message.read_recalled", OWN_ORG)
    allow(STAFF, "message.correct", SENDER, MEMBER, COVERED)
    # A compliance officer places and lifts legal holds on their own organization's patients and
    # conversations (the retention sweep keeps held content), and lists them.
    allow([OFFICER], "legal_hold.place", OWN_ORG)
    allow([OFFICER], "legal_hold.lift", OWN_ORG)
    allow([OFFICER], "legal_hold.list")
    allow(STAFF, "message.attach", MEMBER, COVERED)
    # Staff list the patients on their care teams and their own conversations; each one shown is
    # decided again as patient.read or conversation.read.
    allow(STAFF, "patient.list")
    # Staff see only what they can act on: their own organization (compliance officers, who choose
    # consent recipients, every one) and their organization's compliance groups.
    allow([PEER, CLINICIAN, ADMIN, OFFICER], "organization.list")
    allow([ADMIN, OFFICER], "compliance_group.list")
    allow(STAFF, "conversation.list")
    # Emergency access: staff, for a patient their organization may treat; it opens reading only.
    allow(STAFF, "break_glass.open", TREATABLE)
    allow(STAFF, "patient.read", BREAK_GLASS, TREATABLE)
    allow(STAFF, "care_team.read", BREAK_GLASS, TREATABLE)
    # The on-call roster: run by the care team (covered) and its organization's admins; staff and
    # admins mark themselves away with a delegate.
    for roster in ("on_call.read", "on_call.add", "on_call.remove"):
        allow(STAFF, roster, CARE_TEAM, COVERED)
        allow([ADMIN], roster, OWN_ORG)
    allow([PEER, CLINICIAN, ADMIN], "away.set", SELF)
    allow([PEER, CLINICIAN, ADMIN], "away.end", SELF)
    allow([PEER, CLINICIAN, ADMIN], "alert_phone.set", SELF)
    return tuple(rules)


RULES = _rules()


# --- the world ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    org: int
    role: str
    active: bool = True


@dataclass(frozen=True)
class Group:
    owner: int
    members: frozenset[int]
    #: Organizations the owner shared it with by name: their compliance officers may name it.
    shared_with: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Consent:
    patient: int
    kind: str  # organization | compliance_group | external
    target: int  # an organization, a group or a phone number (all by index)
    purpose: str
    scope: frozenset[str]
    timing: str  # active | expired | pending
    expires_in_days: int | None = None  # for an active one: when it will expire (None: never)
    revoked: bool = False
    part2: bool = False  # it covers 42 CFR Part 2 records (and holds the elements of 2.31)

    @property
    def active(self) -> bool:
        return self.timing == "active" and not self.revoked


@dataclass(frozen=True)
class Hold:
    """A legal hold on a patient's messages, or on one conversation's (``conversation``)."""

    patient: int
    conversation: int | None = None
    active: bool = True


#: A message's age, once time has passed since it was sent: within the recall window, or past it.
FRESH, INSIDE, PAST = 0, 1, 2


@dataclass(frozen=True)
class External:
    phone: int
    consent: int  # the consent that admitted them (or carries them since)
    claimed_org: int | None = None  # the organization named for them when they were added
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
    #: Every emergency session, open or ended, by the order it was opened: (clinician, patient).
    sessions: list[tuple[int, int]] = field(default_factory=list)
    #: Sessions reviewed, and by which organization: each reviews a session on its own.
    reviews: set[tuple[int, int]] = field(default_factory=set)  # (session, organization)
    #: Organizations' contact directories: (organization, phone) pairs their admins listed.
    directory: set[tuple[int, int]] = field(default_factory=set)
    #: The conversation of each message sent, by the order they were sent.
    messages: list[int] = field(default_factory=list)
    #: Read marks: (conversation, user) -> the last message (by order sent) they marked read.
    reads: dict[tuple[int, int], int] = field(default_factory=dict)
    #: On-call shifts: (patient, day slot) -> the user on call for the patient's care team then.
    shifts: dict[tuple[int, int], int] = field(default_factory=dict)
    #: Staff away now (until ended) -> their delegate.
    away: dict[int, int] = field(default_factory=dict)
    #: Who sent each message (by the order they were sent, as ``messages``).
    senders: list[int] = field(default_factory=list)
    #: How long ago each message was sent, where time has passed since: ``INSIDE`` the recall window
    #: still (a minute before it ends), or ``PAST`` it. Not listed: just sent.
    ages: dict[int, int] = field(default_factory=dict)
    #: Messages recalled; messages corrected -> their correction; messages that carry a file.
    recalled: set[int] = field(default_factory=set)
    corrections: dict[int, int] = field(default_factory=dict)
    attached: set[int] = field(default_factory=set)
    #: Legal holds, in the order they were placed.
    holds: list[Hold] = field(default_factory=list)
    #: Patients whose records include 42 CFR Part 2 records: every consent for them must be a Part 2 one.
    part2: set[int] = field(default_factory=set)


# --- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    workflow: str
    actor: int
    #: The purpose of use the client states (X-Purpose-Of-Use), if any.
    purpose_of_use: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class PatientAction(Action):
    patient: int


@dataclass(frozen=True)
class UpdatePatient(PatientAction):
    risk_level: str
    #: Mark the patient's records as including 42 CFR Part 2 records (True), or unmark them (False).
    part2: bool | None = None


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
class MarkRead(ConversationAction):
    """Mark the conversation read up to a message (decided as ``conversation.read``)."""

    message: int | None = None  # a message by the order it was sent; None: an id nobody has


@dataclass(frozen=True)
class RecordConsent(PatientAction):
    kind: str
    target: int
    purpose: str
    scope: frozenset[str]
    timing: str
    expires_in_days: int | None = None
    #: A Part 2 consent: with the elements of 42 CFR 2.31 and the event that ends it (``event``), or
    #: every element but that event (``no_event``: it needs an expiry date then). None: not Part 2.
    part2: str | None = None


@dataclass(frozen=True)
class AddContact(Action):
    """An admin lists a phone number in an organization's contact directory."""

    org: int
    phone: int


@dataclass(frozen=True)
class RemoveContact(AddContact):
    """An admin takes a number out of an organization's contact directory."""


@dataclass(frozen=True)
class ListContacts(Action):
    org: int


@dataclass(frozen=True)
class AccountAction(Action):
    """An admin acts on an account (approve, deactivate, reactivate, end its sessions, unlock)."""

    target: int


@dataclass(frozen=True)
class ChangeRole(AccountAction):
    role: str


@dataclass(frozen=True)
class CreateUser(Action):
    """An admin creates an account of ``role`` in organization ``org``."""

    org: int
    role: str


@dataclass(frozen=True)
class CreateGroup(Action):
    """A compliance officer creates a compliance group of these organizations."""

    members: frozenset[int]


@dataclass(frozen=True)
class ShareGroup(Action):
    """A compliance officer shares a compliance group with another organization by name."""

    group: int
    org: int


@dataclass(frozen=True)
class AddShift(PatientAction):
    """Someone puts ``member`` on call for the patient's care team on day ``slot`` (one hour)."""

    member: int
    slot: int


@dataclass(frozen=True)
class RemoveShift(PatientAction):
    """Someone takes the shift of day ``slot`` off the patient's care team's roster."""

    slot: int


@dataclass(frozen=True)
class SetAway(Action):
    """The actor marks themself away from now on, with ``delegate`` taking their urgent messages."""

    delegate: int


@dataclass(frozen=True)
class RevokeConsent(Action):
    consent: int | None  # None: one that does not exist


@dataclass(frozen=True)
class MessageAction(Action):
    """An action on one message: recall it, read its legal record, correct it."""

    message: int | None  # a message by the order it was sent; None: an id nobody has


@dataclass(frozen=True)
class RecallMessage(MessageAction):
    """``age``: how long ago the message was sent by the time of the recall (``FRESH``: just now,
    ``INSIDE``: a minute before the recall window ends, ``PAST``: a minute after); time only moves
    forward, so a message once older stays so."""

    age: int = FRESH


@dataclass(frozen=True)
class DownloadAttachment(MessageAction):
    """Download the file a message carries (decided as ``conversation.read`` on its conversation)."""


@dataclass(frozen=True)
class PlaceHold(Action):
    """A legal hold on a patient (``conversation`` None) or on a conversation."""

    patient: int | None
    conversation: int | None = None


@dataclass(frozen=True)
class LiftHold(Action):
    hold: int | None  # a hold by the order it was placed; None: an id nobody has


@dataclass(frozen=True)
class ReviewSession(Action):
    """A compliance officer marks an emergency session reviewed (``break_glass.review``; the
    console's ``break_glass.read`` of one session is decided on the same facts)."""

    session: int | None  # a session by the order it was opened; None: an id nobody has


#: The actor of an action nobody of the world takes (a text from outside comes in).
NOBODY = -1


@dataclass(frozen=True)
class SmsReply(Action):
    """Someone texts caremsg's number from phone ``phone`` (workflow ``sms.reply``; no actor).

    ``code``: a drawn reference to one of the number's participations whose reply code the text
    starts with (``names``, once resolved: (conversation, position)); ``unknown_code``: it starts
    with a code the number does not have; ``word``: the text is STOP or START (after any code).
    """

    phone: int
    code: int | None = None
    unknown_code: bool = False
    word: str | None = None
    names: tuple[int, int] | None = None


# --- decisions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """A decision about someone other than the actor (a member being added)."""

    role: str
    allowed: bool
    requires: frozenset[str] | None  # the rule that allowed it
    reason: str | None
    consent: int | None = None  # the consent it rests on
    field: str | None = None


@dataclass(frozen=True)
class Verdict:
    """The model's answer for one action."""

    workflow: str
    allowed: bool
    status: int
    requires: frozenset[str] | None = None  # the rule that allowed the action's own decision
    reason: str | None = None  # why it was refused (also kept in the audit when the answer is 404)
    consent: int | None = None  # the consent the decision rests on (the audit names it)
    subjects: tuple[Subject, ...] = ()
    field: str | None = None
    #: For a send: per external participant (by position), ``queued`` or the failure reason.
    deliveries: tuple[tuple[int, str], ...] = ()
    #: For a send: per text queued, the consent ``sms.send_full_text`` was decided under; refused
    #: (``not_in_sms_full_text_group``) since the shipped sms.toml names no group.
    full_text: tuple[int | None, ...] = ()
    #: For a revocation: (conversation, user) taken out; externals (conversation, position) removed,
    #: or carried on by another consent (conversation, position, consent).
    removed_members: frozenset[tuple[int, int]] = frozenset()
    removed_externals: frozenset[tuple[int, int]] = frozenset()
    readmitted_externals: frozenset[tuple[int, int, int]] = frozenset()
    #: A refusal that is no policy decision of the action (409 revoked twice, 404 nothing there,
    #: 422 a record named in the body that the caller may not know).
    undecided: bool = False
    #: For a listing: the patients or conversations (by index) it shows.
    visible: frozenset[int] | None = None
    #: Decided while the person's emergency access to the patient is open: the record is flagged.
    break_glass: bool = False
    #: The purpose of use the audit record names (the stated one, else the consent's).
    purpose: str | None = None
    #: Audit events of the action's effects, by event name, and how many of each.
    effects: tuple[tuple[str, int], ...] = ()


def _reaches(org: int, consent: Consent, world: World) -> bool:
    """Whether the consent discloses to this organization (directly or through a group it is in)."""
    if consent.kind == "organization":
        return consent.target == org
    if consent.kind == "compliance_group":
        return org in world.groups[consent.target].members
    return False


def choose(world: World, candidates: Iterable[int]) -> int | None:
    """The one consent that counts when several do: the most specific recipient (a phone number, then
    an organization, then a compliance group), then the one that lasts longest (no expiry first, then
    the latest), then the first recorded."""
    specificity = {"external": 0, "organization": 1, "compliance_group": 2}

    def rank(i: int) -> tuple[int, int, int, int]:
        days = world.consents[i].expires_in_days
        lasts = (0, 0) if days is None else (1, -days)  # no expiry first, then the latest
        return (specificity[world.consents[i].kind], *lasts, i)

    return min(candidates, key=rank, default=None)


def _counting(
    world: World, need: Declared, patient: int, reaches: Callable[[Consent], bool], stated: str | None
) -> tuple[int | None, bool]:
    """The consent that counts for ``need`` (chosen as :func:`choose` says), and whether a stated
    purpose of use kept one that would otherwise count from counting."""
    fitting = [
        i
        for i, c in enumerate(world.consents)
        if c.patient == patient
        and c.active
        and reaches(c)
        and need.scopes <= c.scope
        and (not need.purposes or c.purpose in need.purposes)
    ]
    chosen = [i for i in fitting if stated is None or world.consents[i].purpose == stated]
    return choose(world, chosen), bool(fitting) and not chosen


def admitting(
    world: World, patient: int, phone: int, claimed_org: int | None, need: Declared = ADMISSION
) -> int | None:
    """The consent that lets an external participant take part (or be texted: ``TEXTING``): one
    naming their number, or one disclosing to the organization named for them (directly or through
    a group) if that organization's contact directory lists the number. Naming it alone is nothing,
    and only that organization's own staff may name it when adding them (the caller decides that)."""
    vouched = claimed_org is not None and (claimed_org, phone) in world.directory

    def reaches(c: Consent) -> bool:
        if c.kind == "external":
            return c.target == phone
        return vouched and claimed_org is not None and _reaches(claimed_org, c, world)

    return _counting(world, need, patient, reaches, None)[0]


def knows(world: World, org: int, patient: int) -> bool:
    """Whether some active consent, of any scope or purpose, discloses the patient to the organization."""
    return any(c.patient == patient and c.active and _reaches(org, c, world) for c in world.consents)


@dataclass
class Facts:
    """The facts that hold for one decision, the consent it rests on (recorded in the audit), and
    whether a stated purpose of use kept an otherwise counting consent from counting."""

    facts: set[str]
    consent: int | None = None
    purpose_refused: bool = False


def facts_about_patient(
    world: World, workflow: str, user: int, patient: int, stated: str | None = None
) -> Facts:
    """The facts between a person and a patient for this workflow; ``stated``: the purpose of use
    they stated (for their own decisions only)."""
    declared = WORKFLOWS[workflow]
    org = world.users[user].org
    out = Facts(set())
    if world.patients[patient] == org:
        out.facts |= {OWN_ORG, COVERED, TREATABLE}
    else:
        if COVERED in declared.facts or not declared.facts:
            out.consent, out.purpose_refused = _counting(
                world, declared, patient, lambda c: _reaches(org, c, world), stated
            )
            if out.consent is not None:
                out.facts.add(COVERED)
        if TREATABLE in declared.facts:
            treatment = Declared(frozenset(), frozenset(), ("treatment",))
            chosen, _ = _counting(world, treatment, patient, lambda c: _reaches(org, c, world), None)
            if chosen is not None:
                out.facts.add(TREATABLE)
                if out.consent is None:
                    out.consent = chosen
    if user in world.care_teams[patient]:
        out.facts.add(CARE_TEAM)
    if BREAK_GLASS in declared.facts and (user, patient) in world.break_glass:
        out.facts.add(BREAK_GLASS)
    if TREATABLE not in declared.facts:
        out.facts.discard(TREATABLE)
    return out


def decide(role: str, workflow: str, facts: set[str]) -> tuple[frozenset[str] | None, str, frozenset[str]]:
    """The rule that allows (its facts all hold), or None, the reason, and the facts the closest rule
    misses: fewest missing, everyday rules before emergency ones; the reason names its first missing
    fact; no rule at all for the role: ``role_not_permitted``."""
    candidates = [requires for r, wf, requires in RULES if r == role and wf == workflow]
    for requires in candidates:
        if requires <= facts:
            return requires, "allowed", frozenset()
    if not candidates:
        return None, "role_not_permitted", frozenset()
    closest = min(candidates, key=lambda req: (BREAK_GLASS in req, len(req - facts)))
    first = next(f for f in FACT_ORDER if f in closest - facts)
    return None, REASONS[first], closest - facts


def may_run(role: str, workflow: str) -> bool:
    """Whether any rule lets the role run the workflow at all (else it is refused before any lookup)."""
    return any(r == role and w == workflow for r, w, _ in RULES)


def decide_own(
    role: str, workflow: str, found: Facts, stated: str | None
) -> tuple[frozenset[str] | None, str]:
    """The actor's own decision: as :func:`decide`, but a stated purpose of use the workflow does not
    serve, or one that alone kept the covering consent from counting, is ``purpose_not_permitted``."""
    requires, reason, missing = decide(role, workflow, found.facts)
    purposes = WORKFLOWS[workflow].purposes
    if stated is not None and purposes and stated not in purposes:
        return None, PURPOSE_NOT_PERMITTED
    if requires is None and found.purpose_refused and COVERED in missing:
        return None, PURPOSE_NOT_PERMITTED
    return requires, reason


def _purpose(world: World, stated: str | None, consent: int | None) -> str | None:
    if stated is not None:
        return stated
    return None if consent is None else world.consents[consent].purpose


def _refusal(world: World, action: Action, patient: int, found: Facts, reason: str) -> Verdict:
    """403 with the reason for a record the person may know exists; else 404, as for none at all."""
    knowing = bool(found.facts & KNOWING) or knows(world, world.users[action.actor].org, patient)
    return Verdict(
        action.workflow,
        False,
        403 if knowing else 404,
        reason=reason,
        break_glass=BREAK_GLASS in found.facts,
        purpose=action.purpose_of_use,
    )


def verdict(world: World, action: Action) -> Verdict:
    """What the default policy says about ``action`` in ``world`` (the world is not changed)."""
    user = world.users[action.actor]
    wf = action.workflow
    stated = action.purpose_of_use
    if not user.active:
        return Verdict(wf, False, 401, undecided=True)  # a deactivated account's token is refused
    if isinstance(action, ConversationAction) and wf == "message.send_urgent":
        return _urgent_verdict(world, action)
    if not may_run(user.role, wf):
        purposes = WORKFLOWS[wf].purposes
        reason = (
            PURPOSE_NOT_PERMITTED if stated and purposes and stated not in purposes else "role_not_permitted"
        )
        return Verdict(wf, False, 403, reason=reason, purpose=stated)
    if wf in {"patient.list", "conversation.list"}:
        return _list_verdict(world, action)
    if wf == "organization.list":
        shown = None if user.role == OFFICER else frozenset({user.org})  # an officer: every organization
        return Verdict(wf, True, 200, frozenset(), visible=shown, purpose=stated)
    if wf == "compliance_group.list":
        # Admins: their organization's groups; compliance officers: those shared with it too.
        groups = frozenset(
            g
            for g, group in enumerate(world.groups)
            if group.owner == user.org or (user.role == OFFICER and user.org in group.shared_with)
        )
        return Verdict(wf, True, 200, frozenset(), visible=groups, purpose=stated)
    if wf in {"policy.read", "policy.reload", "break_glass.list", "audit.read"}:
        # About no record (the trail: the reader's own organization, which it asks by default).
        requires = frozenset({OWN_ORG}) if wf == "audit.read" else frozenset()
        return Verdict(wf, True, 200, requires, purpose=stated)
    if wf == "user.list":
        shown = frozenset(i for i, u in enumerate(world.users) if u.org == user.org)
        return Verdict(wf, True, 200, frozenset({OWN_ORG}), visible=shown, purpose=stated)
    if wf in {"patient.create", "organization.create", "compliance_group.create"}:
        return Verdict(wf, True, 201, frozenset(), purpose=stated)
    if isinstance(action, CreateUser):
        if action.org != user.org:
            return Verdict(wf, False, 403, reason=REASONS[OWN_ORG], field="organizationId", purpose=stated)
        return Verdict(wf, True, 201, frozenset({OWN_ORG}), purpose=stated)
    if wf in {"auth.profile", "auth.logout"}:
        return Verdict(wf, True, 200 if wf == "auth.profile" else 204, frozenset({SELF}), purpose=stated)
    if isinstance(action, AccountAction):
        return _account_verdict(world, action)
    if isinstance(action, ShareGroup):
        return _share_verdict(world, action)
    if isinstance(action, ListContacts):
        if action.org != user.org:
            return Verdict(wf, False, 403, reason=REASONS[OWN_ORG], purpose=stated)
        shown = frozenset(phone for org, phone in world.directory if org == action.org)
        return Verdict(wf, True, 200, frozenset({OWN_ORG}), visible=shown, purpose=stated)
    if isinstance(action, RemoveContact):
        if action.org != user.org:
            return Verdict(wf, False, 403, reason=REASONS[OWN_ORG], purpose=stated)
        if (action.org, action.phone) not in world.directory:
            return Verdict(wf, False, 404, requires=frozenset({OWN_ORG}), undecided=True, purpose=stated)
        return Verdict(wf, True, 204, frozenset({OWN_ORG}), purpose=stated)
    if isinstance(action, SetAway):
        # The delegate: an active peer support specialist or care-team member of one's organization,
        # not oneself, not away themself.
        delegate = world.users[action.delegate]
        fit = (
            action.delegate != action.actor
            and delegate.active
            and delegate.org == user.org
            and delegate.role in STAFF
            and action.delegate not in world.away
        )
        if not fit:
            return Verdict(
                wf, False, 422, frozenset({SELF}), field="delegateId", undecided=True, purpose=stated
            )
        return Verdict(wf, True, 200, frozenset({SELF}), purpose=stated)
    if wf == "away.end":
        if action.actor not in world.away:
            return Verdict(wf, False, 409, frozenset({SELF}), undecided=True, purpose=stated)
        return Verdict(wf, True, 204, frozenset({SELF}), purpose=stated)
    if isinstance(action, ConversationAction):
        return _conversation_verdict(world, action)
    if isinstance(action, DownloadAttachment):
        return _download_verdict(world, action)
    if isinstance(action, MessageAction):
        return _message_verdict(world, action)
    if isinstance(action, (PlaceHold, LiftHold)):
        return _hold_verdict(world, action)
    if isinstance(action, ReviewSession):
        return _session_verdict(world, action)
    if wf == "legal_hold.list":
        # An officer's organization's holds: those on its patients and their conversations.
        shown = frozenset(i for i, h in enumerate(world.holds) if world.patients[h.patient] == user.org)
        return Verdict(wf, True, 200, frozenset(), visible=shown, purpose=stated)
    if isinstance(action, RevokeConsent):
        return _revoke_verdict(world, action)
    if isinstance(action, AddContact):
        if action.org != user.org:
            return Verdict(wf, False, 403, reason=REASONS[OWN_ORG], purpose=stated)
        if (action.org, action.phone) in world.directory:
            return Verdict(wf, False, 409, requires=frozenset({OWN_ORG}), undecided=True, purpose=stated)
        return Verdict(wf, True, 201, frozenset({OWN_ORG}), purpose=stated)
    assert isinstance(action, PatientAction)
    patient = action.patient
    found = facts_about_patient(world, wf, action.actor, patient, stated)
    requires, reason = decide_own(user.role, wf, found, stated)
    if requires is None:
        return _refusal(world, action, patient, found, reason)
    # A patient registered through the API has its care team already: creating one returns it.
    ok = {"patient.read": 200, "patient.update": 200, "care_team.read": 200, "care_team.create": 200}
    ok["patient.unmark_part2"] = 200
    ok["patient.disclosures"] = ok["on_call.read"] = ok["on_call.remove"] = 200
    base = Verdict(
        wf,
        True,
        ok.get(wf, 201),
        requires=requires,
        consent=found.consent,
        break_glass=BREAK_GLASS in found.facts,
        purpose=_purpose(world, stated, found.consent),
    )
    if wf == "consent.list":
        # The patient's organization sees them all; another, only those disclosing to it.
        org = world.users[action.actor].org
        shown = frozenset(
            i
            for i, c in enumerate(world.consents)
            if c.patient == patient and (org == world.patients[patient] or _reaches(org, c, world))
        )
        return replace(base, status=200, visible=shown)
    if wf == "break_glass.open":
        # Each opening is on record, and tells the patient's organization's compliance officers.
        return replace(base, effects=(("break_glass.opened", 1), ("break_glass.compliance_notified", 1)))
    if isinstance(action, AddShift):
        # Only an active clinical member of the care team of the patient's organization goes on call,
        # and never over another shift of the team.
        member = world.users[action.member]
        on_team = action.member in world.care_teams[patient]
        if not (member.active and on_team and member.org == world.patients[patient] and member.role in STAFF):
            return replace(base, allowed=False, status=422, field="userId", undecided=True)
        if (patient, action.slot) in world.shifts:
            return replace(base, allowed=False, status=422, field="startsAt", undecided=True)
        return base
    if isinstance(action, RemoveShift) and (patient, action.slot) not in world.shifts:
        return replace(base, allowed=False, status=404, undecided=True)
    if isinstance(action, AddCareTeamMember):
        return _join_verdict(world, base, action)
    if isinstance(action, CreateConversation):
        return _create_conversation_verdict(world, base, action)
    if isinstance(action, RecordConsent) and action.kind == "compliance_group":
        # A consent may name only its own organization's groups, or one shared with it by name
        # (compliance_group.use); another's answers as a group that does not exist.
        group = world.groups[action.target]
        if group.owner != user.org and user.org not in group.shared_with:
            return replace(base, allowed=False, status=422, field="complianceGroupId", undecided=True)
    if isinstance(action, RecordConsent):
        # 42 CFR 2.31(a)(6): a Part 2 consent ends on a date or an event; a Part 2 patient's consents
        # are all Part 2 ones. (An active consent drawn without expiry has neither date nor event.)
        dated = action.timing == "expired" or action.expires_in_days is not None
        if action.part2 == "no_event" and not dated:
            return replace(base, allowed=False, status=422, field="part2.expiryEvent", undecided=True)
        if action.part2 is None and patient in world.part2:
            return replace(base, allowed=False, status=422, field="part2", undecided=True)
    # Taking the mark off with other changes: decided (and refused to whom the policy does not give
    # patient.unmark_part2) once patient.update has been allowed, for a marked patient only.
    if (
        isinstance(action, UpdatePatient)
        and action.part2 is False
        and patient in world.part2
        and not may_run(user.role, "patient.unmark_part2")
    ):
        return replace(base, allowed=False, status=403, reason="role_not_permitted")
    # Not marked Part 2 while a consent without the Part 2 elements is in force or pending: it would
    # go on disclosing the patient's Part 2 records without them.
    if (
        isinstance(action, UpdatePatient)
        and action.part2
        and patient not in world.part2
        and any(
            c.patient == patient and not c.part2 and not c.revoked and c.timing != "expired"
            for c in world.consents
        )
    ):
        return replace(base, allowed=False, status=409, field="part2", undecided=True)
    return base


def _account_verdict(world: World, action: AccountAction) -> Verdict:
    """An admin's action on an account of their own organization; another's answers as none."""
    wf = action.workflow
    stated = action.purpose_of_use
    target = world.users[action.target]
    if target.org != world.users[action.actor].org:
        return Verdict(wf, False, 404, undecided=True, purpose=stated)
    own = frozenset({OWN_ORG})
    if wf in {"user.deactivate", "user.change_role"} and action.target == action.actor:
        # An organization is never left without the admin who could undo it.
        return Verdict(wf, False, 409, requires=own, undecided=True, purpose=stated)
    effects: tuple[tuple[str, int], ...] = ()
    if wf == "user.deactivate":
        # They leave the chat channel of every conversation they are a member of.
        left = sum(1 for c in world.conversations if action.target in c.members)
        effects = (("conversation.member_left_channel", left),)
    return Verdict(wf, True, 200, own, purpose=stated, effects=effects)


def _share_verdict(world: World, action: ShareGroup) -> Verdict:
    wf = action.workflow
    stated = action.purpose_of_use
    org = world.users[action.actor].org
    group = world.groups[action.group]
    if group.owner != org:
        # Shared with them: they know it (403); else: as a group that does not exist.
        status = 403 if org in group.shared_with else 404
        return Verdict(wf, False, status, reason=REASONS[OWN_ORG], undecided=status == 404, purpose=stated)
    if action.org == group.owner:
        return Verdict(
            wf,
            False,
            422,
            requires=frozenset({OWN_ORG}),
            field="organizationId",
            undecided=True,
            purpose=stated,
        )
    return Verdict(wf, True, 200, frozenset({OWN_ORG}), purpose=stated)


def _subject(world: World, workflow: str, member: int, patient: int, field_name: str) -> Subject:
    person = world.users[member]
    found = facts_about_patient(world, workflow, member, patient)
    found.facts.discard(CARE_TEAM)
    requires, reason, _ = decide(person.role, workflow, found.facts)
    allowed = requires is not None
    return Subject(
        person.role,
        allowed,
        requires,
        None if allowed else reason,
        found.consent if allowed else None,
        None if allowed else field_name,
    )


def _knows_organization(world: World, actor: int, patient: int, org: int) -> bool:
    """Whether the actor may know of people of ``org`` in a decision about this patient: their own
    organization, the patient's, or one an active consent discloses the patient to."""
    return org in {world.users[actor].org, world.patients[patient]} or knows(world, org, patient)


def _join_verdict(world: World, base: Verdict, action: AddCareTeamMember) -> Verdict:
    if not world.users[action.member].active:
        return replace(base, allowed=False, status=422, field="userId", undecided=True)
    subject = _subject(world, "care_team.join", action.member, action.patient, "userId")
    if subject.allowed:
        # Idempotent: 201 when the person was added, 200 with the team unchanged if already on it.
        added = action.member not in world.care_teams[action.patient]
        return replace(base, status=201 if added else 200, subjects=(subject,))
    if not _knows_organization(world, action.actor, action.patient, world.users[action.member].org):
        # Someone the caller may not know of: answered as a user that does not exist.
        return replace(base, allowed=False, status=422, subjects=(subject,), field="userId", undecided=True)
    return replace(
        base, allowed=False, status=403, reason=subject.reason, subjects=(subject,), field="userId"
    )


def _create_conversation_verdict(world: World, base: Verdict, action: CreateConversation) -> Verdict:
    members = [(i, u) for i, u in enumerate(action.members) if u != action.actor]
    strangers = [
        (i, u)
        for i, u in members
        if not _knows_organization(world, action.actor, action.patient, world.users[u].org)
    ]
    # People the caller may not know of are decided first; any refused is answered as no such user.
    subjects = [
        _subject(world, "conversation.join", u, action.patient, f"memberIds[{i}]") for i, u in strangers
    ]
    refused = [s for s in subjects if not s.allowed]
    inactive = [f"memberIds[{i}]" for i, u in members if not world.users[u].active]
    if refused or inactive:
        # Refused strangers and deactivated accounts alike answer as users that do not exist.
        field_name = refused[0].field if refused else inactive[0]
        return replace(
            base, allowed=False, status=422, subjects=tuple(subjects), field=field_name, undecided=True
        )
    decided = {i for i, _ in strangers}
    for i, member in members:
        if i in decided:
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
        # Established, never asserted: the organization the caller names for the number counts for
        # nothing. And an organization's contact directory vouches only to its own staff: named by
        # anyone else it is not read, so every number is refused alike.
        own_directory = ext.claimed_org in (None, world.users[action.actor].org)
        consent = admitting(world, action.patient, ext.phone, ext.claimed_org) if own_directory else None
        allowed = consent is not None
        subject = Subject(
            EXTERNAL,
            allowed,
            frozenset({EXTERNAL_CONSENT}) if allowed else None,
            None if allowed else "no_external_consent",
            consent,
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
    if action.conversation is None:
        return Verdict(wf, False, 404, undecided=True)
    conversation = world.conversations[action.conversation]
    found = facts_about_patient(world, wf, action.actor, conversation.patient, action.purpose_of_use)
    if action.actor in conversation.members:
        found.facts.add(MEMBER)
    requires, reason = decide_own(user.role, wf, found, action.purpose_of_use)
    if requires is None:
        return _refusal(world, action, conversation.patient, found, reason)
    deliveries: tuple[tuple[int, str], ...] = ()
    full_text: tuple[int | None, ...] = ()
    if wf in SENDING:
        deliveries, full_text = _deliveries(world, conversation)
    if wf == "message.attach":
        full_text = ()  # a file is never texted: sms.send_full_text is not asked, each gets a notification
    allowed = Verdict(
        wf,
        True,
        202 if wf in SENDING else 200,
        requires,
        consent=found.consent,
        deliveries=deliveries,
        full_text=full_text,
        break_glass=BREAK_GLASS in found.facts,
        purpose=_purpose(world, action.purpose_of_use, found.consent),
    )
    if isinstance(action, MarkRead) and (
        action.message is None or world.messages[action.message] != action.conversation
    ):
        # Decided and allowed, then the message is none of this conversation's: 422 naming messageId.
        return replace(allowed, allowed=False, status=422)
    return allowed


#: Workflows that send a new message into a conversation (202, delivered to its externals by text).
SENDING = frozenset({"message.send", "message.attach", "message.correct"})


def _deliveries(
    world: World, conversation: Conversation
) -> tuple[tuple[tuple[int, str], ...], tuple[int | None, ...]]:
    """A new message's texts: per external participant (by position) ``queued`` or why not, and the
    consent each text queued is decided ``sms.send_full_text`` under."""
    deliveries = tuple(
        (i, _sms_state(world, conversation.patient, ext))
        for i, ext in enumerate(conversation.externals)
        if not ext.removed
    )
    full_text = tuple(
        admitting(world, conversation.patient, ext.phone, ext.claimed_org, TEXTING)
        for ext in conversation.externals
        if not ext.removed and _sms_state(world, conversation.patient, ext) == "queued"
    )
    return deliveries, full_text


def _message_verdict(world: World, action: MessageAction) -> Verdict:
    """Recall, the legal record, correction: decided on the facts between the person and the
    message's conversation's patient, ``member``, and the message's own: ``sender``, and
    ``recall_window`` until the window (the policy's, 15 minutes by default) has passed."""
    wf = action.workflow
    if action.message is None:
        return Verdict(wf, False, 404, undecided=True)
    conversation = world.conversations[world.messages[action.message]]
    found = facts_about_patient(world, wf, action.actor, conversation.patient, action.purpose_of_use)
    if action.actor in conversation.members:
        found.facts.add(MEMBER)
    declared = WORKFLOWS[wf].facts
    if SENDER in declared and world.senders[action.message] == action.actor:
        found.facts.add(SENDER)
    if RECALL_WINDOW in declared and world.ages.get(action.message, FRESH) < PAST:
        found.facts.add(RECALL_WINDOW)
    requires, reason = decide_own(world.users[action.actor].role, wf, found, action.purpose_of_use)
    if requires is None:
        return _refusal(world, action, conversation.patient, found, reason)
    allowed = Verdict(
        wf,
        True,
        200,
        requires,
        consent=found.consent,
        purpose=_purpose(world, action.purpose_of_use, found.consent),
    )
    if wf == "message.recall" and action.message in world.recalled:
        return replace(allowed, allowed=False, status=409, undecided=True)  # recalled already
    if wf == "message.read_recalled" and action.message not in world.recalled:
        return replace(allowed, allowed=False, status=404, undecided=True)  # nothing in the legal record
    if wf == "message.correct":
        if action.message in world.corrections:
            return replace(allowed, allowed=False, status=409, undecided=True)  # corrected already
        deliveries, full_text = _deliveries(world, conversation)
        return replace(allowed, status=202, deliveries=deliveries, full_text=full_text)
    return allowed


def _download_verdict(world: World, action: DownloadAttachment) -> Verdict:
    """A message's file is read as the message is (``conversation.read``); a message without one,
    and a recalled message's (its file kept for the legal record only), answer 404 once decided."""
    if action.message is None:
        return Verdict(action.workflow, False, 404, undecided=True)
    read = ConversationAction(
        action.workflow, action.actor, world.messages[action.message], purpose_of_use=action.purpose_of_use
    )
    allowed = _conversation_verdict(world, read)
    if allowed.allowed and (action.message not in world.attached or action.message in world.recalled):
        return replace(allowed, allowed=False, status=404, undecided=True)
    return allowed


def _hold_verdict(world: World, action: PlaceHold | LiftHold) -> Verdict:
    """A legal hold is decided on the facts between the officer and the patient it concerns (the
    conversation's, for a hold on one); another organization's answers as none at all."""
    wf = action.workflow
    if isinstance(action, LiftHold):
        hold = None if action.hold is None else world.holds[action.hold]
        patient = None if hold is None else hold.patient
    elif action.conversation is not None:
        hold, patient = None, world.conversations[action.conversation].patient
    else:
        hold, patient = None, action.patient
    if patient is None:
        return Verdict(wf, False, 404, undecided=True)
    user = world.users[action.actor]
    if hold is not None and user.role == OFFICER and world.patients[patient] != user.org:
        # Another organization's hold is unknown to an officer, whatever they know of the patient.
        return Verdict(wf, False, 404, undecided=True)
    found = facts_about_patient(world, wf, action.actor, patient, action.purpose_of_use)
    requires, reason = decide_own(user.role, wf, found, action.purpose_of_use)
    if requires is None:
        return _refusal(world, action, patient, found, reason)
    base = Verdict(
        wf, True, 201 if isinstance(action, PlaceHold) else 200, requires, purpose=action.purpose_of_use
    )
    if hold is not None and not hold.active:
        return replace(base, allowed=False, status=409, undecided=True)  # lifted already
    return base


def _session_verdict(world: World, action: ReviewSession) -> Verdict:
    """An emergency session is its clinician's organization's and its patient's organization's:
    another answers as none at all. Each of the two reviews it once, on its own: one's review is no
    bar to the other's."""
    wf, stated = action.workflow, action.purpose_of_use
    org = world.users[action.actor].org
    if action.session is None:
        return Verdict(wf, False, 404, undecided=True, purpose=stated)
    clinician, patient = world.sessions[action.session]
    if org not in (world.users[clinician].org, world.patients[patient]):
        return Verdict(wf, False, 404, undecided=True, purpose=stated)
    base = Verdict(wf, True, 200, frozenset({OWN_ORG}), purpose=stated)
    if (action.session, org) in world.reviews:
        return replace(base, allowed=False, status=409, undecided=True)  # reviewed by it already
    return base


def _urgent_verdict(world: World, action: ConversationAction) -> Verdict:
    """Sending urgent is sending (decided first, its refusal the answer), then message.send_urgent."""
    sent = verdict(world, replace(action, workflow="message.send"))
    if not sent.allowed:
        return sent
    wf = action.workflow
    conversation = world.conversations[action.conversation or 0]
    found = facts_about_patient(world, wf, action.actor, conversation.patient, action.purpose_of_use)
    if action.actor in conversation.members:
        found.facts.add(MEMBER)
    requires, reason = decide_own(world.users[action.actor].role, wf, found, action.purpose_of_use)
    if requires is None:
        return _refusal(world, action, conversation.patient, found, reason)
    return replace(
        sent,
        workflow=wf,
        requires=requires,
        consent=found.consent,
        break_glass=BREAK_GLASS in found.facts,
        purpose=_purpose(world, action.purpose_of_use, found.consent),
    )


def _list_verdict(world: World, action: Action) -> Verdict:
    wf = action.workflow
    requires, _, _ = decide(world.users[action.actor].role, wf, set())
    if wf == "patient.list":
        shown = [
            p
            for p, team in enumerate(world.care_teams)
            if action.actor in team
            and verdict(
                world, PatientAction("patient.read", action.actor, p, purpose_of_use=action.purpose_of_use)
            ).allowed
        ]
    else:
        shown = [
            c
            for c, conversation in enumerate(world.conversations)
            if action.actor in conversation.members
            and verdict(
                world,
                ConversationAction(
                    "conversation.read", action.actor, c, purpose_of_use=action.purpose_of_use
                ),
            ).allowed
        ]
    return Verdict(wf, True, 200, requires, visible=frozenset(shown), purpose=action.purpose_of_use)


def _sms_state(world: World, patient: int, ext: External) -> str:
    if admitting(world, patient, ext.phone, ext.claimed_org, TEXTING) is None:
        return "no_sms_consent"
    if ext.phone in world.opted_out:
        return "opted_out"
    return "queued"


def _revoke_verdict(world: World, action: RevokeConsent) -> Verdict:
    wf = action.workflow
    if action.consent is None:
        return Verdict(wf, False, 404, undecided=True)
    consent = world.consents[action.consent]
    found = facts_about_patient(world, wf, action.actor, consent.patient, action.purpose_of_use)
    requires, reason = decide_own(world.users[action.actor].role, wf, found, action.purpose_of_use)
    if requires is None:
        return _refusal(world, action, consent.patient, found, reason)
    if consent.revoked:
        return Verdict(wf, False, 409, requires=requires, undecided=True, purpose=action.purpose_of_use)
    after = list(world.consents)
    after[action.consent] = replace(consent, revoked=True)
    later = replace(world, consents=after)
    removed_members: set[tuple[int, int]] = set()
    removed_externals: set[tuple[int, int]] = set()
    readmitted: set[tuple[int, int, int]] = set()
    patient_org = world.patients[consent.patient]
    for ci, conv in enumerate(world.conversations):
        if conv.patient != consent.patient:
            continue
        if consent.kind != "external":
            for member in conv.members:
                org = world.users[member].org
                if (
                    org != patient_org
                    and facts_about_patient(later, "conversation.read", member, conv.patient).consent is None
                ):
                    removed_members.add((ci, member))
        for xi, ext in enumerate(conv.externals):
            if ext.removed or ext.consent != action.consent:
                continue
            other = admitting(later, conv.patient, ext.phone, ext.claimed_org)
            if other is None:
                removed_externals.add((ci, xi))
            else:
                readmitted.add((ci, xi, other))
    return Verdict(
        wf,
        True,
        200,
        requires,
        purpose=action.purpose_of_use,
        effects=(
            ("conversation.member_removed", len(removed_members)),
            ("conversation.external_removed", len(removed_externals)),
            ("conversation.external_readmitted", len(readmitted)),
        ),
        removed_members=frozenset(removed_members),
        removed_externals=frozenset(removed_externals),
        readmitted_externals=frozenset(readmitted),
    )


# --- SMS replies ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplyVerdict:
    """Where a text from a number goes, as the README's "An SMS reply never lands in a conversation
    by guesswork" says.

    ``decided``: the conversations one of which ``sms.reply`` is decided for, each with the consent
    it would be posted under (None: refused, nothing posted); empty when it is decided nowhere.
    ``held``: the conversations that each get an ``sms_reply_held`` record (and whose codes the
    question back lists); ``held_one_of``: instead exactly one of these (a number active nowhere
    any more: the conversation that texted it last, which the model does not track).
    """

    workflow: str
    decided: tuple[tuple[int, int | None], ...] = ()
    held: frozenset[int] = frozenset()
    held_one_of: frozenset[int] = frozenset()
    held_reason: str | None = None
    #: STOP / START: the number's opt-out afterwards, and the record of it (one).
    opted_out: bool | None = None
    #: A held reply is asked back about (the question lists the codes), unless its number opted out.
    asks: bool = True


def participations(world: World, phone: int) -> list[tuple[int, int]]:
    """Every (conversation, position) the number was added to, removed ones included."""
    return [
        (ci, xi)
        for ci, conv in enumerate(world.conversations)
        for xi, ext in enumerate(conv.externals)
        if ext.phone == phone
    ]


def _reply_decision(world: World, ci: int, xi: int) -> tuple[int, int | None]:
    conv = world.conversations[ci]
    ext = conv.externals[xi]
    return ci, admitting(world, conv.patient, ext.phone, ext.claimed_org, REPLYING)


def reply_verdict(world: World, action: SmsReply) -> ReplyVerdict:
    """What becomes of a text from ``action.phone``: a keyword changes the number's opt-out (whoever
    sent it); a reply goes to the conversation its code names, or to the number's one active
    conversation, where ``sms.reply`` decides; with several active conversations and no code (or a
    code the number does not have) it is held, in every candidate conversation."""
    wf = action.workflow
    parts = participations(world, action.phone)
    if action.word is not None:
        return ReplyVerdict(wf, opted_out=action.word == "STOP")
    if not parts:
        return ReplyVerdict(wf)  # a number no conversation has: ignored
    active = [(ci, xi) for ci, xi in parts if not world.conversations[ci].externals[xi].removed]
    asks = action.phone not in world.opted_out  # nothing but a STOP's confirmation is texted then
    if action.unknown_code or action.names is not None:
        if action.names is not None and action.names in active:
            return ReplyVerdict(wf, decided=(_reply_decision(world, *action.names),))
        if active:
            held = frozenset(ci for ci, _ in active)
            return ReplyVerdict(wf, held=held, held_reason="unknown_reply_code", asks=asks)
        pool = frozenset(ci for ci, _ in parts)
        return ReplyVerdict(wf, held_one_of=pool, held_reason="unknown_reply_code", asks=asks)
    if len(active) == 1:
        return ReplyVerdict(wf, decided=(_reply_decision(world, *active[0]),))
    if not active:
        # Active nowhere any more: refused where it texted last (a removed participant is not
        # established there, whatever consents name the number now).
        return ReplyVerdict(wf, decided=tuple((ci, None) for ci, _ in parts))
    return ReplyVerdict(wf, held=frozenset(ci for ci, _ in active), held_reason="ambiguous_reply", asks=asks)


def apply_reply(world: World, action: SmsReply) -> None:
    """A keyword changes the number's opt-out; a reply changes nothing the model keeps."""
    if action.word == "STOP":
        world.opted_out.add(action.phone)
    elif action.word == "START":
        world.opted_out.discard(action.phone)


# --- effects -----------------------------------------------------------------------------------


def let_time_pass(world: World, action: Action) -> None:
    """Before a recall: the message is as old as the action says (never younger than it was)."""
    if isinstance(action, RecallMessage) and action.message is not None:
        world.ages[action.message] = max(world.ages.get(action.message, FRESH), action.age)


def apply(world: World, action: Action, v: Verdict) -> None:
    """Change the world as an allowed action does."""
    if not v.allowed:
        return
    if isinstance(action, AddCareTeamMember):
        world.care_teams[action.patient].add(action.member)
    elif isinstance(action, UpdatePatient) and action.part2 is not None:
        (world.part2.add if action.part2 else world.part2.discard)(action.patient)
    elif isinstance(action, PatientAction) and action.workflow == "patient.unmark_part2":
        world.part2.discard(action.patient)
    elif isinstance(action, CreateConversation):
        members = frozenset({action.actor, *action.members})
        admitted = [s.consent for s in v.subjects if s.role == EXTERNAL]
        externals = tuple(
            External(
                e.phone, admitted[i] if i < len(admitted) and admitted[i] is not None else -1, e.claimed_org
            )
            for i, e in enumerate(action.externals)
        )
        world.conversations.append(Conversation(action.patient, members, externals))
    elif isinstance(action, RecordConsent):
        world.consents.append(
            Consent(
                action.patient,
                action.kind,
                action.target,
                action.purpose,
                action.scope,
                action.timing,
                action.expires_in_days,
                part2=action.part2 is not None,
            )
        )
    elif isinstance(action, RevokeConsent):
        assert action.consent is not None
        world.consents[action.consent] = replace(world.consents[action.consent], revoked=True)
        carried = {(c, x): consent for c, x, consent in v.readmitted_externals}
        for ci, conv in enumerate(world.conversations):
            gone = {m for c, m in v.removed_members if c == ci}
            externals = tuple(
                replace(e, removed=True)
                if (ci, xi) in v.removed_externals
                else replace(e, consent=carried[(ci, xi)])
                if (ci, xi) in carried
                else e
                for xi, e in enumerate(conv.externals)
            )
            world.conversations[ci] = replace(conv, members=conv.members - gone, externals=externals)
    elif isinstance(action, AddShift):
        world.shifts[(action.patient, action.slot)] = action.member
    elif isinstance(action, RemoveShift):
        world.shifts.pop((action.patient, action.slot), None)
    elif isinstance(action, SetAway):
        world.away[action.actor] = action.delegate
    elif action.workflow == "away.end":
        world.away.pop(action.actor, None)
    elif isinstance(action, RemoveContact):
        world.directory.discard((action.org, action.phone))
    elif isinstance(action, AddContact):
        world.directory.add((action.org, action.phone))
    elif isinstance(action, CreateUser):
        world.users.append(User(action.org, action.role))
    elif isinstance(action, CreateGroup):
        world.groups.append(Group(world.users[action.actor].org, action.members))
    elif action.workflow == "patient.create":
        world.patients.append(world.users[action.actor].org)
        world.care_teams.append({action.actor})
    elif action.workflow == "organization.create":
        world.orgs += 1
    elif isinstance(action, ShareGroup):
        group = world.groups[action.group]
        world.groups[action.group] = replace(group, shared_with=group.shared_with | {action.org})
    elif isinstance(action, ChangeRole):
        world.users[action.target] = replace(world.users[action.target], role=action.role)
    elif isinstance(action, AccountAction) and action.workflow in {"user.deactivate", "user.reactivate"}:
        world.users[action.target] = replace(
            world.users[action.target], active=action.workflow == "user.reactivate"
        )
    elif action.workflow == "break_glass.open":
        assert isinstance(action, PatientAction)
        world.break_glass.add((action.actor, action.patient))
        world.sessions.append((action.actor, action.patient))
    elif isinstance(action, ReviewSession):
        assert action.session is not None
        world.reviews.add((action.session, world.users[action.actor].org))
    elif isinstance(action, MarkRead):
        assert action.conversation is not None
        assert action.message is not None
        key = (action.conversation, action.actor)
        world.reads[key] = max(world.reads.get(key, -1), action.message)  # only forward
    elif isinstance(action, ConversationAction) and action.workflow in {
        "message.send",
        "message.send_urgent",
        "message.attach",
    }:
        assert action.conversation is not None
        world.messages.append(action.conversation)
        world.senders.append(action.actor)
        if action.workflow == "message.attach":
            world.attached.add(len(world.messages) - 1)
    elif isinstance(action, MessageAction) and action.workflow == "message.recall":
        assert action.message is not None
        world.recalled.add(action.message)
    elif isinstance(action, MessageAction) and action.workflow == "message.correct":
        assert action.message is not None
        world.messages.append(world.messages[action.message])
        world.senders.append(action.actor)
        world.corrections[action.message] = len(world.messages) - 1
    elif isinstance(action, PlaceHold):
        patient = (
            action.patient
            if action.conversation is None
            else world.conversations[action.conversation].patient
        )
        assert patient is not None
        world.holds.append(Hold(patient, action.conversation))
    elif isinstance(action, LiftHold):
        assert action.hold is not None
        world.holds[action.hold] = replace(world.holds[action.hold], active=False)
