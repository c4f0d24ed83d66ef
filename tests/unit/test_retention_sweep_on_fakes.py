"""The retention sweep on fakes, with a fake clock: content older than its organization's lifespan
(policies/retention.toml) is emptied, marked and audited without content, its channel copy deleted
through the outbox (a recalled message's copy left already; its legal-record text goes too);
another organization's lifespan, "keep", a legal hold, and a second sweep each leave content alone.
Content retention deleted cannot be recalled (409), can be corrected, and its legal record says when.
tests/integration/test_retention_sweep.py covers the SQL, concurrency and the emulator."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import pytest

from engine.effects import DeleteFromChannel
from engine.errors import ContentDeleted
from engine.model import Actor, RiskLevel, Role
from engine.policy import Policy
from engine.workflows.conversations import StartConversation, send_message, start_conversation
from engine.workflows.messaging import get_message
from engine.workflows.patients import RegisterPatient, register_patient
from engine.workflows.recalls import (
    CorrectMessage,
    RecallMessage,
    correct_message,
    read_recalled,
    recall_message,
)
from engine.workflows.retention import SWEEP, retention_plan, sweep_retention
from integrations.policy_files import read_policy_sources
from tests.support.fakes import FakeWorld

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
TEXT = "Ann Lee's potassium is 6.1"


def _retention(world: FakeWorld, text: str) -> None:
    sources = dataclasses.replace(read_policy_sources(POLICY_DIR), retention=text)
    world.services.policy.swap(Policy.from_sources(sources))


async def _sent(world: FakeWorld, org: int | None = None) -> tuple[Actor, int, int, int]:
    """A nurse's message about her patient: (nurse, patient id, conversation id, message id)."""
    nurse = world.actor(Role.CARE_TEAM_MEMBER, org or world.organization().id)
    patient = await register_patient(
        world.services, nurse, RegisterPatient("Ann", "Lee", RiskLevel.LOW, date(1990, 1, 1))
    )
    conversation = await start_conversation(
        world.services, nurse, StartConversation(patient.id, "Discharge", [nurse.user_id])
    )
    message = await send_message(world.services, nurse, conversation.id, TEXT)
    return nurse, patient.id, conversation.id, message.id


async def test_the_shipped_policy_keeps_every_message_content(world: FakeWorld) -> None:
    nurse, _, _, message_id = await _sent(world)
    world.clock.advance(days=36_500)
    assert await retention_plan(world.services) == {}
    assert await sweep_retention(world.services) == 0
    assert (await get_message(world.services, nurse, message_id)).text == TEXT


async def test_expired_content_is_emptied_marked_audited_and_deleted_from_the_channel(
    world: FakeWorld,
) -> None:
    _retention(world, "[default]\ncontent_days = 30\n")
    nurse, patient_id, conversation_id, message_id = await _sent(world)
    world.clock.advance(days=29, hours=23)
    assert await sweep_retention(world.services) == 0
    world.clock.advance(hours=2)
    assert await retention_plan(world.services) == {nurse.organization_id: 1}
    world.db.outbox.clear()

    assert await sweep_retention(world.services) == 1

    read = await get_message(world.services, nurse, message_id)
    assert (read.text, read.content_deleted, read.sender_id) == ("", True, nurse.user_id)
    assert world.db.outbox == [DeleteFromChannel(conversation_id, message_id)]
    [record] = [e for e in world.db.audit if e.workflow == SWEEP]
    assert (record.event, record.resource_id, record.patient_id, record.actor_id) == (
        "message.content_deleted",
        str(message_id),
        patient_id,
        None,
    )
    assert record.organization_id == nurse.organization_id
    assert record.details["content_days"] == 30
    assert TEXT not in repr(record)
    assert await sweep_retention(world.services) == 0  # deleted once, audited once
    assert await retention_plan(world.services) == {}


async def test_an_organizations_own_lifespan_and_keep_win_over_the_default(world: FakeWorld) -> None:
    kept, longer = world.organization().id, world.organization().id
    _retention(
        world,
        f'[default]\ncontent_days = 30\n[organization.{kept}]\ncontent_days = "keep"\n'
        f"[organization.{longer}]\ncontent_days = 60\n",
    )
    nurse_kept, _, _, kept_id = await _sent(world, kept)
    nurse_longer, _, _, longer_id = await _sent(world, longer)
    nurse_other, _, _, other_id = await _sent(world)
    world.clock.advance(days=45)

    assert await retention_plan(world.services) == {nurse_other.organization_id: 1}
    assert await sweep_retention(world.services) == 1
    assert (await get_message(world.services, nurse_other, other_id)).content_deleted
    assert not (await get_message(world.services, nurse_kept, kept_id)).content_deleted
    assert not (await get_message(world.services, nurse_longer, longer_id)).content_deleted
    world.clock.advance(days=20)
    assert await sweep_retention(world.services) == 1
    assert (await get_message(world.services, nurse_longer, longer_id)).content_deleted


@pytest.mark.parametrize("on", ["patient", "conversation"])
async def test_a_legal_hold_keeps_content_while_it_lasts(world: FakeWorld, on: str) -> None:
    _retention(world, "[default]\ncontent_days = 1\n")
    nurse, patient_id, conversation_id, message_id = await _sent(world)
    hold = (patient_id, None) if on == "patient" else (None, conversation_id)
    world.db.legal_holds.append(hold)
    world.clock.advance(days=2)

    assert await retention_plan(world.services) == {}
    assert await sweep_retention(world.services) == 0
    assert (await get_message(world.services, nurse, message_id)).text == TEXT

    world.db.legal_holds.remove(hold)  # lifted
    assert await sweep_retention(world.services) == 1


async def test_a_recalled_message_loses_its_legal_record_text_but_not_the_recall(world: FakeWorld) -> None:
    _retention(world, "[default]\ncontent_days = 1\n")
    nurse, _, _, message_id = await _sent(world)
    await recall_message(world.services, nurse, RecallMessage(message_id, "wrong patient"))
    world.db.outbox.clear()
    world.clock.advance(days=2)

    assert await sweep_retention(world.services) == 1

    record = world.db.message_recalls[message_id]
    assert (record.text, record.reason, record.recalled_by) == ("", "wrong patient", nurse.user_id)
    assert world.db.outbox == []  # its copy left the channel with the recall
    [audited] = [e for e in world.db.audit if e.workflow == SWEEP]
    assert audited.details["recalled"] is True


async def test_a_sweep_takes_a_batch_at_a_time(world: FakeWorld) -> None:
    _retention(world, "[default]\ncontent_days = 1\n")
    nurse, _, conversation_id, _ = await _sent(world)
    for _ in range(2):
        await send_message(world.services, nurse, conversation_id, TEXT)
    world.clock.advance(days=1, minutes=1)
    assert await sweep_retention(world.services, limit=2) == 2
    assert await sweep_retention(world.services, limit=2) == 1
    assert await sweep_retention(world.services, limit=2) == 0


# --- recall and correction of content retention deleted ------------------------------------------


async def test_a_message_whose_content_was_deleted_cannot_be_recalled_and_nothing_is_recorded(
    world: FakeWorld,
) -> None:
    _retention(world, "[default]\ncontent_days = 1\n")
    nurse, _, _, message_id = await _sent(world)
    officer = world.actor(Role.COMPLIANCE_OFFICER, nurse.organization_id)  # may recall at any time
    world.clock.advance(days=2)
    assert await sweep_retention(world.services) == 1

    with pytest.raises(ContentDeleted):
        await recall_message(world.services, officer, RecallMessage(message_id, "wrong patient"))

    assert message_id not in world.db.message_recalls
    read = await get_message(world.services, nurse, message_id)
    assert (read.recalled, read.content_deleted) == (False, True)


async def test_a_message_whose_content_was_deleted_can_still_be_corrected(world: FakeWorld) -> None:
    _retention(world, "[default]\ncontent_days = 1\n")
    nurse, _, _, message_id = await _sent(world)
    world.clock.advance(days=2)
    assert await sweep_retention(world.services) == 1

    correction = await correct_message(world.services, nurse, CorrectMessage(message_id, "K+ was 4.1"))

    assert (correction.corrects_message_id, correction.text) == (message_id, "K+ was 4.1")
    assert (await get_message(world.services, nurse, message_id)).corrected_by_message_id == correction.id


async def test_the_legal_record_says_when_retention_deleted_the_recalled_text(world: FakeWorld) -> None:
    _retention(world, "[default]\ncontent_days = 1\n")
    nurse, _, _, message_id = await _sent(world)
    officer = world.actor(Role.COMPLIANCE_OFFICER, nurse.organization_id)
    await recall_message(world.services, nurse, RecallMessage(message_id, "wrong patient"))
    assert (await read_recalled(world.services, officer, message_id)).content_deleted_at is None
    world.clock.advance(days=2)
    swept_at = world.services.clock()
    assert await sweep_retention(world.services) == 1

    record = await read_recalled(world.services, officer, message_id)

    assert (record.text, record.content_deleted_at, record.reason) == ("", swept_at, "wrong patient")
    reads = [e for e in world.db.audit if e.workflow == "message.read_recalled"]
    assert [e.details.get("content_deleted") for e in reads] == [None, 1]
