"""Starting a conversation and sending into it, on fakes: the shipped policy decides, the fakes store
(tests/api/test_conversations.py and test_send_path.py cover the same over HTTP and PostgreSQL)."""

from __future__ import annotations

from datetime import date

import pytest

from engine.effects import CreateChannel, PostMessage
from engine.errors import Forbidden, NotFound
from engine.model import Actor, DeliveryState, RiskLevel, Role
from engine.workflows.conversations import (
    StartConversation,
    get_conversation,
    send_message,
    start_conversation,
)
from engine.workflows.patients import RegisterPatient, register_patient
from tests.support.fakes import FakeWorld, fake_services


@pytest.fixture
def world() -> FakeWorld:
    return fake_services()


async def _conversation(world: FakeWorld) -> tuple[Actor, int]:
    """A care-team member's conversation about their patient, with themself as its only member."""
    nurse = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)
    patient = await register_patient(
        world.services, nurse, RegisterPatient("Ann", "Lee", RiskLevel.LOW, date(1990, 1, 1))
    )
    conversation = await start_conversation(
        world.services,
        nurse,
        StartConversation(patient.id, "Discharge", [nurse.user_id]),
        idempotency_claim=7,
    )
    return nurse, conversation.id


async def test_a_care_team_member_starts_a_conversation_and_its_channel_is_queued(world: FakeWorld) -> None:
    nurse, conversation_id = await _conversation(world)

    stored = world.db.conversations[conversation_id]
    assert world.db.conversation_members[conversation_id] == (nurse.user_id,)
    assert world.db.outbox == [CreateChannel(conversation_id)]
    assert world.db.idempotency_keys == {7: conversation_id}
    assert stored.channel_state == "pending"
    [event] = world.events("conversation.create")
    assert (event.outcome, event.resource_id) == ("success", str(conversation_id))


async def test_a_member_sends_and_the_message_its_delivery_and_its_post_are_stored_together(
    world: FakeWorld,
) -> None:
    nurse, conversation_id = await _conversation(world)
    posts_before = len(world.db.outbox)

    message = await send_message(world.services, nurse, conversation_id, "Seen at 9.", idempotency_claim=8)
    detail = await get_conversation(world.services, nurse, conversation_id)

    assert (message.text, message.state) == ("Seen at 9.", DeliveryState.QUEUED)
    assert [(d.recipient, d.state) for d in detail.messages[0].deliveries] == [
        ("channel", DeliveryState.QUEUED)
    ]
    [post] = world.db.outbox[posts_before:]
    assert post == PostMessage(conversation_id, message.id)
    assert world.db.idempotency_keys[8] == message.id
    [event] = world.events("message.send")
    assert (event.outcome, event.patient_id) == (
        "success",
        world.db.conversations[conversation_id].patient_id,
    )


async def test_someone_outside_the_conversation_cannot_send_and_nothing_is_stored(world: FakeWorld) -> None:
    nurse, conversation_id = await _conversation(world)
    colleague = world.actor(Role.CARE_TEAM_MEMBER, nurse.organization_id)

    with pytest.raises((Forbidden, NotFound)):
        await send_message(world.services, colleague, conversation_id, "Hello")

    assert world.db.messages == {}
    [event] = world.events("message.send")
    assert event.outcome == "denied"


async def test_a_message_to_a_conversation_that_does_not_exist_is_not_found(world: FakeWorld) -> None:
    nurse, _ = await _conversation(world)

    with pytest.raises(NotFound):
        await send_message(world.services, nurse, 10_000_000, "Hello")

    [event] = world.events("message.send")
    assert (event.outcome, event.reason) == ("failure", "not_found")
