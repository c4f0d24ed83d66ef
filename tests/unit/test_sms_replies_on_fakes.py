"""Inbound SMS from external participants, and messages staff post in the chat app, on fakes: the
effects each asks for (PostSmsReply, AnswerKeyword, AskWhichConversation, TextMessage) and the
decisions on record. tests/api/test_sms_reply_routing.py and test_webhooks.py cover the same from
signed HTTP requests against PostgreSQL."""

from __future__ import annotations

from datetime import date
from typing import Any

from engine.effects import AnswerKeyword, AskWhichConversation, PostSmsReply, RemoveMembers, TextMessage
from engine.model import Actor, Conversation, DeliveryState, Patient, Purpose, RecipientType, RiskLevel, Role
from engine.sms import Keyword, sms_recipient
from engine.workflows.consents import RecordConsent, RevokeConsent, record_consent, revoke_consent
from engine.workflows.conversations import ExternalMember, StartConversation, start_conversation
from engine.workflows.messaging import (
    IGNORED,
    PROCESSED,
    ChatMessagePosted,
    InboundSms,
    chat_message_posted,
    sms_received,
)
from engine.workflows.patients import RegisterPatient, register_patient
from tests.support.fakes import FakeWorld

PHONE = "+16175550123"


async def _patient(world: FakeWorld) -> tuple[Actor, Actor, Patient]:
    """A nurse and a compliance officer of one organization; the nurse's patient, with a consent
    naming PHONE."""
    org = world.organization().id
    nurse, officer = world.actor(Role.CARE_TEAM_MEMBER, org), world.actor(Role.COMPLIANCE_OFFICER, org)
    patient = await register_patient(
        world.services, nurse, RegisterPatient("Ann", "Lee", RiskLevel.LOW, date(1990, 1, 1))
    )
    await record_consent(
        world.services,
        officer,
        RecordConsent(patient.id, RecipientType.EXTERNAL, Purpose.TREATMENT, external_phone_number=PHONE),
    )
    return nurse, officer, patient


async def _with_sam(world: FakeWorld, nurse: Actor, patient: Patient) -> Conversation:
    sam = ExternalMember(PHONE, "Sam")
    return await start_conversation(
        world.services, nurse, StartConversation(patient.id, "Ward", [nurse.user_id], [sam])
    )


def _sms(event_id: int, text: str, **fields: Any) -> InboundSms:
    return InboundSms(event_id, f"SM{event_id}", PHONE, text, **fields)


async def test_a_reply_is_posted_into_the_participants_only_conversation_as_them(world: FakeWorld) -> None:
    nurse, _, patient = await _patient(world)
    conversation = await _with_sam(world, nurse, patient)
    [sam] = conversation.external_participants
    outbox_before = len(world.db.outbox)

    status = await sms_received(world.services, _sms(1, "See you at 10"))

    assert (status, world.db.webhook_events) == (PROCESSED, {1: PROCESSED})
    assert world.db.outbox[outbox_before:] == [
        PostSmsReply(conversation.id, conversation.channel_url, sam.chat_user_id, "See you at 10", "SM1")
    ]
    assert world.db.webhook_bodies_dropped == set()  # posted: its text lives until retention ends it
    [decision] = world.events("sms.reply")
    assert (decision.outcome, decision.actor_id, decision.patient_id) == ("success", None, patient.id)
    assert (decision.details["external_participant_id"], decision.details["consent_id"]) == (
        sam.id,
        sam.consent_id,
    )
    assert "See you" not in repr(decision)


async def test_after_the_consent_is_revoked_a_reply_is_refused_and_not_posted(world: FakeWorld) -> None:
    nurse, officer, patient = await _patient(world)
    conversation = await _with_sam(world, nurse, patient)
    [sam] = conversation.external_participants
    await revoke_consent(world.services, officer, RevokeConsent(sam.consent_id, "Patient asked."))
    assert world.db.outbox[-1] == RemoveMembers(conversation.id, (sam.chat_user_id,))
    outbox_before = len(world.db.outbox)

    status = await sms_received(world.services, _sms(1, "Still there?"))

    assert status == PROCESSED
    assert world.db.outbox[outbox_before:] == []
    assert world.db.webhook_bodies_dropped == {1}  # refused: its text has no further use
    [decision] = world.events("sms.reply")
    assert (decision.outcome, decision.reason, decision.details["consent_id"]) == (
        "denied",
        "no_external_consent",
        None,
    )


async def test_stop_and_start_are_kept_and_confirmed_once_and_help_is_answered_unless_opted_out(
    world: FakeWorld,
) -> None:
    nurse, _, patient = await _patient(world)
    conversation = await _with_sam(world, nurse, patient)
    [sam] = conversation.external_participants
    outbox_before = len(world.db.outbox)

    for event_id, text in enumerate(["STOP", "stop", "HELP", "Start", "help"], start=1):
        assert await sms_received(world.services, _sms(event_id, text)) == PROCESSED

    assert world.db.opt_outs == {}
    assert world.db.outbox[outbox_before:] == [
        AnswerKeyword(conversation.id, sam.id, word)
        for word in (Keyword.STOP, Keyword.START, Keyword.HELP)  # the HELP while opted out: no text
    ]
    assert world.db.webhook_bodies_dropped == {1, 2, 3, 4, 5}  # keywords: nothing to keep
    records = [
        (e.event, e.details.get("changed"), e.details.get("answer_refused"))
        for e in world.events("sms.reply")
    ]
    assert records == [
        ("sms_opt_out", 1, None),
        ("sms_opt_out", 0, None),
        ("sms_help", None, "opted_out"),
        ("sms_opt_in", 1, None),
        ("sms_help", None, None),
    ]


async def test_when_the_provider_answers_keywords_the_opt_out_is_kept_and_nothing_is_texted(
    world: FakeWorld,
) -> None:
    nurse, _, patient = await _patient(world)
    await _with_sam(world, nurse, patient)
    outbox_before = len(world.db.outbox)

    await sms_received(
        world.services, _sms(1, "please stop", provider_keyword=Keyword.STOP, provider_answers_keywords=True)
    )

    assert world.db.opt_outs == {PHONE: "SM1"}
    assert world.db.outbox[outbox_before:] == []


async def test_a_number_in_two_conversations_is_asked_which_unless_its_reply_names_one(
    world: FakeWorld,
) -> None:
    nurse, _, patient = await _patient(world)
    first, second = [await _with_sam(world, nurse, patient) for _ in range(2)]
    [one], [two] = first.external_participants, second.external_participants
    outbox_before = len(world.db.outbox)

    await sms_received(world.services, _sms(1, "Which one is this?"))
    await sms_received(world.services, _sms(2, "#7 wrong code"))
    await sms_received(world.services, _sms(3, "#1 for the first"))

    # Neither was texted yet, so the newest admission asks; a held reply is posted nowhere.
    assert world.db.outbox[outbox_before:] == [
        AskWhichConversation(second.id, two.id, (1, 2)),
        AskWhichConversation(second.id, two.id, (1, 2)),
        PostSmsReply(first.id, first.channel_url, one.chat_user_id, "for the first", "SM3"),
    ]
    assert world.db.webhook_bodies_dropped == {1, 2}  # held (never reposted: the sender resends)
    held = [e for e in world.events("sms.reply") if e.event == "sms_reply_held"]
    assert [(e.reason, e.details["conversation_id"]) for e in held] == [
        ("ambiguous_reply", second.id),
        ("ambiguous_reply", first.id),
        ("unknown_reply_code", second.id),
        ("unknown_reply_code", first.id),
    ]


async def test_a_message_posted_in_the_chat_app_texts_the_external_member(world: FakeWorld) -> None:
    nurse, _, patient = await _patient(world)
    conversation = await _with_sam(world, nurse, patient)
    [sam] = conversation.external_participants
    chat_id = world.db.users[nurse.user_id].chat_user_id
    outbox_before = len(world.db.outbox)

    status = await chat_message_posted(
        world.services, ChatMessagePosted(1, conversation.channel_url, chat_id, 41, "Seen at 9.", 1_000)
    )

    [message] = world.db.messages.values()
    rows = sorted(world.db.deliveries.values(), key=lambda r: r.id)
    assert status == PROCESSED
    assert [(r.delivery.recipient, r.delivery.state) for r in rows] == [
        ("channel", DeliveryState.SENT),
        (sms_recipient(sam.id), DeliveryState.QUEUED),
    ]
    assert world.db.outbox[outbox_before:] == [TextMessage(conversation.id, message.id, rows[1].id)]
    assert world.delivery.named[-1] == frozenset({TextMessage})  # the post is in the channel already
    [decision] = world.events("message.send")
    assert (decision.outcome, decision.details["via"]) == ("success", "chat_app")


async def test_a_chat_app_post_by_someone_no_longer_allowed_is_ignored_and_on_record(
    world: FakeWorld,
) -> None:
    nurse, _, patient = await _patient(world)
    conversation = await _with_sam(world, nurse, patient)
    outsider = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)
    chat_id = world.db.users[outsider.user_id].chat_user_id
    outbox_before = len(world.db.outbox)

    status = await chat_message_posted(
        world.services, ChatMessagePosted(1, conversation.channel_url, chat_id, 41, "Hi", 1_000)
    )

    assert (status, world.db.webhook_events) == (IGNORED, {1: IGNORED})
    assert (world.db.messages, world.db.outbox[outbox_before:]) == ({}, [])
    decision, lookup = world.events("message.send")
    assert (lookup.event, lookup.resource_type) == ("lookup", "conversation")
    assert (decision.outcome, decision.actor_id) == ("denied", outsider.user_id)


async def test_a_stop_as_phones_write_it_opts_out_and_a_sentence_with_stop_in_it_is_posted(
    world: FakeWorld,
) -> None:
    nurse, _, patient = await _patient(world)
    conversation = await _with_sam(world, nurse, patient)
    [sam] = conversation.external_participants
    disguised = ["\uff33\uff34\uff2f\uff30", "STOP\u200b", "Stop,", "Stop 🙏", "STOP #2"]
    outbox_before = len(world.db.outbox)

    for event_id, text in enumerate(disguised, start=1):
        assert await sms_received(world.services, _sms(event_id, text)) == PROCESSED
    opted_out = dict(world.db.opt_outs)
    keywords_answered = world.db.outbox[outbox_before:]
    await sms_received(world.services, _sms(10, "START"))
    outbox_before = len(world.db.outbox)
    await sms_received(world.services, _sms(11, "please don't stop the meds"))

    assert opted_out == {PHONE: "SM1"}
    assert keywords_answered == [AnswerKeyword(conversation.id, sam.id, Keyword.STOP)]  # confirmed once
    opt_outs = [e.details["changed"] for e in world.events("sms.reply") if e.event == "sms_opt_out"]
    assert opt_outs == [1, *[0] * (len(disguised) - 1)]
    assert world.db.outbox[outbox_before:] == [
        PostSmsReply(
            conversation.id, conversation.channel_url, sam.chat_user_id, "please don't stop the meds", "SM11"
        )
    ]


async def test_a_number_that_opted_out_gets_only_its_stop_confirmation_and_no_question_or_help(
    world: FakeWorld,
) -> None:
    nurse, _, patient = await _patient(world)
    first, second = [await _with_sam(world, nurse, patient) for _ in range(2)]
    [two] = second.external_participants
    outbox_before = len(world.db.outbox)

    for event_id, text in enumerate(["STOP", "Which one is this?", "#9 wrong code", "HELP"], start=1):
        assert await sms_received(world.services, _sms(event_id, text)) == PROCESSED

    # The STOP is confirmed; nothing after it is texted, though each text is read and on record.
    assert world.db.outbox[outbox_before:] == [AnswerKeyword(second.id, two.id, Keyword.STOP)]
    records = [(e.event, e.details.get("answer_refused")) for e in world.events("sms.reply")]
    assert records == [
        ("sms_opt_out", None),
        *[("sms_reply_held", "opted_out")] * 4,
        ("sms_help", "opted_out"),
    ]
    assert {e.details["conversation_id"] for e in world.events("sms.reply")} >= {first.id, second.id}


async def test_after_start_the_number_is_asked_which_conversation_again(world: FakeWorld) -> None:
    nurse, _, patient = await _patient(world)
    await _with_sam(world, nurse, patient)
    second = await _with_sam(world, nurse, patient)
    [two] = second.external_participants
    for event_id, text in enumerate(["STOP", "START"], start=1):
        await sms_received(world.services, _sms(event_id, text))
    outbox_before = len(world.db.outbox)

    await sms_received(world.services, _sms(3, "Which one is this?"))

    assert world.db.outbox[outbox_before:] == [AskWhichConversation(second.id, two.id, (1, 2))]
