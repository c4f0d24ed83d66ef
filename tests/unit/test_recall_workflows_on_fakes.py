"""Recalling a message and reading its legal record on fakes, with a fake clock: the shipped policy
decides (the sender inside and outside the window, a compliance officer with a reason, another
organization, a second recall); tests/api/test_message_recall.py covers the same over HTTP."""

from __future__ import annotations

from datetime import date

import pytest

from engine.effects import PostMessage, RecallFromChannel
from engine.errors import Conflict, Forbidden, InvalidInput, NotFound
from engine.model import Actor, RiskLevel, Role
from engine.workflows.attachments import AttachFile, attach_file
from engine.workflows.conversations import (
    StartConversation,
    get_conversation,
    send_message,
    start_conversation,
)
from engine.workflows.messaging import get_message
from engine.workflows.patients import RegisterPatient, register_patient
from engine.workflows.recalls import (
    CorrectMessage,
    RecallMessage,
    correct_message,
    read_recalled,
    read_recalled_attachment,
    recall_message,
)
from tests.support.fakes import FakeWorld

TEXT = "Ann Lee's potassium is 6.1"


async def _sent(world: FakeWorld) -> tuple[Actor, int, int]:
    """A nurse's message in a conversation about her patient: (nurse, conversation id, message id)."""
    nurse = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)
    patient = await register_patient(
        world.services, nurse, RegisterPatient("Ann", "Lee", RiskLevel.LOW, date(1990, 1, 1))
    )
    conversation = await start_conversation(
        world.services, nurse, StartConversation(patient.id, "Discharge", [nurse.user_id])
    )
    message = await send_message(world.services, nurse, conversation.id, TEXT)
    return nurse, conversation.id, message.id


async def test_the_sender_recalls_within_the_window_and_the_text_leaves_every_read(world: FakeWorld) -> None:
    nurse, conversation_id, message_id = await _sent(world)
    world.clock.advance(minutes=14, seconds=59)

    recalled = await recall_message(world.services, nurse, RecallMessage(message_id, "wrong patient"))

    assert (recalled.recalled, recalled.text, recalled.recalled_by) == (True, "", nurse.user_id)
    assert (await get_message(world.services, nurse, message_id)).text == ""
    detail = await get_conversation(world.services, nurse, conversation_id)
    assert [m.recalled for m in detail.messages] == [True]
    assert TEXT not in repr(world.db.messages)
    # the post had not gone out: it is cancelled, its delivery failed as recalled, and the channel
    # effect is asked for (it finds nothing to delete)
    assert world.db.cancelled_outbox == [PostMessage(conversation_id, message_id)]
    assert [d.reason for d in recalled.deliveries] == ["recalled"]
    assert world.db.outbox[-1] == RecallFromChannel(conversation_id, message_id)
    [decision] = world.events("message.recall")
    assert decision.outcome == "success"
    assert "sender" in (decision.matched_rule or "")
    assert "recall_window" in (decision.matched_rule or "")
    event = decision
    assert (event.actor_id, event.details["by_sender"], event.details["cancelled_posts"]) == (
        nurse.user_id,
        1,
        1,
    )
    assert "wrong patient" not in repr(world.db.audit)
    assert TEXT not in repr(world.db.audit)


async def test_the_sender_cannot_recall_once_the_window_has_passed(world: FakeWorld) -> None:
    nurse, _, message_id = await _sent(world)
    world.clock.advance(minutes=15)

    with pytest.raises(Forbidden) as refused:
        await recall_message(world.services, nurse, RecallMessage(message_id, "typo"))

    assert refused.value.decision.reason == "recall_window_passed"
    assert world.db.messages[message_id].text == TEXT
    assert world.db.message_recalls == {}
    [event] = world.events("message.recall")
    assert event.outcome == "denied"


async def test_another_member_may_not_recall_a_message_they_did_not_send(world: FakeWorld) -> None:
    nurse, conversation_id, message_id = await _sent(world)
    colleague = world.actor(Role.PEER_SUPPORT, nurse.organization_id)
    world.db.conversation_members[conversation_id] += (colleague.user_id,)

    with pytest.raises(Forbidden) as refused:
        await recall_message(world.services, colleague, RecallMessage(message_id, "not mine"))

    assert refused.value.decision.reason == "not_sender"


async def test_a_compliance_officer_recalls_at_any_time_with_a_reason_and_reads_the_legal_record(
    world: FakeWorld,
) -> None:
    nurse, _, message_id = await _sent(world)
    officer = world.actor(Role.COMPLIANCE_OFFICER, nurse.organization_id)
    world.clock.advance(days=30)

    with pytest.raises(InvalidInput) as blank:
        await recall_message(world.services, officer, RecallMessage(message_id, "   "))
    assert [e.field for e in blank.value.errors] == ["reason"]

    await recall_message(world.services, officer, RecallMessage(message_id, "sent to the wrong patient"))
    record = await read_recalled(world.services, officer, message_id)

    assert (record.text, record.reason, record.recalled_by) == (
        TEXT,
        "sent to the wrong patient",
        officer.user_id,
    )
    [read] = world.events("message.read_recalled")
    assert (read.actor_id, read.resource_id, read.outcome) == (officer.user_id, str(message_id), "success")
    assert read.details["recalled_by"] == officer.user_id
    assert TEXT not in repr(world.db.audit)


async def test_a_second_recall_is_a_conflict_and_changes_nothing(world: FakeWorld) -> None:
    nurse, _, message_id = await _sent(world)
    await recall_message(world.services, nurse, RecallMessage(message_id, "wrong patient"))
    stored = world.db.message_recalls[message_id]

    with pytest.raises(Conflict):
        await recall_message(world.services, nurse, RecallMessage(message_id, "again"))

    assert world.db.message_recalls[message_id] == stored


async def test_another_organizations_officer_is_answered_as_if_the_message_did_not_exist(
    world: FakeWorld,
) -> None:
    _, _, message_id = await _sent(world)
    stranger = world.actor(Role.COMPLIANCE_OFFICER, world.organization().id)

    with pytest.raises(NotFound) as recall:
        await recall_message(world.services, stranger, RecallMessage(message_id, "not yours"))
    with pytest.raises(NotFound) as read:
        await read_recalled(world.services, stranger, message_id)
    with pytest.raises(NotFound) as missing:
        await recall_message(world.services, stranger, RecallMessage(10_000_000, "none"))

    assert str(recall.value) == str(read.value) == str(missing.value)
    assert world.db.message_recalls == {}


async def test_the_legal_record_of_a_message_never_recalled_is_not_found_and_staff_cannot_read_it(
    world: FakeWorld,
) -> None:
    nurse, _, message_id = await _sent(world)
    officer = world.actor(Role.COMPLIANCE_OFFICER, nurse.organization_id)

    with pytest.raises(NotFound):
        await read_recalled(world.services, officer, message_id)
    await recall_message(world.services, nurse, RecallMessage(message_id, "wrong patient"))
    with pytest.raises(Forbidden) as refused:
        await read_recalled(world.services, nurse, message_id)

    assert refused.value.decision.reason == "role_not_permitted"


async def test_a_correction_is_a_new_message_linked_both_ways_and_the_original_stays(
    world: FakeWorld,
) -> None:
    nurse, conversation_id, message_id = await _sent(world)
    world.clock.advance(hours=2)  # no window: a correction may come any time

    correction = await correct_message(world.services, nurse, CorrectMessage(message_id, "Potassium is 4.1"))

    assert (correction.corrects_message_id, correction.sender_id, correction.text) == (
        message_id,
        nurse.user_id,
        "Potassium is 4.1",
    )
    original = await get_message(world.services, nurse, message_id)
    assert (original.corrected_by_message_id, original.text, original.recalled) == (
        correction.id,
        TEXT,
        False,
    )
    assert world.db.outbox[-1] == PostMessage(conversation_id, correction.id)
    [decision] = world.events("message.correct")
    assert (decision.outcome, decision.details["correction_id"]) == ("success", correction.id)
    with pytest.raises(Conflict):
        await correct_message(world.services, nurse, CorrectMessage(message_id, "again"))


async def test_only_the_sender_corrects_a_message(world: FakeWorld) -> None:
    nurse, conversation_id, message_id = await _sent(world)
    colleague = world.actor(Role.PEER_SUPPORT, nurse.organization_id)
    world.db.conversation_members[conversation_id] += (colleague.user_id,)

    with pytest.raises(Forbidden) as refused:
        await correct_message(world.services, colleague, CorrectMessage(message_id, "mine now"))

    assert refused.value.decision.reason == "not_sender"
    assert world.db.messages[message_id].corrected_by_message_id is None


async def test_a_recalled_file_stays_in_the_legal_record_and_each_read_of_it_is_audited_with_its_hash(
    world: FakeWorld,
) -> None:
    nurse, conversation_id, _ = await _sent(world)
    officer = world.actor(Role.COMPLIANCE_OFFICER, nurse.organization_id)
    pdf = b"%PDF-1.7 Ann Lee"
    message = await attach_file(
        world.services,
        nurse,
        AttachFile(conversation_id, "application/pdf", pdf),
        allowed_types=["application/pdf"],
    )
    [attachment] = message.attachments
    with pytest.raises(NotFound):  # not recalled: read the ordinary way, not from the legal record
        await read_recalled_attachment(world.services, officer, message.id, attachment.id)

    await recall_message(world.services, nurse, RecallMessage(message.id, "wrong patient"))
    record = await read_recalled(world.services, officer, message.id)
    file = await read_recalled_attachment(world.services, officer, message.id, attachment.id)

    assert record.attachments == (attachment,)
    assert (file.attachment, file.data) == (attachment, pdf)
    read = world.events("message.read_recalled")[-1]
    assert (read.outcome, read.details["attachment_sha256"]) == ("success", attachment.sha256)
    with pytest.raises(NotFound):
        await read_recalled_attachment(world.services, officer, message.id, attachment.id + 1)
    with pytest.raises(Forbidden):
        await read_recalled_attachment(world.services, nurse, message.id, attachment.id)
