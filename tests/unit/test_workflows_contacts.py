"""Contact-directory workflows on fakes: admins keep their own organization's directory, compliance
officers read it, and a number counts for a consent naming the organization only while it is listed
(tests/api/test_external_participants.py covers the same over HTTP and PostgreSQL)."""

from __future__ import annotations

import dataclasses
from datetime import date

import pytest

from engine.errors import Conflict, Forbidden, NotFound
from engine.model import Actor, Consent, Patient, Purpose, RecipientType, RiskLevel, Role
from engine.workflows.consents import RecordConsent, record_consent
from engine.workflows.contacts import AddContact, add_contact, list_contacts, remove_contact
from engine.workflows.conversations import ExternalMember, StartConversation, start_conversation
from engine.workflows.patients import RegisterPatient, register_patient
from tests.support.fakes import FakeWorld

PHONE = "+15550102030"


def _admin(world: FakeWorld) -> Actor:
    return world.actor(Role.ADMIN, world.organization().id)


async def test_an_admin_lists_a_number_in_their_organizations_directory(world: FakeWorld) -> None:
    admin = _admin(world)

    contact = await add_contact(world.services, admin, AddContact(admin.organization_id, PHONE, "Sam"))

    assert world.db.contacts == {contact.id: contact}
    assert (contact.organization_id, contact.phone_number, contact.name, contact.added_by) == (
        admin.organization_id,
        PHONE,
        "Sam",
        admin.user_id,
    )
    [event] = world.events("organization_contact.add")
    assert (event.outcome, event.resource_id, event.details["organization_id"]) == (
        "success",
        str(contact.id),
        admin.organization_id,
    )
    assert PHONE not in repr(event)  # the number is the contact's, never the audit record's


async def test_a_number_is_listed_once_per_organization(world: FakeWorld) -> None:
    admin = _admin(world)
    first = await add_contact(world.services, admin, AddContact(admin.organization_id, PHONE, "Sam"))

    with pytest.raises(Conflict):
        await add_contact(world.services, admin, AddContact(admin.organization_id, PHONE, "Samuel"))

    assert world.db.contacts == {first.id: first}
    assert [e.outcome for e in world.events("organization_contact.add")] == ["success", "failure"]


async def test_an_admin_may_not_list_numbers_for_another_organization(world: FakeWorld) -> None:
    admin, other = _admin(world), world.organization()

    with pytest.raises(Forbidden) as raised:
        await add_contact(world.services, admin, AddContact(other.id, PHONE, "Sam"))

    assert "own_org" in raised.value.decision.missing
    assert raised.value.field == "organizationId"
    assert world.db.contacts == {}
    [event] = world.events("organization_contact.add")
    assert (event.outcome, event.details["organization_id"]) == ("denied", other.id)


@pytest.mark.parametrize(
    "role", [Role.PEER_SUPPORT, Role.CARE_TEAM_MEMBER, Role.COMPLIANCE_OFFICER, Role.AUDITOR]
)
async def test_only_admins_add_and_remove_contacts(world: FakeWorld, role: Role) -> None:
    admin = _admin(world)
    contact = await add_contact(world.services, admin, AddContact(admin.organization_id, PHONE, "Sam"))
    actor = world.actor(role, admin.organization_id)

    with pytest.raises(Forbidden) as adding:
        await add_contact(world.services, actor, AddContact(admin.organization_id, "+15550109999", "Kim"))
    with pytest.raises(Forbidden) as removing:
        await remove_contact(world.services, actor, admin.organization_id, contact.id)

    assert (adding.value.decision.reason, removing.value.decision.reason) == ("role_not_permitted",) * 2
    assert world.db.contacts == {contact.id: contact}
    assert [e.outcome for e in world.events("organization_contact.remove")] == ["denied"]


@pytest.mark.parametrize("role", [Role.ADMIN, Role.COMPLIANCE_OFFICER])
async def test_admins_and_compliance_officers_read_their_own_directory_only(
    world: FakeWorld, role: Role
) -> None:
    admin = _admin(world)
    sam = await add_contact(world.services, admin, AddContact(admin.organization_id, PHONE, "Sam"))
    kim = await add_contact(world.services, admin, AddContact(admin.organization_id, "+15550109999", "Kim"))
    other = _admin(world)
    await add_contact(world.services, other, AddContact(other.organization_id, PHONE, "Sam"))
    reader = world.actor(role, admin.organization_id)

    listed = await list_contacts(world.services, reader, admin.organization_id)
    with pytest.raises(Forbidden):
        await list_contacts(world.services, reader, other.organization_id)

    assert listed == [sam, kim]
    assert [e.outcome for e in world.events("organization_contact.list")] == ["success", "denied"]


@pytest.mark.parametrize("role", [Role.PEER_SUPPORT, Role.CARE_TEAM_MEMBER, Role.AUDITOR])
async def test_other_roles_may_not_read_the_directory(world: FakeWorld, role: Role) -> None:
    admin = _admin(world)

    with pytest.raises(Forbidden) as raised:
        await list_contacts(world.services, world.actor(role, admin.organization_id), admin.organization_id)

    assert raised.value.decision.reason == "role_not_permitted"


async def test_an_admin_removes_a_contact_and_a_missing_or_foreign_one_is_not_found(world: FakeWorld) -> None:
    admin, other = _admin(world), _admin(world)
    mine = await add_contact(world.services, admin, AddContact(admin.organization_id, PHONE, "Sam"))
    theirs = await add_contact(world.services, other, AddContact(other.organization_id, PHONE, "Sam"))

    await remove_contact(world.services, admin, admin.organization_id, mine.id)
    for contact_id in (mine.id, theirs.id):  # removed already; another organization's
        with pytest.raises(NotFound):
            await remove_contact(world.services, admin, admin.organization_id, contact_id)

    assert world.db.contacts == {theirs.id: theirs}
    assert [(e.event, e.outcome, e.resource_id) for e in world.events("organization_contact.remove")] == [
        ("decision", "success", str(mine.id)),
        ("decision", "failure", str(mine.id)),  # allowed, then nothing to remove: the work failed
        ("lookup", "failure", str(mine.id)),
        ("decision", "failure", str(theirs.id)),
        ("lookup", "failure", str(theirs.id)),
    ]


async def _patient_disclosed_to(world: FakeWorld, partner_id: int) -> tuple[Actor, Patient, Consent]:
    """A nurse's patient, with a consent (recorded by their compliance officer) naming ``partner_id``."""
    org = world.organization().id
    nurse = world.actor(Role.CARE_TEAM_MEMBER, org)
    patient = await register_patient(
        world.services, nurse, RegisterPatient("Ann", "Lee", RiskLevel.LOW, date(1990, 1, 1))
    )
    consent = await record_consent(
        world.services,
        world.actor(Role.COMPLIANCE_OFFICER, org),
        RecordConsent(patient.id, RecipientType.ORGANIZATION, Purpose.TREATMENT, organization_id=partner_id),
    )
    return nurse, patient, consent


def _on_care_team(world: FakeWorld, patient: Patient, actor: Actor) -> None:
    """Put ``actor`` on the patient's care team (as its admin would: covered by the consent)."""
    world.db.care_teams = {
        i: dataclasses.replace(
            t, members=(*t.members, dataclasses.replace(t.members[0], user_id=actor.user_id))
        )
        if t.patient_id == patient.id
        else t
        for i, t in world.db.care_teams.items()
    }


async def test_a_consent_naming_an_organization_admits_its_number_only_while_it_is_listed(
    world: FakeWorld,
) -> None:
    partner_admin = _admin(world)
    partner = partner_admin.organization_id
    nurse, patient, consent = await _patient_disclosed_to(world, partner)
    # The partner's own staff bring the partner's contact in: its directory vouches to them.
    partner_nurse = world.actor(Role.CARE_TEAM_MEMBER, partner)
    _on_care_team(world, patient, partner_nurse)
    member = ExternalMember(PHONE, "Sam", organization_id=partner)

    def start() -> StartConversation:
        return StartConversation(patient.id, "Ward", [nurse.user_id], [member])

    with pytest.raises(Forbidden) as unlisted:
        await start_conversation(world.services, partner_nurse, start())
    contact = await add_contact(world.services, partner_admin, AddContact(partner, PHONE, "Sam"))
    admitted = await start_conversation(world.services, partner_nurse, start())
    await remove_contact(world.services, partner_admin, partner, contact.id)
    with pytest.raises(Forbidden) as delisted:
        await start_conversation(world.services, partner_nurse, start())

    assert [c.id for c in world.db.conversations.values()] == [admitted.id]
    assert [e.phone_number for e in admitted.external_participants] == [PHONE]
    assert (unlisted.value.decision.reason, delisted.value.decision.reason) == ("no_external_consent",) * 2
    joins = [e for e in world.events("conversation.join") if e.details["subject_role"] == "external"]
    assert [(e.outcome, e.details["consent_id"]) for e in joins] == [
        ("denied", None),
        ("success", consent.id),
        ("denied", None),
    ]


async def test_another_organizations_directory_is_not_read_so_every_number_is_refused_alike(
    world: FakeWorld,
) -> None:
    partner_admin = _admin(world)
    partner = partner_admin.organization_id
    nurse, patient, _ = await _patient_disclosed_to(world, partner)
    await add_contact(world.services, partner_admin, AddContact(partner, PHONE, "Sam"))
    refusals = []
    for phone in (PHONE, "+15550102031"):  # in the partner's directory, and not
        with pytest.raises(Forbidden) as refused:
            await start_conversation(
                world.services,
                nurse,
                StartConversation(
                    patient.id, "Probe", [], [ExternalMember(phone, "x", organization_id=partner)]
                ),
            )
        refusals.append((refused.value.decision.reason, refused.value.field))

    assert refusals == [("no_external_consent", "externalMembers[0]")] * 2
    assert world.db.conversations == {}
    joins = world.events("conversation.join")
    assert [(e.outcome, e.details["directory"], e.details["consent_id"]) for e in joins] == [
        ("denied", "another_organization", None)
    ] * 2
