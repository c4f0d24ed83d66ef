"""The outbox relay's batches, against the real app, PostgreSQL and the emulator over HTTP.

- Conversations are delivered side by side, each one's messages strictly in the order accepted.
- A wave is settled in one transaction, with exactly one audit record per entry it finishes.
- A settle that fails loses nothing: kept and settled again without posting again; or, if it keeps
  failing, given back and delivered again, which the chat's dedup id makes harmless.
- A relay whose lease ran out settles nothing that another relay has claimed since.
- Within a batch, a conversation's later entries wait for an earlier one that must be retried: one
  claim takes a conversation's queue, and a retry in its middle gives the rest back untried, to go
  out in order after it.

Each test stops the app's own relay and drives one of its own with ``run_once``.

Longer than 400 lines because every test here drives the same relay against the same app and
emulators, with the same helpers to accept messages and read back what was posted and settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from structlog.testing import capture_logs

from engine.errors import ChatUnavailable
from engine.ports import ChatGateway
from handlers.api_messaging import messaging_key
from handlers.app import create_app
from handlers.keys import chat_key, sessions_key
from handlers.settings import Settings
from integrations.db.operations import outbox_backlog
from integrations.relay import TEXT_KINDS, OutboxRelay, RelaySettings
from integrations.sendbird_emulator import DEDUP_MODES, DedupMode, ReceivedRequest
from tests.support.api import Api, Person
from tests.support.messaging import (
    UNTIL_RELEASED,
    care_team,
    emulator,
    send,
    stop_app_relay,
    texts,
    twilio,
)
from tests.support.polling import eventually, settled


@pytest.fixture
async def api(aiohttp_client: Any, settings: Settings) -> Api:
    return Api(await aiohttp_client(create_app(settings)))


@pytest.fixture
async def impatient_sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions that give up waiting for a row lock after 100 ms (a settle that cannot commit)."""
    engine = create_async_engine(database_url, connect_args={"server_settings": {"lock_timeout": "100"}})
    try:
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()


def _relay(
    api: Api,
    sessions: async_sessionmaker[AsyncSession] | None = None,
    chat: ChatGateway | None = None,
    **settings: Any,
) -> OutboxRelay:
    return OutboxRelay(
        sessions or api.app[sessions_key],
        chat or api.app[chat_key],
        RelaySettings(**{"poll_interval": 0.05, "base_backoff": 0.05, "max_backoff": 0.5, **settings}),
        executors=api.app[messaging_key].outbox_kinds,
        jitter=lambda cap: cap,
    )


async def _conversations(api: Api, count: int) -> tuple[Person, list[dict[str, Any]]]:
    """A nurse with ``count`` conversations whose channels are ready; then the app's relay stops."""
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    patient_id = await api.patient(nurse)
    conversations = []
    for i in range(count):
        status, created = await api.call(
            "POST", "/api/conversations", nurse, json={"title": f"Conversation {i}", "patientId": patient_id}
        )
        assert status == 201, created
        conversations.append(created)
    for conversation in conversations:

        async def ready(conversation_id: int = conversation["id"]) -> bool:
            status, body = await api.call("GET", f"/api/conversations/{conversation_id}", nurse)
            return status == 200 and bool(body["channelState"] == "ready")

        await eventually(ready, "the channel to be ready")
    await stop_app_relay(api.app)
    return nurse, conversations


async def _accepted(api: Api, nurse: Person, conversation_id: int, text: str) -> int:
    status, accepted = await send(api, nurse, conversation_id, text)
    assert status == 202, accepted
    return int(accepted["id"])


async def _work_off(
    relay: OutboxRelay, db: asyncpg.Connection, message_ids: Sequence[int], *, impatient: bool = False
) -> None:
    """Run the relay until none of these messages' outbox entries is pending. An ``impatient``
    relay's round that gave up waiting 100 ms for a row lock (another transaction's, on a loaded
    machine) is tried again, as its next poll would."""

    async def settled() -> bool:
        with contextlib.suppress(*((DBAPIError,) if impatient else ())):
            await relay.run_once()
        pending = await db.fetchval(
            "SELECT count(*) FROM outbox WHERE message_id = ANY($1::int[]) AND status = 'pending'",
            list(message_ids),
        )
        return bool(pending == 0)

    await eventually(settled, "the relay to settle every entry")


def _posts(api: Api, channel_url: str) -> list[ReceivedRequest]:
    return emulator(api).requests("POST", f"/v3/group_channels/{channel_url}/messages")


async def _audit(db: asyncpg.Connection, message_ids: Sequence[int]) -> list[asyncpg.Record]:
    return await db.fetch(  # type: ignore[no-any-return]
        "SELECT resource_id, outcome, reason, details, xmin::text AS tx FROM audit_events"
        " WHERE workflow = 'delivery.send_message' AND resource_id = ANY($1::text[]) ORDER BY id",
        [str(i) for i in message_ids],
    )


async def test_conversations_are_delivered_side_by_side_each_in_the_order_its_messages_were_accepted(
    api: Api, db: asyncpg.Connection, patient_chat: ChatGateway
) -> None:
    nurse, conversations = await _conversations(api, 3)
    written: dict[str, list[str]] = {c["channelUrl"]: [] for c in conversations}
    ids = []
    for i in range(3):
        for c in conversations:
            ids.append(await _accepted(api, nurse, c["id"], f"{c['title']}, message {i}"))
            written[c["channelUrl"]].append(f"{c['title']}, message {i}")
    # The first post is held until the other conversations' first posts are in (the relay's client
    # waits for that, however long it takes).
    emulator(api).faults.hang_next(UNTIL_RELEASED)

    async def release_once_the_others_are_posted() -> None:
        channels = [c["channelUrl"] for c in conversations]
        await eventually(
            lambda: settled(len([url for url in channels if emulator(api).messages(url)]) >= 2),
            "two conversations posted while the first post is held",
        )
        emulator(api).faults.release_hangs()

    releaser = asyncio.create_task(release_once_the_others_are_posted())
    try:
        await _work_off(_relay(api, chat=patient_chat, concurrency=4), db, ids)
    finally:
        emulator(api).faults.release_hangs()
        await releaser

    for channel_url, wanted in written.items():
        assert [m.message for m in emulator(api).messages(channel_url)] == wanted
        assert [r.body["message"] for r in _posts(api, channel_url)] == wanted  # each posted once, in order
    # Only this test's channels: a message an earlier test left pending may be posted by this relay.
    paths = {f"/v3/group_channels/{url}/messages" for url in written}
    posts = [r for r in emulator(api).received if r.method == "POST" and r.path in paths]
    first, second = posts[0], posts[1]
    assert first.path != second.path  # the hung conversation's next message waited for it
    stored = {m.message: m.message_id for url in written for m in emulator(api).messages(url)}
    # The second post went through while the first was still held: delivery was concurrent.
    assert stored[second.body["message"]] < stored[first.body["message"]]


async def test_a_wave_is_settled_in_one_transaction_with_one_audit_record_per_entry(
    api: Api, db: asyncpg.Connection
) -> None:
    nurse, conversations = await _conversations(api, 4)
    ids = [await _accepted(api, nurse, c["id"], "Please call the clinic.") for c in conversations]
    # The last conversation's channel is gone at Sendbird: posting into it fails for good.
    emulator(api).channels.pop(conversations[3]["channelUrl"])
    emulator(api).faults.fail_next(1)  # the first post (one in flight: the first message's) gets 503

    await _work_off(_relay(api, concurrency=1), db, ids)

    audit = await _audit(db, ids)
    assert [(a["resource_id"], a["outcome"], a["reason"]) for a in audit] == [
        (str(ids[1]), "success", "delivered"),
        (str(ids[2]), "success", "delivered"),
        (str(ids[3]), "failure", "chat_not_found"),
        (str(ids[0]), "success", "delivered"),  # retried, then settled on its own
    ]
    outbox = {
        r["message_id"]: r
        for r in await db.fetch(
            "SELECT id, message_id, status, attempts, xmin::text AS tx FROM outbox"
            " WHERE message_id = ANY($1::int[])",
            ids,
        )
    }
    messages = {
        r["id"]: r
        for r in await db.fetch(
            "SELECT id, state, chat_message_id, xmin::text AS tx FROM messages WHERE id = ANY($1::int[])", ids
        )
    }
    first_wave = {audit[0]["tx"]}
    # The first wave: outbox rows, audit records and messages all written by one transaction.
    assert {a["tx"] for a in audit[:3]} == first_wave
    assert {outbox[i]["tx"] for i in ids[1:]} == first_wave
    assert {messages[i]["tx"] for i in ids[1:]} == first_wave
    assert audit[3]["tx"] not in first_wave
    assert [(outbox[i]["status"], outbox[i]["attempts"]) for i in ids] == [
        ("done", 2),
        ("done", 1),
        ("done", 1),
        ("failed", 1),
    ]
    for a in audit:
        entry = outbox[int(a["resource_id"])]
        assert json.loads(a["details"]) == {"outbox_id": entry["id"], "attempts": entry["attempts"]}
    assert [messages[i]["state"] for i in ids] == ["sent", "sent", "sent", "failed"]
    assert all(messages[i]["chat_message_id"] is not None for i in ids[:3])
    deliveries = await db.fetch(
        "SELECT message_id, state, reason, provider_ts_ms FROM message_deliveries"
        " WHERE message_id = ANY($1::int[]) AND recipient = 'channel' ORDER BY message_id",
        ids,
    )
    assert [(d["state"], d["reason"]) for d in deliveries] == [
        ("sent", None),
        ("sent", None),
        ("sent", None),
        ("failed", "chat_not_found"),
    ]
    assert all(d["provider_ts_ms"] for d in deliveries[:3])


async def test_a_settle_that_fails_is_done_again_next_cycle_without_posting_again(
    api: Api, db: asyncpg.Connection, impatient_sessions: async_sessionmaker[AsyncSession]
) -> None:
    nurse, conversations = await _conversations(api, 2)
    ids = [await _accepted(api, nurse, c["id"], "Discharge plan attached.") for c in conversations]
    relay = _relay(api, impatient_sessions, concurrency=4)

    lock = db.transaction()
    await lock.start()
    await db.execute("SELECT 1 FROM messages WHERE id = $1 FOR UPDATE", ids[0])  # another writer holds it
    try:
        with pytest.raises(DBAPIError):
            await relay.run_once()  # both posted; the settle cannot lock the message and gives up
        with pytest.raises(DBAPIError):
            await relay.run_once()  # tried again first thing, still blocked
        leased = await db.fetch(
            "SELECT status, attempts, lease_until > now() AS leased FROM outbox"
            " WHERE message_id = ANY($1::int[])",
            ids,
        )
        assert [tuple(r) for r in leased] == [("pending", 1, True)] * 2
        assert await _audit(db, ids) == []
    finally:
        await lock.rollback()

    await relay.run_once()

    for c in conversations:
        assert len(_posts(api, c["channelUrl"])) == 1  # settled from what was kept: not posted again
        assert [m.message for m in emulator(api).messages(c["channelUrl"])] == ["Discharge plan attached."]
    audit = await _audit(db, ids)
    assert sorted(a["resource_id"] for a in audit) == sorted(str(i) for i in ids)
    assert len({a["tx"] for a in audit}) == 1
    states = await db.fetch(
        "SELECT o.status, o.attempts, m.state FROM outbox o JOIN messages m ON m.id = o.message_id"
        " WHERE o.message_id = ANY($1::int[])",
        ids,
    )
    assert [tuple(r) for r in states] == [("done", 1, "sent")] * 2


@pytest.mark.parametrize("dedup_mode", DEDUP_MODES)
async def test_a_settle_that_keeps_failing_gives_its_entries_back_and_the_repeat_finds_the_posts(
    api: Api,
    db: asyncpg.Connection,
    impatient_sessions: async_sessionmaker[AsyncSession],
    dedup_mode: DedupMode,
) -> None:
    emulator(api).dedup_mode = dedup_mode
    nurse, conversations = await _conversations(api, 2)
    ids = [await _accepted(api, nurse, c["id"], "Dose changed.") for c in conversations]
    relay = _relay(api, impatient_sessions, concurrency=4)

    lock = db.transaction()
    await lock.start()
    await db.execute("SELECT 1 FROM messages WHERE id = $1 FOR UPDATE", ids[0])
    try:
        with capture_logs() as logs:
            for _ in range(4):  # the wave's settle, then three more tries: then the outcomes are dropped
                with pytest.raises(DBAPIError):
                    await relay.run_once()
    finally:
        await lock.rollback()
    assert [e["outbox_ids"] for e in logs if e["event"] == "relay.settle_abandoned"] != []

    await _work_off(relay, db, ids, impatient=True)

    for c in conversations:
        # Delivered again: the channel was read, the post found there, nothing posted a second time.
        assert len(_posts(api, c["channelUrl"])) == 1
        assert [m.message for m in emulator(api).messages(c["channelUrl"])] == ["Dose changed."]
    recorded = await db.fetch(
        "SELECT chat_message_id FROM messages WHERE id = ANY($1::int[]) ORDER BY id", ids
    )
    in_chat = [emulator(api).messages(c["channelUrl"])[0].message_id for c in conversations]
    assert [r["chat_message_id"] for r in recorded] == in_chat
    audit = await _audit(db, ids)
    assert sorted(a["resource_id"] for a in audit) == sorted(str(i) for i in ids)
    assert [json.loads(a["details"])["attempts"] for a in audit] == [2, 2]


async def test_a_relay_whose_lease_ran_out_settles_nothing_another_relay_has_claimed_since(
    api: Api, db: asyncpg.Connection, patient_chat: ChatGateway
) -> None:
    nurse, [conversation] = await _conversations(api, 1)
    message_id = await _accepted(api, nurse, conversation["id"], "Lab results are in.")
    # The first relay's post is held past its lease, until the other relay has delivered: with the
    # app's client it would time out first on a loaded machine, and its relay settle a retry while
    # it still held the entry, before any other relay claimed it.
    emulator(api).faults.hang_next(UNTIL_RELEASED)
    slow = asyncio.create_task(_relay(api, chat=patient_chat, lease_seconds=0.2).run_once())
    await eventually(lambda: _async(_posts(api, conversation["channelUrl"])), "the first post to arrive")

    with capture_logs() as logs:
        await _work_off(_relay(api), db, [message_id])  # claims it once the lease is over
        emulator(api).faults.release_hangs()  # only then does the first relay get its answer
        await slow

    assert [e["event"] for e in logs if e.get("event") == "relay.settle_skipped"] == ["relay.settle_skipped"]
    audit = await _audit(db, [message_id])
    assert len(audit) == 1
    assert json.loads(audit[0]["details"])["attempts"] == 2
    assert [m.message for m in emulator(api).messages(conversation["channelUrl"])] == ["Lab results are in."]
    row = await db.fetchrow("SELECT status, attempts FROM outbox WHERE message_id = $1", message_id)
    assert tuple(row) == ("done", 2)


async def test_a_conversations_chat_post_being_retried_does_not_hold_up_its_text(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)  # one external participant: a message is a chat post and a text
    await stop_app_relay(api.app)
    message_id = await _accepted(api, team.peer, team.conversation_id, "See you Tuesday.")
    emulator(api).faults.fail_next(1)  # the chat post gets 503
    relay = _relay(api, base_backoff=0.3, max_backoff=0.3)

    await relay.run_once()

    rows = await db.fetch(
        "SELECT kind, status, attempts, next_attempt_at > now() AS backing_off"
        " FROM outbox WHERE message_id = $1 ORDER BY id",
        message_id,
    )
    assert [tuple(r) for r in rows] == [
        ("send_message", "pending", 1, True),  # to be retried after its backoff
        ("send_sms", "done", 1, False),  # texts have a lane of their own: not held up
    ]
    assert len(texts(api, team.phone)) == 1

    await _work_off(relay, db, [message_id])
    assert [m.message for m in emulator(api).messages(team.conversation["channelUrl"])] == [
        "See you Tuesday."
    ]


async def test_an_idle_relay_retries_when_the_backoff_ends_not_at_its_next_poll(
    api: Api, db: asyncpg.Connection
) -> None:
    """A relay that polls every 30 s still tries a failed post again when its backoff (0.2 s) ends:
    it wakes for the retries it scheduled itself (nothing else wakes it: no new work arrives)."""
    nurse, [conversation] = await _conversations(api, 1)
    message_id = await _accepted(api, nurse, conversation["id"], "Dressing changed.")
    emulator(api).faults.fail_next(1)  # the first post gets 503
    relay = _relay(api, poll_interval=30.0, base_backoff=0.2, max_backoff=0.2)
    task = asyncio.create_task(relay.run())
    try:

        async def delivered() -> bool:
            status = await db.fetchval("SELECT status FROM outbox WHERE message_id = $1", message_id)
            return bool(status == "done")

        await eventually(delivered, "the retried post to be delivered", within=10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert relay.retries == 1
    assert [m.message for m in emulator(api).messages(conversation["channelUrl"])] == ["Dressing changed."]


async def test_an_outage_outlasting_max_attempts_drops_nothing_and_shows_as_a_growing_backlog(
    api: Api, db: asyncpg.Connection
) -> None:
    """Sendbird and Twilio answer 503 for longer than ``max_attempts`` attempts: the post and the
    text stay pending (the outbox gauges' query counts them), and both go out once the outage ends."""
    team = await care_team(api)
    await stop_app_relay(api.app)
    emulator(api).faults.fail_for(UNTIL_RELEASED)
    twilio(api).state.faults.fail_for(UNTIL_RELEASED)
    message_id = await _accepted(api, team.peer, team.conversation_id, "Call the clinic today.")
    relay = _relay(api, max_attempts=2, base_backoff=0.01, max_backoff=0.02)

    async def outlasted() -> bool:
        await relay.run_once()
        rows = await db.fetch("SELECT status, attempts FROM outbox WHERE message_id = $1", message_id)
        assert {r["status"] for r in rows} == {"pending"}, rows  # never given up
        return len(rows) == 2 and all(r["attempts"] >= 6 for r in rows)

    await eventually(outlasted, "the post and the text to outlast max_attempts three times over")
    async with api.app[sessions_key]() as session:
        backlog = await outbox_backlog(await session.connection())
    oldest = await db.fetchval(
        "SELECT extract(epoch FROM now() - min(created_at)) FROM outbox WHERE message_id = $1", message_id
    )
    emulator(api).faults.clear()
    twilio(api).state.faults.clear()
    await _work_off(relay, db, [message_id])

    assert backlog.count >= 2
    assert backlog.oldest_seconds >= float(oldest) - 0.5
    rows = await db.fetch("SELECT status FROM outbox WHERE message_id = $1", message_id)
    assert [r["status"] for r in rows] == ["done", "done"]
    states = await db.fetch(
        "SELECT state FROM message_deliveries WHERE message_id = $1 ORDER BY id", message_id
    )
    assert [r["state"] for r in states] == ["sent", "sent"]
    assert [m.message for m in emulator(api).messages(team.conversation["channelUrl"])] == [
        "Call the clinic today."
    ]
    assert len(texts(api, team.phone)) == 1


async def test_a_conversations_texts_go_out_in_the_order_accepted_even_when_one_is_retried(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    await stop_app_relay(api.app)
    ids = [await _accepted(api, team.peer, team.conversation_id, f"message {i}") for i in range(3)]
    text_relay = _relay(api, claim_kinds=TEXT_KINDS, base_backoff=0.2, max_backoff=0.2)
    twilio(api).state.faults.fail_next(1)  # the first text gets 503 and must wait its backoff

    async def texted() -> bool:
        await text_relay.run_once()
        pending = await db.fetchval(
            "SELECT count(*) FROM outbox WHERE message_id = ANY($1::int[]) AND kind = 'send_sms'"
            " AND status = 'pending'",
            ids,
        )
        return bool(pending == 0)

    await eventually(texted, "every text to be sent")

    sms = await db.fetch(
        "SELECT provider_message_id FROM message_deliveries"
        " WHERE message_id = ANY($1::int[]) AND recipient <> 'channel' ORDER BY message_id",
        ids,
    )
    assert [t.sid for t in texts(api, team.phone)] == [r["provider_message_id"] for r in sms]
    assert emulator(api).messages(team.conversation["channelUrl"]) == []  # this relay claims texts only


async def _async(value: Any) -> Any:
    return value


async def test_chat_posts_go_out_while_the_sms_provider_is_slow_and_texts_follow_in_order(
    patient_api: Api, db: asyncpg.Connection
) -> None:
    api = patient_api
    team = await care_team(api)  # the app's own relays: one for chat effects, one for texts
    # Every text (and any an earlier test left queued) is held at the carrier until the chat posts
    # are done (its client waits for that, however long it takes: a text that timed out would be
    # retried, and sent twice once the carrier answers).
    twilio(api).state.faults.hang_for(UNTIL_RELEASED)
    ids = [await _accepted(api, team.peer, team.conversation_id, f"update {i}") for i in range(3)]

    async def chat_sent() -> bool:
        states = await db.fetch(
            "SELECT recipient, state FROM message_deliveries WHERE message_id = ANY($1::int[])", ids
        )
        return all(r["state"] == "sent" for r in states if r["recipient"] == "channel")

    await eventually(chat_sent, "every chat post")  # not held up behind the texts
    queued = await db.fetchval(
        "SELECT count(*) FROM message_deliveries WHERE message_id = ANY($1::int[])"
        " AND recipient <> 'channel' AND state = 'queued'",
        ids,
    )
    assert queued == 3  # no text was through when every chat post was done
    twilio(api).state.faults.release_hangs()
    assert [m.message for m in emulator(api).messages(team.conversation["channelUrl"])] == [
        f"update {i}" for i in range(3)
    ]

    async def texted() -> bool:
        left = await db.fetchval(
            "SELECT count(*) FROM message_deliveries WHERE message_id = ANY($1::int[]) AND state = 'queued'",
            ids,
        )
        return bool(left == 0)

    await eventually(texted, "every text", within=10.0)
    sms = await db.fetch(
        "SELECT provider_message_id FROM message_deliveries"
        " WHERE message_id = ANY($1::int[]) AND recipient <> 'channel' ORDER BY message_id",
        ids,
    )
    in_order = [r["provider_message_id"] for r in sms]
    assert [t.sid for t in texts(api, team.phone)] == in_order  # in the order accepted


class FirstPostOfFails:
    """The app's chat gateway, but the first post of ``text`` fails as Sendbird being away would
    (before it reaches the emulator)."""

    def __init__(self, chat: ChatGateway, text: str) -> None:
        self._chat = chat
        self._text: str | None = text

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chat, name)

    async def send_message(self, channel_url: str, *, text: str, **post: Any) -> Any:
        if text == self._text:
            self._text = None
            raise ChatUnavailable("away")
        return await self._chat.send_message(channel_url, text=text, **post)


async def test_one_claim_takes_a_conversations_queue_and_a_retry_in_it_gives_the_rest_back_untried(
    api: Api, db: asyncpg.Connection
) -> None:
    nurse, [conversation] = await _conversations(api, 1)
    written = [f"message {i}" for i in range(4)]
    ids = [await _accepted(api, nurse, conversation["id"], text) for text in written]
    chat = cast(ChatGateway, FirstPostOfFails(api.app[chat_key], "message 1"))
    relay = _relay(api, chat=chat, base_backoff=0.2, max_backoff=0.2)

    assert await relay.run_once() == 4  # the whole queue in one claim

    rows = await db.fetch(
        "SELECT status, attempts, lease_until IS NOT NULL AS leased, next_attempt_at > now() AS backing_off"
        " FROM outbox WHERE message_id = ANY($1::int[]) ORDER BY id",
        ids,
    )
    assert [tuple(r) for r in rows] == [
        ("done", 1, False, False),
        ("pending", 1, False, True),  # to be retried after its backoff
        ("pending", 0, False, False),  # given back untried: no attempt counted
        ("pending", 0, False, False),
    ]
    assert [m.message for m in emulator(api).messages(conversation["channelUrl"])] == written[:1]

    await _work_off(relay, db, ids)

    assert [m.message for m in emulator(api).messages(conversation["channelUrl"])] == written
    assert [r.body["message"] for r in _posts(api, conversation["channelUrl"])] == written  # once each
    attempts = await db.fetch(
        "SELECT status, attempts FROM outbox WHERE message_id = ANY($1::int[]) ORDER BY id", ids
    )
    assert [tuple(r) for r in attempts] == [("done", 1), ("done", 2), ("done", 1), ("done", 1)]
    assert [a["resource_id"] for a in await _audit(db, ids)] == [str(i) for i in ids]
