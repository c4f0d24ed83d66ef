"""Break-the-glass workflows on fakes: who may open emergency access to which patient, the alert to
the patient's organization's compliance officers it queues, how it ends by itself, and the review
list (tests/api/test_break_glass.py covers the same over HTTP and PostgreSQL)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from engine.effects import NotifyComplianceOfBreakGlass, kind_of
from engine.errors import Conflict, Forbidden, InvalidInput, NotFound
from engine.model import Actor, Patient, RiskLevel, Role
from engine.services import EngineSettings
from engine.workflows.break_glass import (
    BreakGlass,
    ReviewBreakGlass,
    break_glass,
    list_break_glass,
    read_break_glass,
    review_break_glass,
)
from engine.workflows.patients import RegisterPatient, get_patient, register_patient
from tests.support.fakes import FakeWorld, fake_services

REASON = "Unconscious in the emergency room, no care team reachable."


@pytest.fixture
def world() -> FakeWorld:
    return fake_services(EngineSettings(break_glass_minutes=30))


async def _patient(world: FakeWorld) -> tuple[Actor, Patient]:
    """A nurse's patient (the nurse is on its care team)."""
    nurse = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)
    patient = await register_patient(
        world.services, nurse, RegisterPatient("Ann", "Lee", RiskLevel.HIGH, date(1990, 1, 1))
    )
    return nurse, patient


@pytest.mark.parametrize("role", [Role.PEER_SUPPORT, Role.CARE_TEAM_MEMBER])
async def test_a_clinician_of_the_patients_organization_opens_a_session_and_compliance_is_alerted(
    world: FakeWorld, role: Role
) -> None:
    nurse, patient = await _patient(world)
    colleague = world.actor(role, nurse.organization_id)

    session = await break_glass(world.services, colleague, BreakGlass(patient.id, f"  {REASON}  "))

    assert world.db.break_glass_sessions == {session.id: session}
    assert (session.user_id, session.patient_id, session.reason) == (colleague.user_id, patient.id, REASON)
    assert (session.opened_at, session.expires_at) == (world.clock(), world.clock() + timedelta(minutes=30))
    assert session.patient_organization_id == nurse.organization_id
    assert world.db.outbox == [NotifyComplianceOfBreakGlass(session.id)]
    assert world.delivery.wakes == 1
    decision, opened, notified = world.events("break_glass.open")
    assert (decision.event, decision.outcome, decision.resource_id, decision.patient_id) == (
        "decision",
        "success",
        str(session.id),
        patient.id,
    )
    assert set(str(decision.details["facts"]).split("&")) >= {"own_org", "treatable"}
    assert (opened.event, opened.break_glass, opened.details["expires_at"]) == (
        "break_glass.opened",
        True,
        session.expires_at.isoformat(),
    )
    assert (notified.event, notified.details["effect"]) == (
        "break_glass.compliance_notified",
        kind_of(NotifyComplianceOfBreakGlass),
    )


async def test_while_open_the_clinician_reads_the_record_flagged_and_then_it_ends_by_itself(
    world: FakeWorld,
) -> None:
    nurse, patient = await _patient(world)
    colleague = world.actor(Role.PEER_SUPPORT, nurse.organization_id)
    with pytest.raises(Forbidden):
        await get_patient(world.services, colleague, patient.id)

    session = await break_glass(world.services, colleague, BreakGlass(patient.id, REASON))
    assert await get_patient(world.services, colleague, patient.id) == patient
    world.clock.advance(minutes=30)
    with pytest.raises(Forbidden) as expired:
        await get_patient(world.services, colleague, patient.id)

    assert (expired.value.decision.reason, "break_glass" in expired.value.decision.facts) == (
        "not_on_care_team",
        False,
    )
    before, during, after = world.events("patient.read")
    assert [e.outcome for e in (before, during, after)] == ["denied", "success", "denied"]
    assert (during.break_glass, during.details["break_glass_session_id"]) == (True, session.id)
    assert (before.break_glass, after.break_glass) == (False, False)


async def test_an_outsider_with_a_treatment_consent_may_break_the_glass(world: FakeWorld) -> None:
    _, patient = await _patient(world)
    partner = world.organization().id
    consent_id = world.consent(patient.id, partner, scope=frozenset({"read"}))
    outsider = world.actor(Role.CARE_TEAM_MEMBER, partner)

    session = await break_glass(world.services, outsider, BreakGlass(patient.id, REASON))

    assert (session.organization_id, session.patient_organization_id) == (partner, patient.organization_id)
    [decision] = [e for e in world.events("break_glass.open") if e.event == "decision"]
    assert (decision.outcome, decision.details["consent_id"]) == ("success", consent_id)


async def test_a_consent_for_another_purpose_does_not_make_the_patient_treatable(world: FakeWorld) -> None:
    _, patient = await _patient(world)
    partner = world.organization().id
    world.consent(patient.id, partner, purpose="payment")
    outsider = world.actor(Role.CARE_TEAM_MEMBER, partner)

    with pytest.raises(Forbidden) as raised:
        await break_glass(world.services, outsider, BreakGlass(patient.id, REASON))

    assert "treatable" in raised.value.decision.missing
    assert (world.db.break_glass_sessions, world.db.outbox) == ({}, [])
    [decision] = world.events("break_glass.open")
    assert decision.outcome == "denied"


async def test_an_outsider_without_any_consent_is_answered_as_if_there_were_no_patient(
    world: FakeWorld,
) -> None:
    _, patient = await _patient(world)
    stranger = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)

    with pytest.raises(NotFound) as raised:
        await break_glass(world.services, stranger, BreakGlass(patient.id, REASON))
    with pytest.raises(NotFound) as missing:
        await break_glass(world.services, stranger, BreakGlass(424242, REASON))

    assert str(raised.value) == str(missing.value)
    assert (world.db.break_glass_sessions, world.db.outbox, world.delivery.wakes) == ({}, [], 0)
    decision, seen, lookup = world.events("break_glass.open")
    assert (seen.event, seen.resource_type, seen.resource_id) == ("lookup", "patient", str(patient.id))
    assert (decision.outcome, decision.reason, decision.details["answered"]) == (
        "denied",
        "not_treatable",
        "not_found",
    )
    assert (lookup.event, lookup.reason, lookup.resource_id) == ("lookup", "not_found", "424242")


@pytest.mark.parametrize("role", [Role.ADMIN, Role.COMPLIANCE_OFFICER, Role.AUDITOR])
async def test_roles_that_do_not_treat_patients_may_not_break_the_glass(world: FakeWorld, role: Role) -> None:
    nurse, patient = await _patient(world)

    with pytest.raises(Forbidden) as raised:
        await break_glass(
            world.services, world.actor(role, nurse.organization_id), BreakGlass(patient.id, REASON)
        )

    assert raised.value.decision.reason == "role_not_permitted"
    assert (world.db.break_glass_sessions, world.db.outbox) == ({}, [])
    [event] = world.events("break_glass.open")
    assert (event.outcome, event.patient_id) == ("denied", patient.id)


@pytest.mark.parametrize("reason", ["too short", " " * 12, "x" * 1001])
async def test_the_emergency_must_be_explained_in_ten_to_a_thousand_characters(
    world: FakeWorld, reason: str
) -> None:
    nurse, patient = await _patient(world)

    with pytest.raises(InvalidInput) as raised:
        await break_glass(world.services, nurse, BreakGlass(patient.id, reason))

    assert [e.field for e in raised.value.errors] == ["reason"]
    assert (world.db.break_glass_sessions, world.db.outbox, world.events("break_glass.open")) == ({}, [], [])


async def test_compliance_reviews_sessions_by_its_staff_or_on_its_patients_newest_first(
    world: FakeWorld,
) -> None:
    nurse, patient = await _patient(world)
    home = nurse.organization_id
    partner = world.organization().id
    world.consent(patient.id, partner)
    ours = [
        await break_glass(
            world.services, world.actor(Role.PEER_SUPPORT, home), BreakGlass(patient.id, REASON)
        )
        for _ in range(2)
    ]
    theirs = await break_glass(
        world.services, world.actor(Role.CARE_TEAM_MEMBER, partner), BreakGlass(patient.id, REASON)
    )
    _, elsewhere = await _patient(world)
    unrelated = await break_glass(
        world.services,
        world.actor(Role.PEER_SUPPORT, elsewhere.organization_id),
        BreakGlass(elsewhere.id, REASON),
    )
    officer = world.actor(Role.COMPLIANCE_OFFICER, home)

    first = await list_break_glass(world.services, officer, None, 2)
    rest = await list_break_glass(world.services, officer, first.next_cursor, 2)
    partners = await list_break_glass(
        world.services, world.actor(Role.COMPLIANCE_OFFICER, partner), None, None
    )

    assert [s.id for s in first.items + rest.items] == [theirs.id, ours[1].id, ours[0].id]
    assert rest.next_cursor is None
    assert [s.id for s in partners.items] == [theirs.id]
    assert unrelated.id not in {s.id for s in first.items + rest.items}
    assert [e.outcome for e in world.events("break_glass.list")] == ["success"] * 3


@pytest.mark.parametrize("role", [Role.PEER_SUPPORT, Role.CARE_TEAM_MEMBER, Role.ADMIN, Role.AUDITOR])
async def test_only_compliance_officers_review_sessions(world: FakeWorld, role: Role) -> None:
    nurse, patient = await _patient(world)
    await break_glass(world.services, nurse, BreakGlass(patient.id, REASON))

    with pytest.raises(Forbidden) as raised:
        await list_break_glass(world.services, world.actor(role, nurse.organization_id), None, None)

    assert raised.value.decision.reason == "role_not_permitted"
    [event] = world.events("break_glass.list")
    assert event.outcome == "denied"


async def test_each_organization_reviews_a_session_on_another_organizations_patient_on_its_own(
    world: FakeWorld,
) -> None:
    _, patient = await _patient(world)
    home = patient.organization_id
    partner = world.organization().id
    world.consent(patient.id, partner, scope=frozenset({"read"}))
    session = await break_glass(
        world.services, world.actor(Role.CARE_TEAM_MEMBER, partner), BreakGlass(patient.id, REASON)
    )
    theirs, ours = world.actor(Role.COMPLIANCE_OFFICER, partner), world.actor(Role.COMPLIANCE_OFFICER, home)

    by_partner = await review_break_glass(world.services, theirs, ReviewBreakGlass(session.id, "Our use."))
    by_home = await review_break_glass(world.services, ours, ReviewBreakGlass(session.id, "Our patient."))
    with pytest.raises(Conflict):
        await review_break_glass(world.services, ours, ReviewBreakGlass(session.id, "Again."))

    assert (by_partner.reviewed_by, by_partner.review_note) == (theirs.user_id, "Our use.")
    assert (by_home.reviewed_by, by_home.review_note) == (ours.user_id, "Our patient.")
    read_home = await read_break_glass(world.services, ours, session.id)
    [listed_partner] = (await list_break_glass(world.services, theirs, None, None)).items
    assert (read_home.reviewed_by, read_home.review_note) == (ours.user_id, "Our patient.")
    assert (listed_partner.reviewed_by, listed_partner.review_note) == (theirs.user_id, "Our use.")
    assert [e.outcome for e in world.events("break_glass.review")] == ["success", "success", "failure"]
