"""Messaging on fakes: reading one message with its per-recipient delivery state, and planning a
message's deliveries as a pure function over SMS recipients (the eligibility order of
engine.facts.sms_refusal, then ``sms.send_full_text`` for what the text says). Inbound events are in
test_inbound_events_on_fakes.py; tests/api/test_send_path.py covers the same over HTTP."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from typing import Any

import pytest

from engine.errors import Forbidden, NotFound
from engine.facts import ConsentCandidate, millis
from engine.model import Actor, DeliveryState, RecipientType, RiskLevel, Role
from engine.policy import PolicyHolder
from engine.ports.messaging import NewDelivery, SmsRecipient
from engine.services import Decider
from engine.sms import FULL_TEXT, NOTIFICATION
from engine.workflows.conversations import StartConversation, send_message, start_conversation
from engine.workflows.messaging import get_message, plan_deliveries
from engine.workflows.patients import RegisterPatient, register_patient
from integrations.db.uow import BufferedAuditLog
from tests.support.fakes import START, FakeWorld

TEXTABLE = "+16175550123"
GROUP = 7


# --- get_message --------------------------------------------------------------------------------------


async def _sent(world: FakeWorld) -> tuple[Actor, int]:
    """A nurse's message in a conversation about their patient; its id."""
    nurse = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)
    patient = await register_patient(
        world.services, nurse, RegisterPatient("Ann", "Lee", RiskLevel.LOW, date(1990, 1, 1))
    )
    conversation = await start_conversation(
        world.services, nurse, StartConversation(patient.id, "Ward", [nurse.user_id])
    )
    message = await send_message(world.services, nurse, conversation.id, "Seen at 9.")
    return nurse, message.id


async def test_a_member_reads_a_message_with_its_delivery_state(world: FakeWorld) -> None:
    nurse, message_id = await _sent(world)

    message = await get_message(world.services, nurse, message_id)

    assert (message.id, message.text, message.state) == (message_id, "Seen at 9.", DeliveryState.QUEUED)
    assert [(d.recipient, d.channel, d.state) for d in message.deliveries] == [
        ("channel", "chat", DeliveryState.QUEUED)
    ]
    [event] = world.events("conversation.read")
    assert (event.outcome, event.resource_id, event.patient_id) == (
        "success",
        str(message.conversation_id),
        world.db.conversations[message.conversation_id].patient_id,
    )
    assert "Seen at 9." not in repr(event)


async def test_a_colleague_outside_the_conversation_is_refused_for_want_of_membership(
    world: FakeWorld,
) -> None:
    nurse, message_id = await _sent(world)
    colleague = world.actor(Role.CARE_TEAM_MEMBER, nurse.organization_id)

    with pytest.raises(Forbidden) as raised:
        await get_message(world.services, colleague, message_id)

    assert "member" in raised.value.decision.missing
    [event] = world.events("conversation.read")
    assert (event.outcome, event.actor_id) == ("denied", colleague.user_id)


async def test_a_stranger_hears_of_an_existing_message_what_a_missing_one_answers(world: FakeWorld) -> None:
    _, message_id = await _sent(world)
    stranger = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)

    with pytest.raises(NotFound) as raised:
        await get_message(world.services, stranger, message_id)
    with pytest.raises(NotFound) as missing:
        await get_message(world.services, stranger, 424242)

    assert str(raised.value) == str(missing.value) == "No such message."
    decision, seen, lookup = world.events("conversation.read")
    assert (seen.event, seen.resource_type, seen.resource_id) == ("lookup", "message", str(message_id))
    assert (decision.outcome, decision.details["answered"]) == ("denied", "not_found")
    assert (lookup.event, lookup.resource_type, lookup.resource_id) == ("lookup", "message", "424242")


@pytest.mark.parametrize("role", [Role.ADMIN, Role.COMPLIANCE_OFFICER, Role.AUDITOR])
async def test_roles_that_never_read_conversations_are_refused_with_the_facts_they_would_have_had(
    world: FakeWorld, role: Role
) -> None:
    nurse, message_id = await _sent(world)

    with pytest.raises(Forbidden) as raised:
        await get_message(world.services, world.actor(role, nurse.organization_id), message_id)

    assert raised.value.decision.reason == "role_not_permitted"
    [event] = world.events("conversation.read")
    # The refusal records the facts (own organization, covered, not a member) so `policy diff` can
    # replay it under an edited policy; the answer is the same 403 either way.
    assert (event.outcome, event.resource_type, event.details["facts"]) == (
        "denied",
        "message",
        "covered&own_org",
    )


# --- plan_deliveries ----------------------------------------------------------------------------------


def _consent(consent_id: int = 90, **fields: Any) -> ConsentCandidate:
    """A consent naming the recipient's number: sms and message scope, for treatment, active since START."""
    consent = ConsentCandidate(
        consent_id, RecipientType.EXTERNAL, frozenset({"sms", "message"}), "treatment", millis(START)
    )
    return consent._replace(**fields)


def _recipient(participant_id: int = 1, **fields: Any) -> SmsRecipient:
    recipient = SmsRecipient(
        participant_id, TEXTABLE, f"ext_{participant_id}", None, False, False, frozenset(), (_consent(),)
    )
    return dataclasses.replace(recipient, **fields)


def _plan(world: FakeWorld, *recipients: SmsRecipient) -> tuple[tuple[NewDelivery, ...], BufferedAuditLog]:
    audit = BufferedAuditLog()
    nurse = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)
    planned = plan_deliveries(Decider(world.services, audit, nurse), world.services, 5, 6, recipients)
    return planned, audit


def _sms(planned: tuple[NewDelivery, ...]) -> list[tuple[int | None, DeliveryState, str | None, str | None]]:
    return [(d.external_participant_id, d.state, d.reason, d.content) for d in planned[1:]]


def test_the_channel_comes_first_and_a_consented_number_gets_a_notification_by_default(
    world: FakeWorld,
) -> None:
    world.clock.advance(hours=1)

    planned, audit = _plan(world, _recipient())

    assert planned[0] == NewDelivery("channel", DeliveryState.QUEUED)
    assert _sms(planned) == [(1, DeliveryState.QUEUED, None, NOTIFICATION)]
    [decision] = audit.pending
    assert (decision.workflow, decision.outcome, decision.patient_id, decision.resource_id) == (
        "sms.send_full_text",
        "denied",
        5,
        "6",
    )
    assert (decision.details["external_participant_id"], decision.details["consent_id"]) == (1, 90)
    assert decision.details["sms_policy_version"] == world.services.policy.current.sms_version


def test_a_participant_of_a_full_text_group_gets_the_message_itself(world: FakeWorld) -> None:
    shipped = world.services.policy.current
    with_group = dataclasses.replace(shipped, sms_full_text_groups=frozenset({GROUP}))
    world.services = dataclasses.replace(world.services, policy=PolicyHolder(with_group))
    world.clock.advance(hours=1)

    planned, audit = _plan(world, _recipient(1, compliance_group_ids=frozenset({GROUP})), _recipient(2))

    assert _sms(planned) == [
        (1, DeliveryState.QUEUED, None, FULL_TEXT),
        (2, DeliveryState.QUEUED, None, NOTIFICATION),
    ]
    assert [(e.outcome, e.details["external_participant_id"]) for e in audit.pending] == [
        ("success", 1),
        ("denied", 2),
    ]


@pytest.mark.parametrize(
    ("recipient", "reason"),
    [
        (_recipient(opted_out=True), "opted_out"),
        (_recipient(opted_out=True, consents=()), "opted_out"),
        (_recipient(consents=()), "no_sms_consent"),
        (_recipient(consents=(_consent(revoked_ms=millis(START)),)), "no_sms_consent"),
        (_recipient(consents=(_consent(expires_ms=millis(START) + 1),)), "no_sms_consent"),
        (_recipient(consents=(_consent(purpose="payment"),)), "no_sms_consent"),
        (_recipient(consents=(_consent(scope=frozenset({"message"})),)), "no_sms_consent"),
        (_recipient(phone_number="+15550102030"), "invalid_number"),
        (_recipient(phone_number="+15550102030", consents=()), "no_sms_consent"),
    ],
    ids=[
        "texted STOP",
        "STOP wins over no consent",
        "no consent",
        "consent revoked",
        "consent expired",
        "consent for payment",
        "consent without sms scope",
        "number not textable",
        "no consent wins over the number",
    ],
)
def test_a_recipient_who_may_not_be_texted_gets_a_failed_row_with_the_reason_and_no_decision(
    world: FakeWorld, recipient: SmsRecipient, reason: str
) -> None:
    world.clock.advance(hours=1)

    planned, audit = _plan(world, recipient)

    assert _sms(planned) == [(1, DeliveryState.FAILED, reason, None)]
    assert audit.pending == []


def test_a_removed_participant_gets_no_row_at_all(world: FakeWorld) -> None:
    world.clock.advance(hours=1)

    planned, audit = _plan(world, _recipient(1, removed=True), _recipient(2))

    assert [d.external_participant_id for d in planned] == [None, 2]
    assert [e.details["external_participant_id"] for e in audit.pending] == [2]


def test_a_consent_not_yet_in_effect_does_not_count(world: FakeWorld) -> None:
    later = _consent(effective_ms=millis(START + timedelta(days=1)))

    planned, _ = _plan(world, _recipient(consents=(later,)))
    world.clock.advance(days=1)
    then, _ = _plan(world, _recipient(consents=(later,)))

    assert (_sms(planned)[0][2], _sms(then)[0][1]) == ("no_sms_consent", DeliveryState.QUEUED)


def test_a_message_already_in_the_channel_keeps_its_state_and_timestamp(world: FakeWorld) -> None:
    nurse = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)
    decider = Decider(world.services, BufferedAuditLog(), nurse)

    planned = plan_deliveries(
        decider, world.services, 5, 6, [], channel_state=DeliveryState.SENT, channel_ts_ms=1_000
    )

    assert planned == (NewDelivery("channel", DeliveryState.SENT, provider_ts_ms=1_000),)
