"""What inbound chat and SMS events do, on fakes: the messaging workflows over the split repositories
(conversations by channel, users by chat id, deliveries, opt-outs, webhook events).
tests/api/test_webhooks.py and test_sms_reply_routing.py cover the same from signed HTTP requests."""

from __future__ import annotations

import dataclasses

from engine.model import Actor, DeliveryState
from engine.sms import Keyword
from engine.workflows.messaging import (
    IGNORED,
    PROCESSED,
    ChatMessagePosted,
    ChatRead,
    InboundSms,
    chat_message_posted,
    chat_read,
    sms_received,
)
from tests.support.fakes import FakeWorld
from tests.support.worlds import ward


def _chat_id(world: FakeWorld, actor: Actor) -> str:
    return world.db.users[actor.user_id].chat_user_id


async def test_a_message_posted_in_the_chat_app_is_stored_once_and_read_receipts_deliver_it(
    world: FakeWorld,
) -> None:
    nurse, colleague, _, channel = await ward(world)
    posted = ChatMessagePosted(1, channel, _chat_id(world, nurse), 41, "Seen at 9.", 1_000)

    first = await chat_message_posted(world.services, posted)
    again = await chat_message_posted(world.services, dataclasses.replace(posted, event_id=2))
    read = await chat_read(world.services, ChatRead(3, channel, ((_chat_id(world, colleague), 2_000),)))

    [message] = world.db.messages.values()
    assert (first, again, read) == (PROCESSED, PROCESSED, PROCESSED)
    assert (message.text, message.chat_message_id, message.state) == (
        "Seen at 9.",
        41,
        DeliveryState.DELIVERED,
    )
    assert [(r.delivery.recipient, r.delivery.state) for r in world.db.deliveries.values()] == [
        ("channel", DeliveryState.DELIVERED)
    ]
    assert world.db.webhook_events == {1: PROCESSED, 2: PROCESSED, 3: PROCESSED}


async def test_events_about_an_unknown_channel_are_ignored_and_store_nothing(world: FakeWorld) -> None:
    nurse = (await ward(world)).nurse

    posted = await chat_message_posted(
        world.services, ChatMessagePosted(1, "caremsg_unknown", _chat_id(world, nurse), 41, "Hi", 1_000)
    )
    read = await chat_read(world.services, ChatRead(2, "caremsg_unknown", (("staff_x", 2_000),)))

    assert (posted, read) == (IGNORED, IGNORED)
    assert world.db.messages == {}
    assert world.db.webhook_events == {1: IGNORED, 2: IGNORED}


async def test_stop_and_start_from_an_unknown_number_are_kept_by_number_and_audited(world: FakeWorld) -> None:
    number = "+15550001111"

    stopped = await sms_received(world.services, InboundSms(1, "SM1", number, "STOP"))
    opted_out = dict(world.db.opt_outs)
    started = await sms_received(world.services, InboundSms(2, "SM2", number, "START"))
    chatter = await sms_received(world.services, InboundSms(3, "SM3", number, "hello?"))

    assert (stopped, started, chatter) == (PROCESSED, PROCESSED, IGNORED)
    assert (opted_out, world.db.opt_outs) == ({number: "SM1"}, {})
    assert [(e.event, e.details["changed"]) for e in world.events("sms.reply")] == [
        ("sms_opt_out", 1),
        ("sms_opt_in", 1),
    ]
    assert world.db.webhook_events == {1: PROCESSED, 2: PROCESSED, 3: IGNORED}


async def test_an_unknown_numbers_keyword_is_read_as_a_known_numbers_is_the_providers_first(
    world: FakeWorld,
) -> None:
    """Twilio's OptOutType decides for a number no conversation has texted too: a keyword configured
    at Twilio only (``ARRET``), an opt-in word caremsg does not list (``YES``); and caremsg's own
    reading of a body sees through what phones add around the word."""
    custom, opted_in, disguised = "+15550002222", "+15550003333", "+15550004444"
    fullwidth_stop = "\uff33\uff34\uff2f\uff30"

    outcomes = [
        await sms_received(
            world.services, InboundSms(1, "SM1", custom, "ARRET", provider_keyword=Keyword.STOP)
        ),
        await sms_received(world.services, InboundSms(2, "SM2", opted_in, "STOP")),
        await sms_received(
            world.services, InboundSms(3, "SM3", opted_in, "YES", provider_keyword=Keyword.START)
        ),
        await sms_received(world.services, InboundSms(4, "SM4", disguised, f"{fullwidth_stop}\u200b 🙏")),
        await sms_received(world.services, InboundSms(5, "SM5", disguised, "why stop?")),
    ]

    assert outcomes == [PROCESSED, PROCESSED, PROCESSED, PROCESSED, IGNORED]
    assert world.db.opt_outs == {custom: "SM1", disguised: "SM4"}
