"""Attaching a file to a message and downloading it, on fakes with the shipped policy: the file's
checks (empty, type, sniffed bytes), the decision and its audit record (SHA-256, never the name),
the outbox effect, another organization's 404, and a recalled message's file; the relay's post is
in tests/integration/test_attachments_on_emulator.py, the HTTP answers in tests/api/test_attachments.py."""

from __future__ import annotations

import hashlib
from datetime import date

import pytest

from engine.effects import PostAttachment, RecallFromChannel
from engine.errors import FileTypeRefused, Forbidden, InvalidInput, NotFound
from engine.model import Actor, RiskLevel, Role
from engine.workflows.attachments import AttachFile, attach_file, read_attachment
from engine.workflows.conversations import StartConversation, start_conversation
from engine.workflows.messaging import get_message
from engine.workflows.patients import RegisterPatient, register_patient
from engine.workflows.recalls import RecallMessage, recall_message
from tests.support.fakes import FakeWorld

PDF = b"%PDF-1.7\n% a discharge summary\n"
ALLOWED = ("application/pdf", "image/png", "image/jpeg")


async def _conversation(world: FakeWorld) -> tuple[Actor, int]:
    nurse = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)
    patient = await register_patient(
        world.services, nurse, RegisterPatient("Ann", "Lee", RiskLevel.LOW, date(1990, 1, 1))
    )
    conversation = await start_conversation(
        world.services, nurse, StartConversation(patient.id, "Discharge", [nurse.user_id])
    )
    return nurse, conversation.id


async def test_a_member_attaches_a_pdf_and_the_audit_record_holds_its_hash_not_its_name(
    world: FakeWorld,
) -> None:
    nurse, conversation_id = await _conversation(world)

    message = await attach_file(
        world.services,
        nurse,
        AttachFile(conversation_id, "application/pdf", PDF, "Ann Lee discharge"),
        allowed_types=ALLOWED,
    )

    [attachment] = message.attachments
    assert (attachment.content_type, attachment.size) == ("application/pdf", len(PDF))
    assert attachment.sha256 == hashlib.sha256(PDF).hexdigest()
    assert world.db.outbox[-1] == PostAttachment(conversation_id, message.id, attachment.id)
    [decision] = world.events("message.attach")
    assert decision.outcome == "success"
    assert decision.details["attachment_sha256"] == attachment.sha256
    assert decision.details["attachment_size"] == len(PDF)
    assert decision.details["attachment_type"] == "application/pdf"
    assert "Ann Lee" not in repr(world.db.audit)
    read = await get_message(world.services, nurse, message.id)
    assert read.attachments == (attachment,)
    downloaded = await read_attachment(world.services, nurse, message.id, attachment.id)
    assert downloaded.data == PDF


@pytest.mark.parametrize(
    ("content_type", "data", "error"),
    [
        ("application/pdf", b"", InvalidInput),
        ("application/x-msdownload", b"MZ\x90\x00", FileTypeRefused),
        ("application/pdf", b"MZ\x90\x00 not a pdf", FileTypeRefused),
        ("image/png", PDF, FileTypeRefused),
    ],
    ids=["empty", "type-not-allowed", "pdf-that-is-not", "png-that-is-a-pdf"],
)
async def test_a_refused_file_stores_nothing_and_decides_nothing(
    world: FakeWorld, content_type: str, data: bytes, error: type[Exception]
) -> None:
    nurse, conversation_id = await _conversation(world)
    before = dict(world.db.messages)

    with pytest.raises(error) as refused:
        await attach_file(
            world.services, nurse, AttachFile(conversation_id, content_type, data), allowed_types=ALLOWED
        )

    assert isinstance(refused.value, InvalidInput)
    assert [e.field for e in refused.value.errors] == ["file"]
    assert world.db.messages == before
    assert world.db.message_attachments == {}
    assert world.events("message.attach") == []


async def test_an_auditor_may_not_attach_and_another_organizations_staff_get_404(world: FakeWorld) -> None:
    nurse, conversation_id = await _conversation(world)
    message = await attach_file(
        world.services, nurse, AttachFile(conversation_id, "application/pdf", PDF), allowed_types=ALLOWED
    )
    auditor = world.actor(Role.AUDITOR, world.organization().id)
    stranger = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)

    with pytest.raises(Forbidden):
        await attach_file(
            world.services,
            auditor,
            AttachFile(conversation_id, "application/pdf", PDF),
            allowed_types=ALLOWED,
        )
    with pytest.raises(NotFound):
        await attach_file(
            world.services,
            stranger,
            AttachFile(conversation_id, "application/pdf", PDF),
            allowed_types=ALLOWED,
        )
    with pytest.raises(NotFound):
        await read_attachment(world.services, stranger, message.id, message.attachments[0].id)
    assert world.db.message_attachments.keys() == {message.attachments[0].id}


async def test_a_recalled_messages_file_is_no_longer_downloaded_and_its_post_is_cancelled(
    world: FakeWorld,
) -> None:
    nurse, conversation_id = await _conversation(world)
    message = await attach_file(
        world.services, nurse, AttachFile(conversation_id, "application/pdf", PDF), allowed_types=ALLOWED
    )
    attachment_id = message.attachments[0].id

    await recall_message(world.services, nurse, RecallMessage(message.id, "wrong patient"))

    assert PostAttachment(conversation_id, message.id, attachment_id) in world.db.cancelled_outbox
    assert world.db.outbox[-1] == RecallFromChannel(conversation_id, message.id)
    with pytest.raises(NotFound):
        await read_attachment(world.services, nurse, message.id, attachment_id)
    # the bytes stay in caremsg's table only, for the legal record
    assert world.db.message_attachments[attachment_id].data == PDF
