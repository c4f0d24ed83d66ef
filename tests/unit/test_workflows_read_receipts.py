"""Read receipts on fakes: marking a conversation read (allowed and refused, forward only, a message of
another conversation), chat clients' receipts, each member's receipt of a message and the unread
count. tests/api/test_read_receipts.py covers the same over HTTP and through the Sendbird emulator."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from engine.errors import Forbidden, InvalidInput, NotFound
from engine.model import DeliveryState, ReceiptState, Role
from engine.sms import CHANNEL_RECIPIENT
from engine.workflows.conversations import (
    StartConversation,
    get_conversation,
    list_conversations,
    send_message,
    start_conversation,
)
from engine.workflows.messaging import PROCESSED, ChatRead, chat_read, get_message
from engine.workflows.read_receipts import mark_read
from tests.support.fakes import FakeDeliveryRow, FakeWorld
from tests.support.worlds import ward


def _in_channel(world: FakeWorld, message_id: int, ts_ms: int) -> None:
    """The relay posted the message: its channel delivery is sent, with the provider's time."""
    for row_id, row in world.db.deliveries.items():
        if row.message_id == message_id and row.delivery.recipient == CHANNEL_RECIPIENT:
            posted = dataclasses.replace(row.delivery, state=DeliveryState.SENT, provider_ts_ms=ts_ms)
            world.db.deliveries[row_id] = FakeDeliveryRow(row.id, message_id, posted, row.updated_at)


async def test_a_member_marks_read_and_the_message_shows_read_for_them_only(world: FakeWorld) -> None:
    nurse, colleague, conversation_id, _ = await ward(world)
    first = await send_message(world.services, nurse, conversation_id, "Seen at 9.")
    second = await send_message(world.services, nurse, conversation_id, "BP stable.")
    _in_channel(world, first.id, 1_000)
    before = await get_conversation(world.services, colleague, conversation_id)

    state = await mark_read(world.services, colleague, conversation_id, first.id)
    one = await get_message(world.services, nurse, first.id)
    two = await get_message(world.services, nurse, second.id)
    after = await get_conversation(world.services, colleague, conversation_id)
    own = await get_conversation(world.services, nurse, conversation_id)

    assert before.conversation.unread_count == 2
    assert (state.mark.last_read_message_id, state.mark.source, state.unread_count) == (first.id, "api", 1)
    assert state.mark.read_at == world.clock()
    assert one.receipts is not None
    assert two.receipts is not None
    [receipt] = one.receipts  # every member but the sender
    assert (receipt.user_id, receipt.state, receipt.read_at) == (
        colleague.user_id,
        ReceiptState.READ,
        world.clock(),
    )
    assert receipt.delivered_at == datetime.fromtimestamp(1, UTC)
    assert [(r.user_id, r.state, r.read_at) for r in two.receipts] == [
        (colleague.user_id, ReceiptState.SENT, None)
    ]
    assert after.conversation.unread_count == 1
    assert own.conversation.unread_count == 0  # one's own messages are never unread
    assert [m.receipts is not None for m in after.messages] == [True, True]
    [event] = [e for e in world.events("conversation.read") if e.details.get("read_up_to") == first.id]
    assert (event.outcome, event.actor_id, event.resource_id) == (
        "success",
        colleague.user_id,
        str(conversation_id),
    )
    assert event.details["read_moved"] is True
    assert "Seen at 9." not in repr(world.events())


async def test_a_mark_only_moves_forward_and_repeating_it_changes_nothing(world: FakeWorld) -> None:
    nurse, colleague, conversation_id, _ = await ward(world)
    first = await send_message(world.services, nurse, conversation_id, "One.")
    second = await send_message(world.services, nurse, conversation_id, "Two.")
    forward = await mark_read(world.services, colleague, conversation_id, second.id)
    read_at = world.clock()
    world.clock.advance(seconds=60)

    again = await mark_read(world.services, colleague, conversation_id, second.id)
    back = await mark_read(world.services, colleague, conversation_id, first.id)

    assert forward.mark == again.mark == back.mark
    assert (back.mark.last_read_message_id, back.mark.read_at, back.unread_count) == (second.id, read_at, 0)
    moved = [e.details["read_moved"] for e in world.events("conversation.read") if "read_moved" in e.details]
    assert moved == [True, False, False]
    message = await get_message(world.services, nurse, first.id)
    assert message.receipts is not None
    assert [r.state for r in message.receipts] == [ReceiptState.READ]


async def test_a_message_of_another_of_ones_conversations_is_refused(world: FakeWorld) -> None:
    nurse, colleague, conversation_id, _ = await ward(world)
    second = await start_conversation(
        world.services,
        nurse,
        StartConversation(world.db.conversations[conversation_id].patient_id, "Other", [colleague.user_id]),
    )
    elsewhere = await send_message(world.services, nurse, second.id, "Elsewhere.")

    with pytest.raises(InvalidInput) as refused:
        await mark_read(world.services, colleague, conversation_id, elsewhere.id)
    with pytest.raises(InvalidInput) as nobodys:
        await mark_read(world.services, colleague, conversation_id, elsewhere.id + 1000)

    assert [(e.field, e.type) for e in refused.value.errors] == [("messageId", "not_found")]
    assert nobodys.value.errors == refused.value.errors
    assert world.db.reads == {}
    lookups = [e for e in world.events("conversation.read") if e.event == "lookup"]
    assert [(e.resource_type, e.resource_id, e.outcome) for e in lookups] == [
        ("message", str(elsewhere.id), "failure"),
        ("message", str(elsewhere.id + 1000), "failure"),
    ]


async def test_a_non_member_is_refused_and_another_organization_is_told_nothing_exists(
    world: FakeWorld,
) -> None:
    nurse, _, conversation_id, _ = await ward(world)
    message = await send_message(world.services, nurse, conversation_id, "Private.")
    colleague_not_member = world.actor(Role.CARE_TEAM_MEMBER, world.db.users[nurse.user_id].organization_id)
    stranger = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)
    auditor = world.actor(Role.AUDITOR, world.db.users[nurse.user_id].organization_id)

    with pytest.raises(Forbidden) as not_member:
        await mark_read(world.services, colleague_not_member, conversation_id, message.id)
    with pytest.raises(NotFound):
        await mark_read(world.services, stranger, conversation_id, message.id)
    with pytest.raises(Forbidden) as role:
        await mark_read(world.services, auditor, conversation_id, message.id)
    with pytest.raises(NotFound):
        await mark_read(world.services, nurse, conversation_id + 10_000, message.id)

    assert not_member.value.decision.reason == "not_conversation_member"
    assert role.value.decision.reason == "role_not_permitted"
    assert world.db.reads == {}
    denied = [e for e in world.events("conversation.read") if e.outcome == "denied"]
    assert {e.actor_id for e in denied} == {colleague_not_member.user_id, stranger.user_id, auditor.user_id}


async def test_a_chat_receipt_marks_read_up_to_the_last_message_in_the_channel_by_then(
    world: FakeWorld,
) -> None:
    nurse, colleague, conversation_id, _ = await ward(world)
    first = await send_message(world.services, nurse, conversation_id, "One.")
    second = await send_message(world.services, nurse, conversation_id, "Two.")
    third = await send_message(world.services, nurse, conversation_id, "Three.")
    _in_channel(world, first.id, 1_000)
    _in_channel(world, second.id, 2_000)
    _in_channel(world, third.id, 3_000)
    channel = world.db.conversations[conversation_id].channel_url
    colleague_chat = world.db.users[colleague.user_id].chat_user_id

    status = await chat_read(world.services, ChatRead(1, channel, ((colleague_chat, 2_500),)))
    late = await chat_read(world.services, ChatRead(2, channel, ((colleague_chat, 1_500),)))
    strangers = await chat_read(
        world.services, ChatRead(3, channel, (("ext_abc", 9_000), ("staff_none", 9_000)))
    )

    assert (status, late, strangers) == (PROCESSED, PROCESSED, PROCESSED)
    mark = world.db.reads[(conversation_id, colleague.user_id)]
    assert (mark.last_read_message_id, mark.source) == (second.id, "chat")
    assert mark.read_at == datetime.fromtimestamp(2.5, UTC)
    assert set(world.db.reads) == {(conversation_id, colleague.user_id)}
    third_now = await get_message(world.services, nurse, third.id)
    assert third_now.receipts is not None
    assert [r.state for r in third_now.receipts] == [ReceiptState.DELIVERED]
    chat_events = [e for e in world.events("conversation.read") if e.details.get("via") == "chat_app"]
    assert [(e.actor_id, e.details["read_up_to"], e.details["read_moved"]) for e in chat_events] == [
        (colleague.user_id, second.id, True),
        (colleague.user_id, first.id, False),
    ]
    assert {e.request_id for e in chat_events} == {"webhook-1", "webhook-2"}


async def test_a_chat_receipt_of_a_member_the_policy_no_longer_allows_is_not_recorded(
    world: FakeWorld,
) -> None:
    nurse, _, conversation_id, _ = await ward(world)
    message = await send_message(world.services, nurse, conversation_id, "One.")
    _in_channel(world, message.id, 1_000)
    partner = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)
    world.db.conversation_members[conversation_id] += (partner.user_id,)  # no consent covers them
    channel = world.db.conversations[conversation_id].channel_url

    await chat_read(
        world.services, ChatRead(1, channel, ((world.db.users[partner.user_id].chat_user_id, 5_000),))
    )

    assert world.db.reads == {}
    [denied] = [e for e in world.events("conversation.read") if e.actor_id == partner.user_id]
    assert (denied.outcome, denied.details["via"]) == ("denied", "chat_app")


async def test_unread_counts_of_the_list_are_the_callers_own(world: FakeWorld) -> None:
    nurse, colleague, conversation_id, _ = await ward(world)
    for text in ("One.", "Two.", "Three."):
        last = await send_message(world.services, nurse, conversation_id, text)
    await send_message(world.services, colleague, conversation_id, "Mine.")

    listed = await list_conversations(world.services, colleague, None, None)
    await mark_read(world.services, colleague, conversation_id, last.id)
    relisted = await list_conversations(world.services, colleague, None, None)
    nurse_list = await list_conversations(world.services, nurse, None, None)

    assert [c.unread_count for c in listed.items] == [3]
    assert [c.unread_count for c in relisted.items] == [0]
    assert [c.unread_count for c in nurse_list.items] == [1]


def test_a_failed_channel_post_shows_failed_to_members_who_did_not_read_it() -> None:
    from engine.model import Message, ReadMark, RecipientDelivery
    from engine.workflows.conversation_access import member_receipts

    now = datetime(2026, 12, 5, tzinfo=UTC)
    failed = RecipientDelivery(CHANNEL_RECIPIENT, "chat", DeliveryState.FAILED, "chat_unavailable", now)
    message = Message(10, 1, 7, "x", DeliveryState.FAILED, now, deliveries=(failed,))
    reads = {8: ReadMark(1, 8, 10, now, "api")}

    receipts = member_receipts(message, (7, 8, 9), reads)

    assert [(r.user_id, r.state) for r in receipts] == [(8, ReceiptState.READ), (9, ReceiptState.FAILED)]


async def test_only_an_active_members_receipt_delivers_a_message(world: FakeWorld) -> None:
    """A message is delivered when a member reads it: a receipt from anyone else in the channel
    (a stranger, a member the policy no longer allows, a deactivated member) leaves its channel
    delivery and its state ``sent``."""
    nurse, colleague, conversation_id, channel = await ward(world)
    message = await send_message(world.services, nurse, conversation_id, "One.")
    _in_channel(world, message.id, 1_000)
    world.db.messages[message.id] = dataclasses.replace(
        world.db.messages[message.id], state=DeliveryState.SENT
    )
    org = world.db.users[nurse.user_id].organization_id
    stranger = world.actor(Role.CARE_TEAM_MEMBER, org)
    partner = world.actor(Role.CARE_TEAM_MEMBER, world.organization().id)
    world.db.conversation_members[conversation_id] += (partner.user_id,)  # no consent covers them
    colleague_user = world.db.users[colleague.user_id]
    world.db.users[colleague.user_id] = dataclasses.replace(colleague_user, is_active=False)

    def chat_id(user_id: int) -> str:
        return world.db.users[user_id].chat_user_id

    def states() -> tuple[DeliveryState, DeliveryState]:
        [row] = [r for r in world.db.deliveries.values() if r.message_id == message.id]
        return row.delivery.state, world.db.messages[message.id].state

    readers = ("ext_abc", "caremsg_system", chat_id(stranger.user_id), chat_id(partner.user_id))
    await chat_read(world.services, ChatRead(1, channel, tuple((r, 5_000) for r in readers)))
    await chat_read(world.services, ChatRead(2, channel, ((chat_id(colleague.user_id), 5_000),)))
    unread = states()
    world.db.users[colleague.user_id] = colleague_user  # active again
    await chat_read(world.services, ChatRead(3, channel, ((chat_id(colleague.user_id), 5_000),)))

    assert unread == (DeliveryState.SENT, DeliveryState.SENT)
    assert states() == (DeliveryState.DELIVERED, DeliveryState.DELIVERED)
    assert set(world.db.reads) == {(conversation_id, colleague.user_id)}
