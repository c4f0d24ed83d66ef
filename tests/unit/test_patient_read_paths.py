"""A patient read decides and records the same on its own unit of work (PatientReadUnitOfWork, one
read and one write) as through the general unit of work: for the same request, the same answer (the
record, or the same refusal with the same decision) and the same audit events, field for field.

Both paths run over one in-memory store (tests/support/fakes.py); tests/api/test_patient_read_path.py
holds the asyncpg path to the general one on PostgreSQL.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from engine.audit import AuditEvent
from engine.errors import CaremsgError
from engine.model import Actor, Patient, RiskLevel, Role
from engine.workflows.patients import RegisterPatient, get_patient, register_patient
from tests.support.fakes import FakeBreakGlassRepository, FakeWorld, fake_services

JOHN = RegisterPatient("John", "Smith", RiskLevel.HIGH)


async def _read(
    world: FakeWorld, actor: Actor, patient_id: int, *, general: bool
) -> tuple[object, list[AuditEvent]]:
    """What the read answered (the record, or the error's class, code, message and decision) and the
    events it recorded, through one path."""
    services = dataclasses.replace(world.services, patient_reads=None) if general else world.services
    before = len(world.db.audit)
    answer: object
    try:
        answer = await get_patient(services, actor, patient_id)
    except CaremsgError as error:
        answer = (type(error).__name__, error.code, str(error), getattr(error, "decision", error.denial))
    return answer, world.db.audit[before:]


async def _both(world: FakeWorld, actor: Actor, patient_id: int) -> tuple[Any, list[AuditEvent]]:
    """The read through the general unit of work, then through its own: answers and events equal."""
    general = await _read(world, actor, patient_id, general=True)
    fast = await _read(world, actor, patient_id, general=False)
    assert fast == general
    return general


async def _clinic(world: FakeWorld) -> tuple[Actor, Patient]:
    nurse = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)
    return nurse, await register_patient(world.services, nurse, JOHN)


async def _open_session(world: FakeWorld, actor: Actor, patient: Patient) -> int:
    session = await FakeBreakGlassRepository(world.db).add(
        user_id=actor.user_id,
        organization_id=actor.organization_id,
        patient_id=patient.id,
        reason="Unconscious in the emergency room",
        expires_at=world.clock() + timedelta(hours=1),
    )
    return session.id


async def test_a_care_team_member_gets_the_record_and_the_same_allow_on_record() -> None:
    world = fake_services()
    nurse, patient = await _clinic(world)

    answer, events = await _both(world, nurse, patient.id)

    assert answer == patient
    assert [(e.event, e.outcome, e.decision) for e in events] == [("decision", "success", "allow")]


async def test_a_colleague_off_the_care_team_gets_the_same_403_and_denial_on_record() -> None:
    world = fake_services()
    nurse, patient = await _clinic(world)
    colleague = world.actor(Role.CARE_TEAM_MEMBER, nurse.organization_id)

    answer, events = await _both(world, colleague, patient.id)

    assert answer[0] == "Forbidden"
    assert "care_team" in answer[3].missing
    [event] = events
    assert (event.outcome, event.actor_id) == ("denied", colleague.user_id)


async def test_someone_with_no_relation_gets_the_same_404_and_the_real_reason_on_record() -> None:
    world = fake_services()
    _, patient = await _clinic(world)
    stranger = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)

    answer, events = await _both(world, stranger, patient.id)

    assert answer[0] == "NotFound"
    event, lookup = events
    assert (event.outcome, event.details["answered"]) == ("denied", "not_found")
    # What the organization sees of it: the lookup a missing id leaves (the truth is hidden from it).
    assert (lookup.event, lookup.resource_id, lookup.outcome) == ("lookup", str(patient.id), "failure")
    assert "answered" not in lookup.details


async def test_a_patient_that_does_not_exist_is_the_same_404_with_the_same_failed_lookup() -> None:
    world = fake_services()
    nurse, _ = await _clinic(world)

    answer, events = await _both(world, nurse, 424242)

    assert answer[0] == "NotFound"
    assert [(e.event, e.outcome, e.reason) for e in events] == [("lookup", "failure", "not_found")]


@pytest.mark.parametrize("exists", [True, False], ids=["existing patient", "missing patient"])
async def test_a_role_that_may_never_read_patients_is_refused_the_same_way_on_both_paths(
    exists: bool,
) -> None:
    world = fake_services()
    _, patient = await _clinic(world)
    auditor = world.actor(Role.AUDITOR, patient.organization_id)

    answer, events = await _both(world, auditor, patient.id if exists else 424242)

    assert answer[0] == "Forbidden"
    assert events[-1].reason == "role_not_permitted"


async def test_break_glass_in_the_patients_organization_reads_with_the_same_session_on_record() -> None:
    world = fake_services()
    nurse, patient = await _clinic(world)
    colleague = world.actor(Role.CARE_TEAM_MEMBER, nurse.organization_id)
    session_id = await _open_session(world, colleague, patient)

    answer, events = await _both(world, colleague, patient.id)

    assert answer == patient
    [event] = events
    assert (event.outcome, event.break_glass, event.details["break_glass_session_id"]) == (
        "success",
        True,
        session_id,
    )


async def test_break_glass_without_treatment_consent_is_a_403_not_a_404_on_both_paths() -> None:
    world = fake_services()
    _, patient = await _clinic(world)
    outsider = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)
    await _open_session(world, outsider, patient)

    answer, events = await _both(world, outsider, patient.id)

    assert answer[0] == "Forbidden"
    [event] = events
    assert (event.outcome, event.break_glass) == ("denied", True)


async def test_an_expired_session_counts_for_neither_path() -> None:
    world = fake_services()
    nurse, patient = await _clinic(world)
    colleague = world.actor(Role.CARE_TEAM_MEMBER, nurse.organization_id)
    await _open_session(world, colleague, patient)
    world.clock.advance(hours=2)

    answer, events = await _both(world, colleague, patient.id)

    assert answer[0] == "Forbidden"
    assert events[0].break_glass is False


async def test_a_consent_covering_another_organization_is_named_the_same_on_both_paths() -> None:
    world = fake_services()
    _, patient = await _clinic(world)
    partner = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)
    world.db.care_teams = {
        i: dataclasses.replace(
            t, members=(*t.members, dataclasses.replace(t.members[0], user_id=partner.user_id))
        )
        for i, t in world.db.care_teams.items()
    }
    consent_id = world.consent(patient.id, partner.organization_id)

    answer, events = await _both(world, partner, patient.id)
    stated = dataclasses.replace(partner, purpose_of_use="payment")
    refused, refusal = await _both(world, stated, patient.id)

    assert answer == patient
    assert events[0].details["consent_id"] == consent_id
    assert refused[0] == "Forbidden"
    assert refusal[0].reason == "purpose_not_permitted"
