"""Durable delivery through Sendbird outages and relay failures, against the real app, PostgreSQL
and the emulator over HTTP.

- Sendbird answers 503 for a while: every message accepted meanwhile is delivered once afterwards.
- Sendbird accepts every request for a while but the answers are lost: still exactly once.
- A relay is killed while its request hangs; another relay finishes the job: still exactly once.
- Two relays work one database at the same time: every message is posted exactly once.

Every test runs once per way Sendbird may answer a repeated ``dedup_id`` (undocumented, see
``integrations.sendbird_emulator.DedupMode``), and checks exactly-once on the emulator's record:
the relay must not rely on that answer. (A PostgreSQL restart is in test_postgres_restart.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from handlers.api_messaging import messaging_key
from handlers.app import create_app
from handlers.keys import chat_key, sessions_key
from handlers.settings import Settings
from integrations.relay import OutboxRelay, RelaySettings
from integrations.sendbird_emulator import DEDUP_MODES, DedupMode
from tests.support.api import Api
from tests.support.messaging import (
    care_team,
    emulator,
    send,
    settled_deliveries,
    stop_app_relay,
    text_requests,
    texts,
    twilio,
)
from tests.support.polling import eventually, settled

N = 10
#: Longer than any test: an outage, a drop or a hang lasts until the test ends it (``clear``,
#: ``release_hangs``) once what it is waiting for has happened, not for a fixed time.
UNTIL_ENDED = 60.0


@pytest.fixture(params=DEDUP_MODES)
def dedup_mode(request: pytest.FixtureRequest) -> DedupMode:
    mode: DedupMode = request.param
    return mode


@pytest.fixture
async def api(aiohttp_client: Any, settings: Settings, dedup_mode: DedupMode) -> Api:
    api = Api(await aiohttp_client(create_app(settings)))
    emulator(api).dedup_mode = dedup_mode
    return api


class CountingChat:
    """The app's chat gateway, counting the messages this relay posted (a wrapper, not a mock)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.posted = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def send_message(self, *args: Any, **kwargs: Any) -> Any:
        sent = await self.inner.send_message(*args, **kwargs)
        self.posted += 1
        return sent


def _relay(api: Api, chat: Any = None) -> OutboxRelay:
    return OutboxRelay(
        api.app[sessions_key],
        chat or api.app[chat_key],
        RelaySettings(poll_interval=0.05, base_backoff=0.05, max_backoff=0.5, batch_size=1, lease_seconds=30),
        executors=api.app[messaging_key].outbox_kinds,
    )


def _posted_once(api: Api, channel_url: str, message_ids: list[int]) -> bool:
    in_chat = emulator(api).messages(channel_url)
    return sorted(m.dedup_id or "" for m in in_chat) == sorted(f"caremsg_msg_{i}" for i in message_ids)


async def _recorded_chat_ids(api: Api, message_ids: list[int]) -> list[int]:
    async with api.app[sessions_key]() as session:
        rows = await session.execute(
            text("SELECT chat_message_id FROM messages WHERE id = ANY(:ids) ORDER BY id"),
            {"ids": message_ids},
        )
        return [r[0] for r in rows]


async def test_messages_accepted_during_a_sendbird_outage_are_delivered_exactly_once_afterwards(
    api: Api,
) -> None:
    team = await care_team(api)
    channel = team.conversation["channelUrl"]
    path = f"/v3/group_channels/{channel}/messages"
    emulator(api).faults.fail_for(UNTIL_ENDED)  # every chat request answers 503 until the outage ends
    twilio(api).state.faults.fail_for(UNTIL_ENDED)  # and every text too

    ids = []
    for i in range(N):
        status, accepted = await send(api, team.peer, team.conversation_id, f"message {i}")
        assert status == 202, accepted
        ids.append(accepted["id"])

    # The outage lasts until the relay was refused and tried again, for a post (3 requests: a post, a
    # read of the channel after its 503, the next attempt's first request) and for a text.
    def tried() -> int:
        return len([r for r in emulator(api).received if r.path == path])

    await eventually(lambda: settled(tried() >= 3), "a post refused and tried again")
    await eventually(lambda: settled(len(text_requests(api, team.phone)) >= 2), "a text refused twice")
    assert emulator(api).messages(channel) == []
    assert texts(api, team.phone) == []
    emulator(api).faults.clear()
    twilio(api).state.faults.clear()

    for message_id in ids:
        deliveries = await settled_deliveries(api, team.peer, message_id)
        assert [d["state"] for d in deliveries] == ["sent", "sent"]
    assert _posted_once(api, channel, ids)
    assert [m.message for m in emulator(api).messages(channel)] == [f"message {i}" for i in range(N)]
    assert len(texts(api, team.phone)) == N
    assert len(emulator(api).requests("POST", path)) > N  # the refused posts were tried again
    assert len(text_requests(api, team.phone)) > N  # and the refused texts


async def test_messages_whose_answers_are_lost_are_found_in_the_channel_and_not_posted_again(
    api: Api,
) -> None:
    team = await care_team(api)
    channel = team.conversation["channelUrl"]
    path = f"/v3/group_channels/{channel}/messages"
    ids = []
    for i in range(3):
        # Accept-then-drop: every request takes effect, no answer comes back; until the post has
        # landed and the relay's next request about it was lost as well.
        emulator(api).faults.drop_for(UNTIL_ENDED)
        before = len([r for r in emulator(api).received if r.path == path])
        status, accepted = await send(api, team.peer, team.conversation_id, f"message {i}")
        assert status == 202, accepted
        ids.append(accepted["id"])

        async def two_answers_lost(landed: int = i + 1, before: int = before) -> bool:
            requests = len([r for r in emulator(api).received if r.path == path]) - before
            return len(emulator(api).messages(channel)) >= landed and requests >= 2

        await eventually(two_answers_lost, "the post to land and the next request to be lost too")
        emulator(api).faults.clear()
        await settled_deliveries(api, team.peer, accepted["id"])

    assert _posted_once(api, channel, ids)
    assert [m.message for m in emulator(api).messages(channel)] == [f"message {i}" for i in range(3)]
    # Each post went out once, was found in the channel afterwards and its Sendbird id recorded.
    assert len(emulator(api).requests("POST", path)) == 3
    reads = [r for r in emulator(api).received if r.method == "GET" and r.path == path]
    assert len(reads) >= 3
    stored = [m.message_id for m in emulator(api).messages(channel)]
    assert await _recorded_chat_ids(api, ids) == stored


async def test_a_relay_killed_mid_delivery_is_finished_by_another_exactly_once(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    channel = team.conversation["channelUrl"]
    path = f"/v3/group_channels/{channel}/messages"
    emulator(api).faults.hang_next(UNTIL_ENDED)  # the post reaches Sendbird, which takes its time

    status, accepted = await send(api, team.peer, team.conversation_id, "mid-flight")
    assert status == 202, accepted
    await eventually(lambda: _async(emulator(api).requests("POST", path)), "the post to be in flight")
    await stop_app_relay(api.app)  # killed while waiting for the answer
    emulator(api).faults.release_hangs()  # then Sendbird gets to the post
    # The killed relay's lease runs out a minute later, long after its request ended one way or the
    # other (here: it took effect). Wait for that, then move the lease instead of waiting for it.
    await eventually(lambda: _async(emulator(api).messages(channel)), "the held post to take effect")
    await db.execute("UPDATE outbox SET lease_until = now() WHERE message_id = $1", accepted["id"])

    task = asyncio.create_task(_relay(api).run())
    try:
        deliveries = await settled_deliveries(api, team.peer, accepted["id"])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    assert deliveries[0]["state"] == "sent"
    assert _posted_once(api, channel, [accepted["id"]])
    # Not posted again: the second relay read the channel, found the post and recorded its id.
    assert len(emulator(api).requests("POST", path)) == 1
    assert await _recorded_chat_ids(api, [accepted["id"]]) == [emulator(api).messages(channel)[0].message_id]


async def test_two_relays_on_one_database_post_every_message_exactly_once(api: Api) -> None:
    team = await care_team(api)
    status, other = await api.call(
        "POST", "/api/conversations", team.peer, json={"title": "Second", "patientId": team.patient_id}
    )
    assert status == 201, other
    await eventually(lambda: _channel_ready(api, team.peer, other["id"]), "the second channel")
    await stop_app_relay(api.app)
    ids: dict[str, list[int]] = {team.conversation["channelUrl"]: [], other["channelUrl"]: []}
    for i in range(N):
        for conversation_id, channel in (
            (team.conversation_id, team.conversation["channelUrl"]),
            (other["id"], other["channelUrl"]),
        ):
            status, accepted = await send(api, team.peer, conversation_id, f"message {i}")
            assert status == 202, accepted
            ids[channel].append(accepted["id"])
    emulator(api).faults.hang_next(UNTIL_ENDED)  # holds one relay on one message while the other works
    first, second = CountingChat(api.app[chat_key]), CountingChat(api.app[chat_key])

    tasks = [asyncio.create_task(_relay(api, chat).run()) for chat in (first, second)]
    try:
        await eventually(lambda: settled(first.posted + second.posted), "the other relay to post meanwhile")
        emulator(api).faults.release_hangs()
        for message_ids in ids.values():
            for message_id in message_ids:
                await settled_deliveries(api, team.peer, message_id)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    for channel, message_ids in ids.items():
        assert _posted_once(api, channel, message_ids)
        assert [m.message for m in emulator(api).messages(channel)] == [f"message {i}" for i in range(N)]
        assert len(emulator(api).requests("POST", f"/v3/group_channels/{channel}/messages")) == N
    assert first.posted + second.posted == 2 * N
    assert first.posted > 0
    assert second.posted > 0
    assert len(texts(api, team.phone)) == N  # the first conversation's external participant


async def _channel_ready(api: Api, who: Any, conversation_id: int) -> bool:
    status, body = await api.call("GET", f"/api/conversations/{conversation_id}", who)
    return status == 200 and body["channelState"] == "ready"


async def _async(value: Any) -> Any:
    return value
