"""Hypothesis strategies: random worlds (organizations, people of every role, patients, care teams,
compliance groups, phone numbers, opt-outs, expired emergency sessions) and random actions in them.

Actions are drawn before anything runs, so a consent or conversation they name is a raw number that
:func:`resolve` turns into one that exists when the action runs (or into "none", a record that does
not exist). Shrinking then removes actions and simplifies indices while keeping the story readable.

Longer than 400 lines because the worlds, the actions drawn in them and :func:`resolve`, which turns
the drawn references into records of that world, are one set of strategies: an action's draw and its
resolution are read together.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypeVar

from hypothesis import strategies as st

from tests.refmodel import model as m

#: Everyone an organization has: one person of each role, and a second care-team member.
ROSTER = (m.PEER, m.CLINICIAN, m.CLINICIAN, m.ADMIN, m.OFFICER, m.AUDITOR)
#: Drawn actors that :func:`resolve` makes concrete: a member of the conversation the action names,
#: the compliance officer of the organization of the consent's (message's, hold's) patient, the
#: sender of the message.
MEMBER_OF_IT, OFFICER_OF_IT, SENDER_OF_IT = -1, -2, -3
#: For an emergency session: the compliance officer of its clinician's organization (OFFICER_OF_IT:
#: of its patient's).
OFFICER_OF_CLINICIAN = -4
PHONES = 3


def person(org: int, role_slot: int) -> int:
    return org * len(ROSTER) + role_slot


@dataclass(frozen=True)
class WorldSpec:
    orgs: int
    patients: tuple[int, ...]  # the organization of each patient
    care_team: tuple[tuple[int, int], ...]  # (patient, user) on its care team besides its registrar
    groups: tuple[tuple[int, frozenset[int]], ...]  # (owner organization, member organizations)
    opted_out: frozenset[int]  # phone numbers (by index) that texted STOP
    expired_break_glass: tuple[tuple[int, int], ...]  # (user, patient): sessions that have ended
    directory: frozenset[tuple[int, int]] = frozenset()  # (organization, phone) contact entries
    part2: frozenset[int] = frozenset()  # patients whose records include 42 CFR Part 2 records

    def registrar(self, patient: int) -> int:
        """The care-team member of the patient's organization who registered the patient."""
        return person(self.patients[patient], 1)

    def model(self) -> m.World:
        users = [m.User(org, role) for org in range(self.orgs) for role in ROSTER]
        teams = [{self.registrar(p)} for p in range(len(self.patients))]
        for patient, user in self.care_team:
            teams[patient].add(user)
        return m.World(
            orgs=self.orgs,
            users=users,
            patients=list(self.patients),
            care_teams=teams,
            groups=[m.Group(owner, members) for owner, members in self.groups],
            phones=PHONES,
            opted_out=set(self.opted_out),
            directory=set(self.directory),
            part2=set(self.part2),
            sessions=list(self.expired_break_glass),
        )


@st.composite
def world_specs(draw: st.DrawFn) -> WorldSpec:
    orgs = draw(st.integers(2, 3))
    users = orgs * len(ROSTER)
    patients = tuple(draw(st.lists(st.integers(0, orgs - 1), min_size=1, max_size=3)))
    staff = [person(o, slot) for o in range(orgs) for slot in (0, 1, 2)]
    care_team = tuple(
        draw(
            st.lists(
                st.tuples(st.integers(0, len(patients) - 1), st.sampled_from(staff)), max_size=4, unique=True
            )
        )
    )
    groups = tuple(
        draw(
            st.lists(
                st.tuples(st.integers(0, orgs - 1), st.frozensets(st.integers(0, orgs - 1), max_size=orgs)),
                max_size=2,
            )
        )
    )
    opted_out = draw(st.frozensets(st.integers(0, PHONES - 1), max_size=1))
    expired = tuple(
        draw(st.lists(st.tuples(st.integers(0, users - 1), st.integers(0, len(patients) - 1)), max_size=1))
    )
    directory = draw(
        st.frozensets(st.tuples(st.integers(0, orgs - 1), st.integers(0, PHONES - 1)), max_size=2)
    )
    part2 = draw(st.frozensets(st.integers(0, len(patients) - 1), max_size=1))
    return WorldSpec(orgs, patients, care_team, groups, opted_out, expired, directory, part2)


@st.composite
def _actor(draw: st.DrawFn, spec: WorldSpec, patient: int, preferred_slot: int) -> int:
    """Mostly someone likely to be allowed (the patient's registrar, or the patient's organization's
    person in ``preferred_slot``), sometimes that role in another organization, sometimes anyone."""
    pick = draw(st.integers(0, 9))
    if pick < 3 and preferred_slot in (0, 1, 2):
        return spec.registrar(patient)
    if pick < 3 and preferred_slot not in (0, 1, 2):
        return person(spec.patients[patient], preferred_slot)
    if pick < 6:
        helpers = [u for p, u in spec.care_team if p == patient]
        if helpers and preferred_slot in (0, 1, 2):
            return draw(st.sampled_from(helpers))
        return person(spec.patients[patient], preferred_slot)
    if pick < 8:
        return person(draw(st.integers(0, spec.orgs - 1)), preferred_slot)
    return draw(st.integers(0, spec.orgs * len(ROSTER) - 1))


@st.composite
def record_consent(draw: st.DrawFn, spec: WorldSpec) -> m.RecordConsent:
    patient = draw(st.integers(0, len(spec.patients) - 1))
    kinds = ["organization", "external"] + (["compliance_group"] if spec.groups else [])
    kind = draw(st.sampled_from(kinds))
    target = draw(
        st.integers(0, spec.orgs - 1)
        if kind == "organization"
        else st.integers(0, len(spec.groups) - 1)
        if kind == "compliance_group"
        else st.integers(0, PHONES - 1)
    )
    scope = draw(st.frozensets(st.sampled_from(m.SCOPES), min_size=1, max_size=3))
    return m.RecordConsent(
        "consent.create",
        draw(_actor(spec, patient, 4)),
        patient,
        kind,
        target,
        draw(st.sampled_from(m.PURPOSES)),
        scope,
        timing := draw(st.sampled_from(["active", "active", "active", "expired", "pending"])),
        draw(st.none() | st.integers(1, 30)) if timing == "active" else None,
        # Mostly not Part 2; a Part 2 one now and then, with its ending event or without it.
        draw(st.sampled_from([None, None, None, None, "event", "no_event"])),
    )


@st.composite
def account_action(draw: st.DrawFn, spec: WorldSpec) -> m.AccountAction:
    """Mostly an admin acting on an account of their organization, sometimes on another's, sometimes
    someone else trying; the target is often a care-team member (whose later actions it changes)."""
    users = spec.orgs * len(ROSTER)
    workflow = draw(st.sampled_from(m.ACCOUNT_WORKFLOWS))
    org = draw(st.integers(0, spec.orgs - 1))
    actor = person(org, 3) if draw(st.integers(0, 4)) else draw(st.integers(0, users - 1))
    target = (
        person(org, draw(st.sampled_from([0, 1, 2, 3])))
        if draw(st.integers(0, 3))
        else draw(st.integers(0, users - 1))
    )
    if workflow == "user.change_role":
        return m.ChangeRole(workflow, actor, target, draw(st.sampled_from(m.ROLES)))
    return m.AccountAction(workflow, actor, target)


@st.composite
def create_conversation(draw: st.DrawFn, spec: WorldSpec, patient: int, creator: int) -> m.CreateConversation:
    """Mostly colleagues of the patient's organization, sometimes anyone; now and then texted people."""
    users = spec.orgs * len(ROSTER)
    home = spec.patients[patient]
    colleague = st.sampled_from([person(home, slot) for slot in (0, 1, 2)])
    members = tuple(
        draw(st.lists(colleague | colleague | st.integers(0, users - 1), max_size=3, unique=True))
    )
    phones = draw(st.lists(st.integers(0, PHONES - 1), max_size=2, unique=True) | st.just([]))
    # The organization named for a number: none, any (another's directory is not read), or the
    # creator's own (whose directory vouches to them).
    own = st.just(creator // len(ROSTER))
    externals = tuple(
        m.NewExternal(phone, draw(st.none() | st.integers(0, spec.orgs - 1) | own)) for phone in phones
    )
    return m.CreateConversation("conversation.create", creator, patient, members, externals)


@st.composite
def on_call_action(draw: st.DrawFn, spec: WorldSpec, patient: int, clinician: int) -> m.Action:
    """A care team's roster: read, a shift added (mostly a colleague of the patient's organization,
    on one of three days, so some clash) or removed; by the team, or the organization's admin."""
    users = spec.orgs * len(ROSTER)
    actor = draw(st.sampled_from([clinician, clinician, draw(_actor(spec, patient, 3))]))
    workflow = draw(st.sampled_from(["on_call.read", "on_call.add", "on_call.add", "on_call.remove"]))
    slot = draw(st.integers(0, 2))
    if workflow == "on_call.read":
        return m.PatientAction(workflow, actor, patient)
    if workflow == "on_call.remove":
        return m.RemoveShift(workflow, actor, patient, slot)
    home = spec.patients[patient]
    helpers = [u for p, u in spec.care_team if p == patient] + [spec.registrar(patient)]
    member = draw(
        st.sampled_from(helpers)
        | st.sampled_from([person(home, s) for s in (0, 1, 2)])
        | st.integers(0, users - 1)
    )
    return m.AddShift(workflow, actor, patient, member, slot)


@st.composite
def action(draw: st.DrawFn, spec: WorldSpec) -> m.Action:
    """An action, now and then with a stated purpose of use (X-Purpose-Of-Use)."""
    drawn = draw(_action(spec))
    if draw(st.integers(0, 5)) == 5:  # shrinks towards no stated purpose
        return replace(drawn, purpose_of_use=draw(st.sampled_from(m.PURPOSES)))
    return drawn


@st.composite
def _action(draw: st.DrawFn, spec: WorldSpec) -> m.Action:
    users = spec.orgs * len(ROSTER)
    patient = draw(st.integers(0, len(spec.patients) - 1))
    kind = draw(
        st.sampled_from(
            [
                "patient.read",
                "patient.update",
                "patient.unmark_part2",
                "care_team.read",
                "care_team.add_member",
                "conversation.create",
                "conversation.create",
                "conversation.read",
                "conversation.read#mark",
                "message.send",
                "message.send",
                "message.send_urgent",
                "consent.create",
                "consent.revoke",
                "break_glass.open",
                "break_glass.review",
                "patient.list",
                "conversation.list",
                "organization_contact.add",
                "organization.list",
                "compliance_group.list",
                "consent.list",
                "user.account",
                "user.account",
                "auth.self",
                "compliance_group.share",
                "organization_contact.remove",
                "organization_contact.list",
                "patient.create",
                "care_team.create",
                "patient.disclosures",
                "organization.create",
                "compliance_group.create",
                "administration.read",
                "on_call",
                "on_call",
                "away",
                "message.recall",
                "message.recall",
                "message.correct",
                "message.read_recalled",
                "message.read_recalled",
                "message.attach",
                "message.download",
                "legal_hold",
                "legal_hold",
            ]
        )
    )
    clinician = draw(_actor(spec, patient, draw(st.sampled_from([0, 1, 2]))))
    if kind in {"organization_contact.add", "organization_contact.remove", "organization_contact.list"}:
        org = draw(st.integers(0, spec.orgs - 1))
        actor = person(org, 3) if draw(st.integers(0, 3)) else draw(st.integers(0, users - 1))
        if kind == "organization_contact.list":
            return m.ListContacts(kind, actor, org)
        contact = m.AddContact if kind == "organization_contact.add" else m.RemoveContact
        return contact(kind, actor, org, draw(st.integers(0, PHONES - 1)))
    if kind == "administration.read":
        reads = ["user.list", "audit.read", "break_glass.list", "policy.read", "policy.reload", "user.create"]
        workflow = draw(st.sampled_from(reads))
        if workflow == "user.create":
            org = draw(st.integers(0, spec.orgs - 1))
            actor = person(org, 3) if draw(st.integers(0, 3)) else draw(st.integers(0, users - 1))
            return m.CreateUser(workflow, actor, org, draw(st.sampled_from(m.ROLES)))
        return m.Action(workflow, draw(st.integers(0, users - 1)))
    if kind == "on_call":
        return draw(on_call_action(spec, patient, clinician))
    if kind == "away":
        actor = draw(st.integers(0, users - 1))
        if draw(st.integers(0, 2)) == 0:
            return m.Action("away.end", actor)
        org = actor // len(ROSTER)
        colleague = st.sampled_from([person(org, slot) for slot in (0, 1, 2, 3)])
        return m.SetAway("away.set", actor, draw(colleague | colleague | st.integers(0, users - 1)))
    if kind in {
        "message.recall",
        "message.correct",
        "message.read_recalled",
        "message.download",
        "legal_hold",
    }:
        return draw(after_sending(spec, kind, patient, clinician))
    if kind == "break_glass.review":
        # Mostly an officer of either organization the session concerns (each reviews on its own).
        actor = draw(
            st.sampled_from(
                [OFFICER_OF_IT, OFFICER_OF_CLINICIAN, OFFICER_OF_IT, draw(st.integers(0, users - 1))]
            )
        )
        return m.ReviewSession(kind, actor, draw(_reference()))
    if kind == "patient.create":
        return m.Action(kind, clinician)
    if kind == "care_team.create":
        return m.PatientAction(kind, draw(_actor(spec, patient, 3)), patient)
    if kind == "patient.disclosures":
        return m.PatientAction(kind, draw(_actor(spec, patient, 4)), patient)
    if kind == "organization.create":
        return m.Action(
            kind, person(draw(st.integers(0, spec.orgs - 1)), draw(st.sampled_from([3, 3, 0, 4])))
        )
    if kind == "compliance_group.create":
        actor = person(draw(st.integers(0, spec.orgs - 1)), draw(st.sampled_from([4, 4, 3])))
        members = draw(st.frozensets(st.integers(0, spec.orgs - 1), min_size=1, max_size=spec.orgs))
        return m.CreateGroup(kind, actor, members)
    if kind == "user.account":
        return draw(account_action(spec))
    if kind == "auth.self":
        return m.Action(
            draw(st.sampled_from(["auth.profile", "auth.logout"])), draw(st.integers(0, users - 1))
        )
    if kind == "compliance_group.share" and spec.groups:
        group = draw(st.integers(0, len(spec.groups) - 1))
        owner = spec.groups[group][0]
        actor = person(owner, 4) if draw(st.integers(0, 3)) else draw(st.integers(0, users - 1))
        return m.ShareGroup(kind, actor, group, draw(st.integers(0, spec.orgs - 1)))
    if kind == "compliance_group.share":
        kind = "compliance_group.list"
    if kind in {"patient.list", "conversation.list"}:
        return m.Action(kind, clinician)
    if kind in {"organization.list", "compliance_group.list"}:
        return m.Action(kind, draw(st.integers(0, users - 1)))
    if kind == "care_team.read" and draw(st.integers(0, 3)) == 0:
        return m.PatientAction(kind, draw(_actor(spec, patient, 3)), patient)
    if kind == "consent.list" and draw(st.booleans()):
        return m.PatientAction(kind, draw(_actor(spec, patient, 4)), patient)
    if kind in {"patient.read", "care_team.read", "break_glass.open", "consent.list"}:
        return m.PatientAction(kind, clinician, patient)
    if kind == "patient.unmark_part2":  # {"part2": false} alone: mostly the officer of its organization
        return m.PatientAction(kind, draw(_actor(spec, patient, 4)), patient)
    if kind == "patient.update":
        level = draw(st.sampled_from(["low", "medium", "high", "critical"]))
        return m.UpdatePatient(
            kind, clinician, patient, level, draw(st.sampled_from([None, None, True, False]))
        )
    if kind == "care_team.add_member":
        actor = draw(_actor(spec, patient, draw(st.sampled_from([1, 3]))))
        return m.AddCareTeamMember(kind, actor, patient, draw(st.integers(0, users - 1)))
    if kind == "conversation.create":
        return draw(create_conversation(spec, patient, clinician))
    if kind in {
        "conversation.read",
        "message.send",
        "message.send_urgent",
        "conversation.read#mark",
        "message.attach",
    }:
        actor = draw(
            st.sampled_from([MEMBER_OF_IT, MEMBER_OF_IT, clinician, draw(st.integers(0, users - 1))])
        )
        if kind == "conversation.read#mark":  # marking read up to a message is conversation.read too
            return m.MarkRead("conversation.read", actor, draw(_reference()), draw(_reference()))
        return m.ConversationAction(kind, actor, draw(_reference()))
    if kind == "consent.create":
        return draw(record_consent(spec))
    actor = draw(st.sampled_from([OFFICER_OF_IT, draw(_actor(spec, patient, 4))]))
    return m.RevokeConsent(kind, actor, draw(_reference()))


@st.composite
def after_sending(draw: st.DrawFn, spec: WorldSpec, kind: str, patient: int, clinician: int) -> m.Action:
    """What happens to a message once sent (recalled by its sender, soon or late, or by a compliance
    officer; its legal record read; corrected), and legal holds on a patient or a conversation."""
    users = spec.orgs * len(ROSTER)
    anyone = st.integers(0, users - 1)
    if kind == "legal_hold":
        actor = draw(st.sampled_from([OFFICER_OF_IT, OFFICER_OF_IT, draw(_actor(spec, patient, 4))]))
        workflow = draw(
            st.sampled_from(["legal_hold.place", "legal_hold.lift", "legal_hold.lift", "legal_hold.list"])
        )
        if workflow == "legal_hold.list":
            return m.Action(
                workflow, person(draw(st.integers(0, spec.orgs - 1)), draw(st.sampled_from([4, 4, 3])))
            )
        if workflow == "legal_hold.lift":
            return m.LiftHold(workflow, actor, draw(_reference()))
        if draw(st.booleans()):
            return m.PlaceHold(workflow, actor, None, draw(_reference()))
        return m.PlaceHold(workflow, actor, patient if draw(st.integers(0, 7)) else None)
    if kind == "message.read_recalled":
        actor = draw(st.sampled_from([OFFICER_OF_IT, OFFICER_OF_IT, draw(anyone)]))
        return m.MessageAction(kind, actor, draw(_reference()))
    if kind == "message.download":
        actor = draw(st.sampled_from([SENDER_OF_IT, SENDER_OF_IT, clinician, draw(anyone)]))
        return m.DownloadAttachment("conversation.read", actor, draw(_reference()))
    actor = draw(st.sampled_from([SENDER_OF_IT, SENDER_OF_IT, OFFICER_OF_IT, clinician, draw(anyone)]))
    if kind == "message.correct":
        return m.MessageAction(kind, actor, draw(_reference()))
    return m.RecallMessage(
        kind, actor, draw(_reference()), draw(st.sampled_from([m.FRESH, m.FRESH, m.INSIDE, m.PAST]))
    )


@st.composite
def sms_reply(draw: st.DrawFn, texted: int | None = None) -> m.SmsReply:
    """A text to caremsg's number: mostly from the texted number, mostly with a code, now and then
    without one, with one the number does not have, or STOP / START."""
    phone = texted if texted is not None and draw(st.integers(0, 3)) else draw(st.integers(0, PHONES - 1))
    shape = draw(
        st.sampled_from(["code", "code", "code", "none", "none", "none", "unknown", "unknown", "keyword"])
    )
    if shape == "keyword":
        shape = draw(st.sampled_from(["STOP", "START"]))
    if shape in {"STOP", "START"}:
        return m.SmsReply("sms.reply", m.NOBODY, phone, word=shape)
    if shape == "unknown":
        return m.SmsReply("sms.reply", m.NOBODY, phone, unknown_code=True)
    code = draw(st.integers(0, 5)) if shape == "code" else None
    return m.SmsReply("sms.reply", m.NOBODY, phone, code=code)


@st.composite
def texted_number(draw: st.DrawFn, spec: WorldSpec, phone: int) -> list[m.Action]:
    """One number made an external participant of one to three conversations (about one patient or
    several, of one organization or more), each under a consent naming it, recorded by the patient's
    organization."""
    count = draw(st.sampled_from([2, 2, 1, 3]))
    patients = [draw(st.integers(0, len(spec.patients) - 1)) for _ in range(count)]
    setup: list[m.Action] = []
    for patient in patients:
        officer = person(spec.patients[patient], 4)
        scope = frozenset({"sms", "message"})
        setup.append(
            m.RecordConsent(
                "consent.create", officer, patient, "external", phone, "treatment", scope, "active"
            )
        )
        registrar = spec.registrar(patient)
        setup.append(
            m.CreateConversation("conversation.create", registrar, patient, (), (m.NewExternal(phone, None),))
        )
    return setup


def _reference() -> st.SearchStrategy[int | None]:
    """A drawn reference to a consent or conversation; 7: one that does not exist."""
    return st.integers(0, 7).map(lambda ref: None if ref == 7 else ref)


@dataclass(frozen=True)
class Scenario:
    world: WorldSpec
    actions: tuple[m.Action, ...]


@st.composite
def scenarios(draw: st.DrawFn, max_actions: int = 20) -> Scenario:
    spec = draw(world_specs())
    setup = draw(st.lists(record_consent(spec), max_size=4))
    patients = st.integers(0, len(spec.patients) - 1)
    for patient in draw(st.lists(patients, max_size=2)):
        # Mostly a conversation that can be created (colleagues only), so later sends have one.
        registrar = spec.registrar(patient)
        if draw(st.booleans()):
            colleagues = [person(spec.patients[patient], slot) for slot in (0, 2)]
            members = tuple(draw(st.lists(st.sampled_from(colleagues), max_size=2, unique=True)))
            setup.append(m.CreateConversation("conversation.create", registrar, patient, members, ()))
        else:
            setup.append(draw(create_conversation(spec, patient, registrar)))
        if draw(st.booleans()):
            # ... and a message in it, so that recalls, corrections and read marks have one to name.
            sent = sum(isinstance(a, m.CreateConversation) for a in setup) - 1
            setup.append(m.ConversationAction("message.send", MEMBER_OF_IT, sent))
            if draw(st.integers(0, 3)) == 0:  # now and then taken back at once: a legal record to read
                setup.append(m.RecallMessage("message.recall", SENDER_OF_IT, -1))
    if draw(st.integers(0, 2)) == 0:  # a legal hold on a patient, for lifts to name
        setup.append(m.PlaceHold("legal_hold.place", OFFICER_OF_IT, draw(patients)))
    texted: int | None = None
    if draw(st.integers(0, 2)) == 0:
        # Now and then a number in several conversations, and texts from it among the actions.
        texted = draw(st.integers(0, PHONES - 1))
        setup.extend(draw(texted_number(spec, texted)))
        step = st.integers(0, 3).flatmap(lambda k: sms_reply(texted) if k == 0 else action(spec))
    else:
        step = st.integers(0, 11).flatmap(lambda k: sms_reply() if k == 0 else action(spec))
    actions: list[m.Action] = []
    for drawn in draw(st.lists(step, min_size=3, max_size=max_actions)):
        if isinstance(drawn, m.DownloadAttachment) and draw(st.booleans()):
            # A download mostly follows a file attached just before.
            actions.append(m.ConversationAction("message.attach", MEMBER_OF_IT, draw(_reference())))
        elif isinstance(drawn, m.MessageAction) and draw(st.booleans()):
            # Mostly a message sent just before (by a member of a conversation), for it to name.
            actions.append(m.ConversationAction("message.send", MEMBER_OF_IT, draw(_reference())))
        if drawn.workflow == "message.read_recalled" and draw(st.booleans()):
            # ... and for the legal record, mostly a message recalled (by its officer) before.
            actions.append(m.RecallMessage("message.recall", OFFICER_OF_IT, draw(_reference())))
        actions.append(drawn)
    return Scenario(spec, (*setup, *actions))


def resolve(world: m.World, action: m.Action) -> m.Action:
    """Turn a drawn reference to a consent or conversation into one that exists now (or none), and a
    drawn "member of it" or "officer of it" into that person.

    An even reference prefers the records the actor is likely to act on (a conversation they are in,
    a consent of their organization's patient), so allowed actions are common; an odd one takes any.
    """
    if isinstance(action, m.MarkRead):
        return _message_of(world, _conversation_of(world, action))
    if isinstance(action, m.ConversationAction):
        return _conversation_of(world, action)
    if isinstance(action, m.SmsReply):
        parts = m.participations(world, action.phone)
        if action.code is None or not parts:
            return replace(action, code=None)
        return replace(action, names=parts[action.code % len(parts)])
    if isinstance(action, m.MessageAction):
        return _resolve_message(world, action)
    if isinstance(action, m.PlaceHold) and action.conversation is not None:
        return _resolve_hold_subject(world, action)
    if isinstance(action, m.PlaceHold):
        if action.actor == OFFICER_OF_IT:
            org = 0 if action.patient is None else world.patients[action.patient]
            return replace(action, actor=person(org, 4))
        return action
    if isinstance(action, m.ReviewSession):
        n = len(world.sessions)
        session = None if action.session is None or not n else action.session % n
        if action.actor not in (OFFICER_OF_IT, OFFICER_OF_CLINICIAN):
            return replace(action, session=session)
        if session is None:
            return replace(action, actor=person(0, 4), session=None)
        clinician, patient = world.sessions[session]
        org = world.patients[patient] if action.actor == OFFICER_OF_IT else world.users[clinician].org
        return replace(action, actor=person(org, 4), session=session)
    if isinstance(action, m.LiftHold):
        n = len(world.holds)
        if action.hold is None or not n:
            return replace(
                action, actor=person(0, 4) if action.actor == OFFICER_OF_IT else action.actor, hold=None
            )
        chosen = action.hold % n
        if action.actor == OFFICER_OF_IT:
            return replace(action, actor=person(world.patients[world.holds[chosen].patient], 4), hold=chosen)
        return replace(action, hold=chosen)
    if isinstance(action, m.RevokeConsent):
        n = len(world.consents)
        if action.actor == OFFICER_OF_IT:
            if action.consent is None or not n:
                return replace(action, actor=person(0, 4), consent=None)
            chosen = action.consent % n
            org = world.patients[world.consents[chosen].patient]
            return replace(action, actor=person(org, 4), consent=chosen)
        if action.consent is None:
            return action
        org = world.users[action.actor].org
        ours = [i for i, c in enumerate(world.consents) if world.patients[c.patient] == org and not c.revoked]
        if ours and action.consent % 2 == 0:
            return replace(action, consent=ours[action.consent // 2 % len(ours)])
        return replace(action, consent=action.consent % n if n else None)
    return action


C = TypeVar("C", bound=m.ConversationAction)
M = TypeVar("M", bound=m.MessageAction)


def _conversation_of(world: m.World, action: C) -> C:
    """A drawn conversation reference resolved (see :func:`resolve`)."""
    n = len(world.conversations)
    if action.actor == MEMBER_OF_IT:
        if action.conversation is None or not n:
            return replace(action, actor=0, conversation=None)
        chosen = action.conversation % n
        members = sorted(world.conversations[chosen].members)
        return replace(action, actor=members[action.conversation % len(members)], conversation=chosen)
    if action.conversation is None:
        return action
    mine = [i for i, c in enumerate(world.conversations) if action.actor in c.members]
    if mine and action.conversation % 2 == 0:
        return replace(action, conversation=mine[action.conversation // 2 % len(mine)])
    return replace(action, conversation=action.conversation % n if n else None)


def _message_of(world: m.World, action: m.MarkRead) -> m.MarkRead:
    """A drawn message reference resolved: an even one prefers a message of the action's own
    conversation, an odd one takes any message; none when nothing was sent (or it was drawn so)."""
    if action.message is None or not world.messages:
        return replace(action, message=None)
    own = [i for i, c in enumerate(world.messages) if c == action.conversation]
    if own and action.message % 2 == 0:
        return replace(action, message=own[-1 - action.message // 2 % len(own)])
    return replace(action, message=action.message % len(world.messages))


def _resolve_message(world: m.World, action: M) -> M:
    """A drawn message reference resolved: its sender or its patient's organization's compliance
    officer when drawn so; an even reference prefers a message with a legal record (to read it), one
    that carries a file (to download it), or else one the actor sent; an odd one takes any; none
    when nothing was sent (or it was drawn so)."""
    n = len(world.messages)
    if action.message is None or not n:
        actor = person(0, 4) if action.actor == OFFICER_OF_IT else max(action.actor, 0)
        return replace(action, actor=actor, message=None)
    chosen = action.message % n
    even = action.message % 2 == 0
    preferred = (
        sorted(world.recalled)
        if action.workflow == "message.read_recalled"
        else sorted(world.attached)
        if isinstance(action, m.DownloadAttachment)
        else []
    )
    if preferred and even:
        chosen = preferred[action.message // 2 % len(preferred)]
    if action.actor == SENDER_OF_IT:
        return replace(action, actor=world.senders[chosen], message=chosen)
    if action.actor == OFFICER_OF_IT:
        patient = world.conversations[world.messages[chosen]].patient
        return replace(action, actor=person(world.patients[patient], 4), message=chosen)
    mine = [i for i, sender in enumerate(world.senders) if sender == action.actor]
    if mine and even and not preferred:
        return replace(action, message=mine[action.message // 2 % len(mine)])
    return replace(action, message=chosen)


def _resolve_hold_subject(world: m.World, action: m.PlaceHold) -> m.PlaceHold:
    """A hold on a conversation: one that exists (the drawn reference taken as it is), placed by
    its patient's organization's compliance officer when drawn so; none if there is none."""
    n = len(world.conversations)
    if not n or action.conversation is None:
        actor = person(0, 4) if action.actor == OFFICER_OF_IT else action.actor
        return replace(action, actor=actor, patient=None, conversation=None)
    chosen = action.conversation % n
    if action.actor == OFFICER_OF_IT:
        org = world.patients[world.conversations[chosen].patient]
        return replace(action, actor=person(org, 4), conversation=chosen)
    return replace(action, conversation=chosen)
