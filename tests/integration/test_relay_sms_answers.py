"""The relay's answers to a number's own texts, against the real app, PostgreSQL and the Twilio
emulator over HTTP: the question which conversation a reply means is decided again right before it
is texted (engine.facts.answer_refusal), so a number that opted out after it was queued is never
texted, whatever the carrier would have done; the entry is cancelled and on record.

Each test stops the app's own relay and drives one of its own with ``run_once``.
"""

from __future__ import annotations

from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from handlers.app import create_app
from handlers.settings import Settings
from tests.support.api import Api
from tests.support.messaging import (
    care_team,
    receive_sms,
    stop_app_relay,
    text_relay,
    twilio,
    unique_phone,
    wire_webhooks,
)
from tests.support.polling import eventually


@pytest.fixture
async def api(aiohttp_client: Any, settings: Settings) -> Api:
    return Api(await aiohttp_client(create_app(settings)))


def _requests_to(api: Api, phone: str) -> int:
    """How many texts to ``phone`` caremsg asked the provider for (refused ones too)."""
    return sum(1 for _, _, form in twilio(api).state.received if form.get("To") == phone)


async def test_a_question_queued_before_the_number_opted_out_is_cancelled_not_sent(
    api: Api, db: asyncpg.Connection
) -> None:
    wire_webhooks(api)
    phone = unique_phone()
    first, second = await care_team(api, phones=(phone,)), await care_team(api, phones=(phone,))
    conversations = [first.conversation_id, second.conversation_id]
    await stop_app_relay(api.app)
    before = _requests_to(api, phone)

    async def question() -> int | None:
        found = await db.fetchval(
            "SELECT id FROM outbox WHERE kind = 'send_sms' AND conversation_id = ANY($1::int[])"
            " AND payload ? 'reply_codes'",
            conversations,
        )
        return int(found) if found is not None else None

    receive_sms(api, phone, "Which one is this?")  # two conversations, no code: held, asked back
    asked = await eventually(question, "the question which conversation to be queued")

    async def opted_out() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM sms_opt_outs WHERE phone_number = $1", phone))

    receive_sms(api, phone, "STOP")  # the opt-out is on record before any relay takes the question
    await eventually(opted_out, "the opt-out to be on record")

    relay = text_relay(api)

    async def done() -> bool:
        await relay.run_once()
        status = await db.fetchval("SELECT status FROM outbox WHERE id = $1", asked)
        return status != "pending"

    await eventually(done, "the relay to settle the question")

    assert _requests_to(api, phone) == before  # never asked of the provider (no 21610 relied on)
    row = await db.fetchrow("SELECT status, last_error FROM outbox WHERE id = $1", asked)
    assert tuple(row) == ("cancelled", "opted_out")
    record = await db.fetchrow(
        "SELECT outcome, reason FROM audit_events WHERE workflow = 'delivery.send_sms'"
        " AND details ->> 'outbox_id' = $1",
        str(asked),
    )
    assert tuple(record) == ("failure", "opted_out")
