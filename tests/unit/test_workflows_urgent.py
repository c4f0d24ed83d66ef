"""Urgent messages on fakes: sending one, acknowledging it (the first wins, routine refused, care team
only), and deciding whom an escalation step alerts (engine/workflows/urgent.py)."""

from __future__ import annotations

from datetime import date

import pytest

from engine.errors import Conflict, Forbidden
from engine.escalation import Step
from engine.model import Actor, RiskLevel, Role
from engine.workflows.conversations import StartConversation, send_message, start_conversation
from engine.workflows.patients import RegisterPatient, register_patient
from engine.workflows.urgent import Candidate, acknowledge, decide_targets
from tests.support.fakes import START, FakeWorld


async def _sent(world: FakeWorld, priority: str = "urgent") -> tuple[Actor, Actor, int]:
    """A nurse's urgent message in a conversation about their patient, with a colleague as member."""
    org = world.organization().id
    nurse = world.actor(Role.CARE_TEAM_MEMBER, org)
    colleague = world.actor(Role.CARE_TEAM_MEMBER, org)
    patient = await register_patient(
        world.services, nurse, RegisterPatient("Ann", "Lee", RiskLevel.LOW, date(1990, 1, 1))
    )
    conversation = await start_conversation(
        world.services, nurse, StartConversation(patient.id, "Ward", [colleague.user_id])
    )
    message = await send_message(world.services, nurse, conversation.id, "Come now", priority=priority)
    return nurse, colleague, message.id


async def test_an_urgent_send_is_decided_twice_and_stored_urgent(world: FakeWorld) -> None:
    _, _, message_id = await _sent(world)

    assert world.db.messages[message_id].priority == "urgent"
    assert [e.outcome for e in world.events("message.send_urgent")] == ["success"]


async def test_a_member_off_the_care_team_may_not_send_urgent(world: FakeWorld) -> None:
    _, colleague, _ = await _sent(world)
    conversation_id = next(iter(world.db.conversations))

    with pytest.raises(Forbidden) as refused:
        await send_message(world.services, colleague, conversation_id, "Me too", priority="urgent")

    assert refused.value.decision.reason == "not_on_care_team"


async def test_the_first_acknowledgement_wins(world: FakeWorld) -> None:
    nurse, _, message_id = await _sent(world)

    first = await acknowledge(world.services, nurse, message_id)
    again = await acknowledge(world.services, nurse, message_id)

    assert (first.user_id, first.already_acknowledged) == (nurse.user_id, False)
    assert (again.user_id, again.acknowledged_at, again.already_acknowledged) == (
        nurse.user_id,
        first.acknowledged_at,
        True,
    )
    assert [e.details.get("first") for e in world.events("message.acknowledge")] == [1, 0]


async def test_acknowledging_needs_the_care_team_and_an_urgent_message(world: FakeWorld) -> None:
    _, colleague, urgent = await _sent(world)
    other_nurse, _, routine = await _sent(world, priority="routine")

    with pytest.raises(Forbidden) as refused:
        await acknowledge(world.services, colleague, urgent)
    assert refused.value.decision.reason == "not_on_care_team"
    with pytest.raises(Conflict):
        await acknowledge(world.services, other_nurse, routine)


def test_whom_a_step_alerts_is_decided_per_person_and_every_decision_is_audited(world: FakeWorld) -> None:
    policy = world.services.policy.current
    people = [
        Candidate(1, "care_team_member", 10, is_member=True, on_care_team=False, covered=True),
        Candidate(
            2, "care_team_member", 10, is_member=False, on_care_team=True, covered=True, delegate_for=1
        ),
        Candidate(3, "care_team_member", 20, is_member=True, on_care_team=False, covered=False),
        Candidate(4, "admin", 10, is_member=False, on_care_team=False, covered=True),
        Candidate(5, "auditor", 10, is_member=True, on_care_team=True, covered=True),
    ]

    allowed, events = decide_targets(
        policy,
        Step.REALERT,
        people,
        message_id=9,
        conversation_id=8,
        patient_id=7,
        patient_organization_id=10,
        round_=3,
        at=START,
    )

    assert allowed == [1, 2, 4]
    assert [(e.details["subject_user_id"], e.outcome, e.reason) for e in events] == [
        (1, "success", "allowed"),
        (2, "success", "allowed"),
        (3, "denied", "no_active_consent"),
        (4, "success", "allowed"),
        (5, "denied", "role_not_permitted"),
    ]
    assert events[1].details["delegate_for"] == 1
    assert {e.workflow for e in events} == {"message.escalate"}
    assert all(e.details["step"] == "realert" and e.details["round"] == 3 for e in events)
