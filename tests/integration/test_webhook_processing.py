"""Stored webhook events are handled once, however many processors hold them, against the real app,
PostgreSQL and the emulators.

A processor claims a batch under one lease; when handling takes longer than the lease, another
processor (another instance) claims the same events. The workflow takes the event's row in its own
transaction and does nothing unless the event is still pending, so the second handling does
nothing; and a processor skips the events of its batch that another has claimed since.

Shortened here to ``lease_seconds=1`` and a handler that waits 1.5 s first (as 50 events of 0.6 s
each would under the 30 s lease). Each test stops the app's own webhook processor and drives two of
its own with ``run_once``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any

import asyncpg
import pytest

from engine.inbound import InboundEvent, handle_inbound
from engine.workflows.messaging import ALREADY_HANDLED, PROCESSED
from handlers.api_messaging import messaging_key
from handlers.app import create_app
from handlers.keys import services_key, sessions_key
from handlers.settings import Settings
from integrations.sendbird_emulator import sendbird_json
from integrations.webhooks import (
    SENDBIRD,
    SMS,
    WebhookProcessor,
    inbound_sms_event,
    parse_stored_event,
    sendbird_event_key,
)
from tests.support.api import Api
from tests.support.messaging import CareTeam, care_team, staff_post

LEASE = 1.0


@pytest.fixture
async def api(aiohttp_client: Any, settings: Settings, db: asyncpg.Connection) -> Api:
    # The test's processors claim whatever is pending: events an earlier test (of this module, whose
    # apps' processors are stopped, or of another on this worker's database) left are set aside.
    await db.execute("UPDATE webhook_events SET status = 'processed' WHERE status = 'pending'")
    api = Api(await aiohttp_client(create_app(settings)))
    for task in asyncio.all_tasks():
        if task.get_name() == "webhook-processor":  # this app's: the test's processors do the work
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return api


class Handler:
    """The app's own handling of inbound events, after ``delay`` seconds; remembers what it returned."""

    def __init__(self, api: Api, delay: float = 0.0) -> None:
        self._handle = functools.partial(handle_inbound, api.app[services_key])
        self._delay = delay
        self.answers: list[str] = []

    async def __call__(self, event: InboundEvent) -> str:
        await asyncio.sleep(self._delay)
        answer = await self._handle(event)
        self.answers.append(answer)
        return answer


async def _sms(api: Api, team: CareTeam, sid: str, text: str) -> None:
    event, body = inbound_sms_event(sid, team.phone, text, keyword=None, provider_answers_keywords=True)
    assert await api.app[messaging_key].inbox.store(SMS, event, body)


async def _outlasted(api: Api) -> tuple[Handler, Handler]:
    """Processor A claims what is stored and is slower than its lease; B claims it all again once
    that lease has run out. Returns their handlers (what each handed to the workflows)."""
    slow, quick = Handler(api, delay=1.5), Handler(api)
    a = WebhookProcessor(api.app[sessions_key], slow, lease_seconds=LEASE)
    b = WebhookProcessor(api.app[sessions_key], quick, lease_seconds=LEASE)
    claimed_by_a = asyncio.create_task(a.run_once())
    await asyncio.sleep(LEASE * 1.2)
    assert await b.run_once() >= 1
    assert await claimed_by_a >= 1
    return slow, quick


async def test_an_inbound_sms_whose_lease_ran_out_mid_handling_is_posted_once(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    await _sms(api, team, "SMleaseonce0001", "Running late, 10 min")

    slow, quick = await _outlasted(api)

    posts = await db.fetchval(
        "SELECT count(*) FROM outbox WHERE kind = 'post_sms_reply' AND payload->>'dedup_id' = $1",
        "SMleaseonce0001",
    )
    assert posts == 1
    assert (quick.answers, slow.answers) == ([PROCESSED], [ALREADY_HANDLED])
    status = await db.fetchval("SELECT status FROM webhook_events WHERE dedupe_key = 'sms:SMleaseonce0001'")
    assert status == "processed"


async def test_a_chat_post_whose_lease_ran_out_mid_handling_is_stored_and_texted_once(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    nurse_chat = await db.fetchval("SELECT chat_user_id FROM users WHERE id = $1", team.nurse.id)
    raw = sendbird_json(staff_post(team, nurse_chat, message_id=987654321077, text="Call the clinic today"))
    assert await api.app[messaging_key].inbox.store(SENDBIRD, sendbird_event_key(raw), raw)

    slow, quick = await _outlasted(api)

    messages = await db.fetch(
        "SELECT id FROM messages WHERE conversation_id = $1 AND chat_message_id = 987654321077",
        team.conversation_id,
    )
    assert len(messages) == 1
    queued = await db.fetchval(
        "SELECT count(*) FROM outbox WHERE kind = 'send_sms' AND message_id = $1", messages[0]["id"]
    )
    assert queued == 1
    assert (quick.answers, slow.answers) == ([PROCESSED], [ALREADY_HANDLED])


async def test_two_handlings_of_one_event_at_the_same_moment_do_it_once(
    api: Api, db: asyncpg.Connection
) -> None:
    """The second workflow to take the event waits for the first one's transaction, then finds it
    handled."""
    team = await care_team(api)
    await _sms(api, team, "SMsamemoment0001", "On my way")
    stored = await db.fetchrow(
        "SELECT id, category, body FROM webhook_events WHERE dedupe_key = 'sms:SMsamemoment0001'"
    )
    event = parse_stored_event(stored["id"], SMS, stored["category"], stored["body"])
    assert event is not None
    handle = Handler(api)

    answers = await asyncio.gather(handle(event), handle(event))

    assert sorted(answers) == sorted([PROCESSED, ALREADY_HANDLED])
    posts = await db.fetchval(
        "SELECT count(*) FROM outbox WHERE kind = 'post_sms_reply' AND payload->>'dedup_id' = $1",
        "SMsamemoment0001",
    )
    assert posts == 1


async def test_a_processor_skips_the_events_of_its_batch_another_processor_claimed_since(
    api: Api, db: asyncpg.Connection
) -> None:
    """A's lease on a batch of two runs out while it handles the first; B claims both and handles
    them; A then finds the first handled and does not hand the second to its workflows at all."""
    team = await care_team(api)
    await _sms(api, team, "SMbatchfirst0001", "First")
    await _sms(api, team, "SMbatchsecond001", "Second")

    slow, quick = await _outlasted(api)

    assert quick.answers == [PROCESSED, PROCESSED]
    assert slow.answers == [ALREADY_HANDLED]  # the second was never handed to A's workflows
    posts = await db.fetch(
        "SELECT payload->>'dedup_id' AS sid FROM outbox WHERE kind = 'post_sms_reply'"
        " AND payload->>'dedup_id' IN ('SMbatchfirst0001', 'SMbatchsecond001') ORDER BY id"
    )
    assert [p["sid"] for p in posts] == ["SMbatchfirst0001", "SMbatchsecond001"]
