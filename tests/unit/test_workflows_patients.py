"""Patient and care-team workflows on fakes: the shipped policy decides over facts the real fact
builder computes from in-memory relations and consents (tests/api/test_patients.py and
test_care_teams.py cover the same over HTTP and PostgreSQL)."""

from __future__ import annotations

from datetime import date

import pytest

from engine.errors import Forbidden, InvalidInput, NotFound
from engine.model import Actor, Patient, RiskLevel, Role
from engine.workflows.patients import (
    RegisterPatient,
    UpdatePatient,
    add_care_team_member,
    create_care_team,
    get_care_team,
    get_patient,
    list_patients,
    register_patient,
    update_patient,
)
from tests.support.fakes import FakeWorld

JOHN = RegisterPatient("John", "Smith", RiskLevel.HIGH, date(1980, 2, 3))


async def _registered(world: FakeWorld, role: Role = Role.PEER_SUPPORT) -> tuple[Actor, Patient]:
    actor = world.actor(role, world.organization().id)
    return actor, await register_patient(world.services, actor, JOHN)


@pytest.mark.parametrize("role", [Role.PEER_SUPPORT, Role.CARE_TEAM_MEMBER])
async def test_care_staff_register_a_patient_and_become_its_first_care_team_member(
    world: FakeWorld, role: Role
) -> None:
    actor, patient = await _registered(world, role)

    assert (patient.organization_id, patient.created_by) == (actor.organization_id, actor.user_id)
    [team] = world.db.care_teams.values()
    assert (team.patient_id, [m.user_id for m in team.members]) == (patient.id, [actor.user_id])
    [event] = world.events("patient.create")
    assert (event.outcome, event.resource_id, event.patient_id) == ("success", str(patient.id), patient.id)


@pytest.mark.parametrize("role", [Role.ADMIN, Role.COMPLIANCE_OFFICER, Role.AUDITOR])
async def test_roles_without_patient_access_cannot_register_patients(world: FakeWorld, role: Role) -> None:
    actor = world.actor(role, world.organization().id)

    with pytest.raises(Forbidden):
        await register_patient(world.services, actor, JOHN)

    assert world.db.patients == {}
    assert world.db.care_teams == {}
    assert [e.outcome for e in world.events("patient.create")] == ["denied"]


async def test_a_care_team_member_reads_the_patient_and_the_decision_names_the_facts(
    world: FakeWorld,
) -> None:
    actor, patient = await _registered(world)

    assert await get_patient(world.services, actor, patient.id) == patient

    [event] = world.events("patient.read")
    assert (event.outcome, event.decision, event.patient_id) == ("success", "allow", patient.id)
    assert set(str(event.details["facts"]).split("&")) >= {"care_team", "covered"}


async def test_a_colleague_not_on_the_care_team_is_refused_for_want_of_the_care_team(
    world: FakeWorld,
) -> None:
    actor, patient = await _registered(world)
    colleague = world.actor(Role.CARE_TEAM_MEMBER, actor.organization_id)

    with pytest.raises(Forbidden) as raised:
        await get_patient(world.services, colleague, patient.id)

    assert "care_team" in raised.value.decision.missing
    [event] = world.events("patient.read")
    assert (event.outcome, event.actor_id) == ("denied", colleague.user_id)


async def test_a_patient_that_does_not_exist_is_a_404_and_the_lookup_is_on_record(world: FakeWorld) -> None:
    actor = world.actor(Role.PEER_SUPPORT, world.organization().id)

    with pytest.raises(NotFound):
        await get_patient(world.services, actor, 424242)

    [event] = world.events("patient.read")
    assert (event.event, event.outcome, event.reason) == ("lookup", "failure", "not_found")


async def test_a_role_that_may_never_read_patients_is_refused_alike_whether_or_not_the_patient_exists(
    world: FakeWorld,
) -> None:
    _, patient = await _registered(world)
    auditor = world.actor(Role.AUDITOR, patient.organization_id)

    refusals = []
    for patient_id in (patient.id, 424242):
        with pytest.raises(Forbidden) as raised:
            await get_patient(world.services, auditor, patient_id)
        refusals.append((raised.value.decision.reason, str(raised.value)))

    assert refusals[0] == refusals[1]  # the same answer: nothing said about existence
    assert refusals[0][0] == "role_not_permitted"
    # The facts gathered after the refusal are on record (for `policy diff`), never in the answer:
    # the patient's, and for the missing id a failed lookup and a decision whose facts are unknown.
    decisions = [e for e in world.events("patient.read") if e.event == "decision"]
    assert [(e.outcome, e.reason) for e in decisions] == [("denied", "role_not_permitted")] * 2
    assert "own_org" in str(decisions[0].details["facts"]).split("&")
    assert decisions[1].details["facts"] is None
    [lookup] = [e for e in world.events("patient.read") if e.event == "lookup"]
    assert (lookup.reason, lookup.resource_id) == ("not_found", "424242")


async def test_an_outsider_added_to_the_care_team_reads_under_consent_until_it_is_revoked(
    world: FakeWorld,
) -> None:
    nurse, patient = await _registered(world, Role.CARE_TEAM_MEMBER)
    team = await get_care_team(world.services, nurse, patient.id)
    partner = world.organization()
    outsider = world.actor(Role.CARE_TEAM_MEMBER, partner.id)
    consent = world.consent(patient.id, partner.id)

    await add_care_team_member(world.services, nurse, team.id, outsider.user_id)
    assert (await get_patient(world.services, outsider, patient.id)).id == patient.id

    world.revoke(consent, patient.id)
    with pytest.raises(Forbidden) as raised:
        await get_patient(world.services, outsider, patient.id)
    assert "covered" in raised.value.decision.missing
    assert [e.outcome for e in world.events("patient.read")] == ["success", "denied"]


async def test_an_outsider_without_consent_is_answered_as_no_such_user_and_not_added(
    world: FakeWorld,
) -> None:
    nurse, patient = await _registered(world, Role.CARE_TEAM_MEMBER)
    team = await get_care_team(world.services, nurse, patient.id)
    outsider = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)

    with pytest.raises(InvalidInput) as raised:
        await add_care_team_member(world.services, nurse, team.id, outsider.user_id)

    # Exactly what a user id that does not exist answers: neither the person nor their role shows.
    with pytest.raises(InvalidInput) as missing:
        await add_care_team_member(world.services, nurse, team.id, 424242)
    assert [(e.field, e.message, e.type) for e in raised.value.errors] == [
        (e.field, e.message, e.type) for e in missing.value.errors
    ]
    assert [e.field for e in raised.value.errors] == ["userId"]
    assert raised.value.denial is not None
    assert [m.user_id for m in world.db.care_teams[team.id].members] == [nurse.user_id]
    [join] = world.events("care_team.join")  # the record keeps the real decision about the outsider
    assert (join.outcome, join.actor_id, join.details["subject_user_id"]) == (
        "denied",
        nurse.user_id,
        outsider.user_id,
    )
    assert join.reason == raised.value.denial.reason


async def test_adding_someone_who_does_not_exist_names_the_field(world: FakeWorld) -> None:
    nurse, patient = await _registered(world, Role.CARE_TEAM_MEMBER)
    team = await get_care_team(world.services, nurse, patient.id)

    with pytest.raises(InvalidInput) as raised:
        await add_care_team_member(world.services, nurse, team.id, 424242)

    assert [e.field for e in raised.value.errors] == ["userId"]


async def test_peer_support_may_not_manage_the_care_team(world: FakeWorld) -> None:
    peer, patient = await _registered(world, Role.PEER_SUPPORT)
    team = await get_care_team(world.services, peer, patient.id)
    colleague = world.actor(Role.CARE_TEAM_MEMBER, peer.organization_id)

    with pytest.raises(Forbidden):
        await add_care_team_member(world.services, peer, team.id, colleague.user_id)

    assert len(world.db.care_teams[team.id].members) == 1


async def test_a_care_team_member_updates_the_patient_and_the_changed_fields_are_on_record(
    world: FakeWorld,
) -> None:
    peer, patient = await _registered(world)
    world.clock.advance(minutes=5)

    updated = await update_patient(
        world.services, peer, UpdatePatient(patient.id, {"risk_level": RiskLevel.LOW, "last_name": "Smyth"})
    )

    assert (updated.risk_level, updated.last_name) == (RiskLevel.LOW, "Smyth")
    assert updated.updated_at > patient.updated_at
    [event] = world.events("patient.update")
    assert event.details["fields"] == "last_name,risk_level"  # names of fields, never their values
    assert "Smyth" not in repr(event)


async def test_a_refused_update_changes_nothing(world: FakeWorld) -> None:
    peer, patient = await _registered(world)
    colleague = world.actor(Role.PEER_SUPPORT, peer.organization_id)

    with pytest.raises(Forbidden):
        await update_patient(world.services, colleague, UpdatePatient(patient.id, {"last_name": "X"}))

    assert world.db.patients[patient.id] == patient


async def test_the_patient_list_holds_only_patients_on_the_callers_care_team(world: FakeWorld) -> None:
    peer, first = await _registered(world)
    second = await register_patient(world.services, peer, JOHN)
    other = world.actor(Role.PEER_SUPPORT, peer.organization_id)
    await register_patient(world.services, other, JOHN)

    page = await list_patients(world.services, peer, None, None)

    assert [p.id for p in page.items] == [first.id, second.id]
    assert len(world.events("patient.read")) == 2  # each item decided, and on record


async def test_a_patient_whose_consent_was_revoked_drops_off_the_outsiders_list(world: FakeWorld) -> None:
    nurse, patient = await _registered(world, Role.CARE_TEAM_MEMBER)
    team = await get_care_team(world.services, nurse, patient.id)
    partner = world.organization()
    outsider = world.actor(Role.CARE_TEAM_MEMBER, partner.id)
    consent = world.consent(patient.id, partner.id)
    await add_care_team_member(world.services, nurse, team.id, outsider.user_id)

    world.revoke(consent, patient.id)
    page = await list_patients(world.services, outsider, None, None)

    assert page.items == ()
    assert [e.outcome for e in world.events("patient.read")] == ["denied"]


async def test_creating_a_care_team_is_idempotent_and_a_new_one_is_made_only_where_there_is_none(
    world: FakeWorld,
) -> None:
    peer, patient = await _registered(world)
    admin = world.actor(Role.ADMIN, peer.organization_id)
    registered_team = next(iter(world.db.care_teams.values()))

    team, created = await create_care_team(world.services, admin, patient.id, "Second team")
    assert (team, created) == (registered_team, False)
    assert world.events("care_team.create")[-1].details["existing"] is True

    del world.db.care_teams[registered_team.id]  # a patient that came without a team (an import)
    team, created = await create_care_team(world.services, admin, patient.id, "Night team")
    assert created is True
    assert (team.name, (await get_care_team(world.services, admin, patient.id)).id) == ("Night team", team.id)
    assert world.events("care_team.create")[-1].resource_id == str(team.id)


async def test_adding_a_member_twice_changes_nothing_the_second_time(world: FakeWorld) -> None:
    nurse, patient = await _registered(world, Role.CARE_TEAM_MEMBER)
    team = await get_care_team(world.services, nurse, patient.id)
    colleague = world.actor(Role.PEER_SUPPORT, nurse.organization_id)

    first, added = await add_care_team_member(world.services, nurse, team.id, colleague.user_id)
    again, added_again = await add_care_team_member(world.services, nurse, team.id, colleague.user_id)

    assert (added, added_again) == (True, False)
    assert (
        [m.user_id for m in again.members]
        == [nurse.user_id, colleague.user_id]
        == [m.user_id for m in first.members]
    )
    assert world.events("care_team.add_member")[-1].details["already_member"] is True


async def test_an_admin_of_another_organization_cannot_create_a_care_team_nor_learn_the_patient_exists(
    world: FakeWorld,
) -> None:
    _, patient = await _registered(world)
    stranger = world.actor(Role.ADMIN, world.organization().id)

    with pytest.raises(NotFound) as raised:
        await create_care_team(world.services, stranger, patient.id, "Team")
    with pytest.raises(NotFound) as missing:
        await create_care_team(world.services, stranger, 424242, "Team")

    assert str(raised.value) == str(missing.value)  # the same answer as for a missing patient
    assert [t.patient_id for t in world.db.care_teams.values()] == [patient.id]  # only the first one
    decision, seen, lookup = world.events("care_team.create")
    assert (seen.event, seen.resource_type, seen.resource_id) == ("lookup", "patient", str(patient.id))
    assert (decision.event, decision.outcome, decision.patient_id) == ("decision", "denied", patient.id)
    assert (decision.reason, decision.details["answered"]) == ("other_organization", "not_found")
    assert (lookup.event, lookup.reason) == ("lookup", "not_found")
