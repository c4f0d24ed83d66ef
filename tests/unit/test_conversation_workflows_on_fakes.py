"""Starting, reading, listing and sending into conversations on fakes (members of other organizations,
external SMS members and their consent, the texts a message queues): the shipped policy decides, the
fakes store (tests/api/test_conversations.py and test_send_path.py cover the same over HTTP)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import pytest

from engine.effects import CreateChannel, PostMessage, TextMessage
from engine.errors import Forbidden, InvalidInput, NotFound
from engine.model import Actor, Consent, DeliveryState, Patient, Purpose, RecipientType, RiskLevel, Role
from engine.sms import NOTIFICATION
from engine.workflows.consents import RecordConsent, record_consent
from engine.workflows.conversations import (
    ExternalMember,
    StartConversation,
    get_conversation,
    list_conversations,
    send_message,
    start_conversation,
)
from engine.workflows.patients import RegisterPatient, register_patient
from tests.support.fakes import FakeWorld

PHONE = "+16175550123"


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


async def test_a_blank_message_is_refused_by_field_and_nothing_is_stored(world: FakeWorld) -> None:
    nurse, conversation_id = await _conversation(world)
    outbox = list(world.db.outbox)

    with pytest.raises(InvalidInput) as raised:
        await send_message(world.services, nurse, conversation_id, "  ")

    assert [e.field for e in raised.value.errors] == ["message"]
    assert (world.db.messages, world.db.outbox, world.events("message.send")) == ({}, outbox, [])


async def _patient(world: FakeWorld) -> tuple[Actor, Patient]:
    nurse = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)
    patient = await register_patient(
        world.services, nurse, RegisterPatient("Ann", "Lee", RiskLevel.LOW, date(1990, 1, 1))
    )
    return nurse, patient


def _start(
    patient: Patient, members: list[int], external: Sequence[ExternalMember] = ()
) -> StartConversation:
    return StartConversation(patient.id, "Ward", members, external)


async def test_staff_off_the_care_team_may_not_start_a_conversation_and_nothing_is_stored(
    world: FakeWorld,
) -> None:
    nurse, patient = await _patient(world)
    colleague = world.actor(Role.PEER_SUPPORT, nurse.organization_id)
    auditor = world.actor(Role.AUDITOR, nurse.organization_id)
    stranger = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)

    with pytest.raises(Forbidden) as off_team:
        await start_conversation(world.services, colleague, _start(patient, []))
    with pytest.raises(Forbidden) as role:
        await start_conversation(world.services, auditor, _start(patient, []))
    with pytest.raises(NotFound):
        await start_conversation(world.services, stranger, _start(patient, []))

    assert "care_team" in off_team.value.decision.missing
    assert role.value.decision.reason == "role_not_permitted"
    assert (world.db.conversations, world.db.outbox, world.delivery.wakes) == ({}, [], 0)
    assert [(e.actor_id, e.outcome) for e in world.events("conversation.create")] == [
        (colleague.user_id, "denied"),
        (auditor.user_id, "denied"),
        (stranger.user_id, "denied"),
        (stranger.user_id, "failure"),  # the lookup a missing patient leaves, which it sees instead
    ]


async def test_a_member_of_an_unrelated_organization_is_answered_as_no_such_user(world: FakeWorld) -> None:
    nurse, patient = await _patient(world)
    stranger = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)

    with pytest.raises(InvalidInput) as raised:
        await start_conversation(world.services, nurse, _start(patient, [stranger.user_id]))
    with pytest.raises(InvalidInput) as missing:
        await start_conversation(world.services, nurse, _start(patient, [424242]))

    assert [(e.field, e.message) for e in raised.value.errors] == [
        (e.field, e.message) for e in missing.value.errors
    ]
    assert (world.db.conversations, world.db.outbox) == ({}, [])
    [join] = world.events("conversation.join")
    assert (join.outcome, join.details["subject_user_id"]) == ("denied", stranger.user_id)


async def test_an_external_member_is_admitted_only_under_a_consent_naming_their_number(
    world: FakeWorld,
) -> None:
    nurse, patient = await _patient(world)
    sam = ExternalMember(PHONE, "Sam")
    with pytest.raises(Forbidden) as refused:
        await start_conversation(world.services, nurse, _start(patient, [], [sam]))
    assert (refused.value.field, refused.value.decision.reason) == (
        "externalMembers[0]",
        "no_external_consent",
    )
    consent = await _external_consent(world, patient)
    with pytest.raises(InvalidInput) as twice:
        await start_conversation(world.services, nurse, _start(patient, [], [sam, sam]))
    assert [e.field for e in twice.value.errors] == ["externalMembers[1].phoneNumber"]
    assert world.db.conversations == {}

    conversation = await start_conversation(world.services, nurse, _start(patient, [], [sam]))

    [participant] = conversation.external_participants
    assert (participant.phone_number, participant.consent_id) == (PHONE, consent.id)
    assert world.db.outbox == [CreateChannel(conversation.id)]
    assert [(e.outcome, e.details["consent_id"]) for e in world.events("conversation.join")] == [
        ("denied", None),
        ("failure", consent.id),  # allowed, then the number was listed twice: nothing was stored
        ("success", consent.id),
    ]


async def _external_consent(world: FakeWorld, patient: Patient) -> Consent:
    officer = world.actor(Role.COMPLIANCE_OFFICER, patient.organization_id)
    cmd = RecordConsent(patient.id, RecipientType.EXTERNAL, Purpose.TREATMENT, external_phone_number=PHONE)
    return await record_consent(world.services, officer, cmd)


async def test_a_message_is_texted_to_an_external_member_unless_they_opted_out(world: FakeWorld) -> None:
    nurse, patient = await _patient(world)
    await _external_consent(world, patient)
    conversation = await start_conversation(
        world.services, nurse, StartConversation(patient.id, "T", [], [ExternalMember(PHONE, "Sam")])
    )
    [participant] = conversation.external_participants

    first = await send_message(world.services, nurse, conversation.id, "Seen at 9.")
    world.db.opt_outs[PHONE] = "SM1"
    second = await send_message(world.services, nurse, conversation.id, "Seen at 10.")

    assert [(d.channel, d.state, d.reason) for d in first.deliveries] == [
        ("chat", DeliveryState.QUEUED, None),
        ("sms", DeliveryState.QUEUED, None),
    ]
    assert [(d.channel, d.state, d.reason) for d in second.deliveries] == [
        ("chat", DeliveryState.QUEUED, None),
        ("sms", DeliveryState.FAILED, "opted_out"),
    ]
    [texted] = [r for r in world.db.deliveries.values() if r.message_id == first.id and r.delivery.content]
    assert (texted.delivery.external_participant_id, texted.delivery.content) == (
        participant.id,
        NOTIFICATION,
    )
    assert world.db.outbox[1:] == [
        PostMessage(conversation.id, first.id),
        TextMessage(conversation.id, first.id, texted.id),
        PostMessage(conversation.id, second.id),
    ]
    assert [e.outcome for e in world.events("sms.send_full_text")] == ["denied"]  # by default: no content
    # Each send woke the relays for what it queued: the text relay for the first only.
    assert world.delivery.named[-2:] == [frozenset({PostMessage, TextMessage}), frozenset({PostMessage})]


async def test_members_read_and_list_a_conversation_until_the_consent_covering_them_ends(
    world: FakeWorld,
) -> None:
    nurse, patient = await _patient(world)
    partner = world.organization().id
    consent_id = world.consent(patient.id, partner)
    outsider = world.actor(Role.CARE_TEAM_MEMBER, partner)
    conversation = await start_conversation(
        world.services, nurse, StartConversation(patient.id, "T", [outsider.user_id])
    )
    await send_message(world.services, nurse, conversation.id, "Seen at 9.")

    detail = await get_conversation(world.services, outsider, conversation.id)
    listed = await list_conversations(world.services, outsider, None, None)
    world.revoke(consent_id, patient.id)
    with pytest.raises(Forbidden) as revoked:
        await get_conversation(world.services, outsider, conversation.id)
    relisted = await list_conversations(world.services, outsider, None, None)

    assert [m.text for m in detail.messages] == ["Seen at 9."]
    assert [c.id for c in listed.items] == [conversation.id]
    assert "covered" in revoked.value.decision.missing
    assert relisted.items == ()
    reads = world.events("conversation.read")
    assert [(e.outcome, e.details.get("consent_id")) for e in reads] == [
        ("success", consent_id),
        ("success", consent_id),
        ("denied", None),
        ("denied", None),
    ]


@pytest.mark.parametrize("role", [Role.ADMIN, Role.COMPLIANCE_OFFICER, Role.AUDITOR])
async def test_roles_that_never_take_part_may_not_list_or_read_conversations(
    world: FakeWorld, role: Role
) -> None:
    nurse, conversation_id = await _conversation(world)
    actor = world.actor(role, nurse.organization_id)

    with pytest.raises(Forbidden) as listing:
        await list_conversations(world.services, actor, None, None)
    with pytest.raises(Forbidden) as reading:
        await get_conversation(world.services, actor, conversation_id)

    assert (listing.value.decision.reason, reading.value.decision.reason) == ("role_not_permitted",) * 2
