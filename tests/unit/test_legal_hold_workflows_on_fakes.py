"""Legal holds on fakes: a compliance officer of the patient's organization places one on a patient
or a conversation (another organization's answers 404, other roles 403), with a reason kept with
the hold and out of the audit trail; the sweep keeps held content until the hold is lifted; a hold
is lifted once. tests/api/test_retention.py covers the same over HTTP."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import pytest

from engine.errors import Conflict, Forbidden, InvalidInput, NotFound
from engine.model import Actor, RiskLevel, Role
from engine.policy import Policy
from engine.workflows.conversations import StartConversation, send_message, start_conversation
from engine.workflows.legal_holds import PlaceLegalHold, lift_legal_hold, list_legal_holds, place_legal_hold
from engine.workflows.patients import RegisterPatient, register_patient
from engine.workflows.retention import sweep_retention
from integrations.policy_files import read_policy_sources
from tests.support.fakes import FakeWorld

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"


async def _setting(world: FakeWorld) -> tuple[Actor, Actor, int, int]:
    """(officer, nurse, patient id, conversation id) of one organization, one message sent."""
    org = world.organization().id
    officer, nurse = world.actor(Role.COMPLIANCE_OFFICER, org), world.actor(Role.CARE_TEAM_MEMBER, org)
    patient = await register_patient(
        world.services, nurse, RegisterPatient("Ann", "Lee", RiskLevel.LOW, date(1990, 1, 1))
    )
    conversation = await start_conversation(
        world.services, nurse, StartConversation(patient.id, "Ward", [nurse.user_id])
    )
    await send_message(world.services, nurse, conversation.id, "Potassium 6.1")
    return officer, nurse, patient.id, conversation.id


async def test_an_officer_holds_a_patient_and_the_sweep_waits_for_the_lift(world: FakeWorld) -> None:
    officer, _, patient_id, _ = await _setting(world)
    sources = dataclasses.replace(read_policy_sources(POLICY_DIR), retention="[default]\ncontent_days = 1\n")
    world.services.policy.swap(Policy.from_sources(sources))

    hold = await place_legal_hold(
        world.services, officer, PlaceLegalHold("matter 117", patient_id=patient_id)
    )
    world.clock.advance(days=2)

    assert (hold.active, hold.subject_patient_id, hold.organization_id) == (
        True,
        patient_id,
        officer.organization_id,
    )
    assert await sweep_retention(world.services) == 0
    assert [h.id for h in await list_legal_holds(world.services, officer, active_only=True)] == [hold.id]
    lifted = await lift_legal_hold(world.services, officer, hold.id, "closed")
    assert (lifted.active, lifted.lifted_by) == (False, officer.user_id)
    assert await sweep_retention(world.services) == 1
    with pytest.raises(Conflict):
        await lift_legal_hold(world.services, officer, hold.id, "again")
    [placed] = [e for e in world.db.audit if e.workflow == "legal_hold.place"]
    assert (placed.outcome, placed.patient_id) == ("success", patient_id)
    assert "matter" not in repr(placed)


async def test_another_organizations_officer_is_answered_404_and_staff_403(world: FakeWorld) -> None:
    officer, nurse, patient_id, conversation_id = await _setting(world)
    stranger = world.actor(Role.COMPLIANCE_OFFICER, world.organization().id)

    with pytest.raises(NotFound):
        await place_legal_hold(world.services, stranger, PlaceLegalHold("x", patient_id=patient_id))
    with pytest.raises(NotFound):
        await place_legal_hold(world.services, stranger, PlaceLegalHold("x", conversation_id=conversation_id))
    with pytest.raises(Forbidden):
        await place_legal_hold(world.services, nurse, PlaceLegalHold("x", conversation_id=conversation_id))
    hold = await place_legal_hold(
        world.services, officer, PlaceLegalHold("x", conversation_id=conversation_id)
    )
    with pytest.raises(NotFound):
        await lift_legal_hold(world.services, stranger, hold.id, "x")
    assert await list_legal_holds(world.services, stranger) == []


@pytest.mark.parametrize(
    "cmd",
    [
        PlaceLegalHold("x"),
        PlaceLegalHold("x", patient_id=1, conversation_id=1),
        PlaceLegalHold("   ", patient_id=1),
        PlaceLegalHold("x" * 501, patient_id=1),
    ],
    ids=["no-subject", "two-subjects", "blank-reason", "long-reason"],
)
async def test_a_bad_hold_is_refused_naming_the_field(world: FakeWorld, cmd: PlaceLegalHold) -> None:
    officer, _, _, _ = await _setting(world)
    with pytest.raises(InvalidInput):
        await place_legal_hold(world.services, officer, cmd)
