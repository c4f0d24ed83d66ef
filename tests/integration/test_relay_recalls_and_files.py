"""The relay's file posts and its posts of recalled messages, against the real app, PostgreSQL and the
emulator over HTTP.

- A file post whose answer is lost is found again among the channel's file messages (never among the
  text ones), whatever Sendbird answers a repeated ``dedup_id``: posted once, recorded with its id,
  and deleted by a recall.
- A post (a text's, a file's, or a text message) that a relay has claimed but not yet made is read
  again right before it is made: a message recalled in between is never posted, and its entry and
  delivery end as a recall's own cancel leaves those of a post no relay holds.

Each test stops the app's own relay and drives one of its own with ``run_once``.

Longer than 400 lines because every scenario reads its outcome through the same relay builder,
batch holder and outcome readers (``_relay``, ``_first_post_in_flight``, ``_outcome``): split, they
would be copied.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from engine.effects import PostMessage
from engine.ports import ChatGateway
from handlers.api_messaging import messaging_key
from handlers.app import create_app
from handlers.keys import chat_key, sessions_key
from handlers.settings import Settings
from integrations.effects.attachments import PostAttachmentExecutor
from integrations.effects.executor import RelayContext
from integrations.effects.messages import PostMessageExecutor
from integrations.effects.outbox import OutboxEntry
from integrations.effects.recalls import RecallExecutor
from integrations.relay import TEXT_KINDS, OutboxRelay, RelaySettings
from integrations.sendbird_emulator import DEDUP_MODES, DedupMode, EmulatedMessage
from tests.support.api import Api
from tests.support.messaging import (
    PDF,
    UNTIL_RELEASED,
    CareTeam,
    care_team,
    emulator,
    send,
    set_aside_others_due,
    stop_app_relay,
    texts,
    twilio,
)
from tests.support.polling import eventually, settled


@pytest.fixture
async def api(aiohttp_client: Any, settings: Settings) -> Api:
    return Api(await aiohttp_client(create_app(settings)))


class WatchedPosts(PostMessageExecutor):
    """The message posts' executor, noting which posts it was asked to check again before their
    wave (``recheck``) and whether each post it delivered came with a fresh read (``entry.fresh``)."""

    def __init__(self) -> None:
        super().__init__()
        self.rechecked: list[list[int]] = []
        self.delivered: list[tuple[int, bool]] = []

    async def recheck(self, entries: Sequence[OutboxEntry], session: AsyncSession) -> Mapping[int, object]:
        self.rechecked.append([_message_of(e) for e in entries])
        return await super().recheck(entries, session)

    async def deliver(self, effect: PostMessage, entry: OutboxEntry, ctx: RelayContext) -> None:
        self.delivered.append((effect.message_id, entry.fresh))
        await super().deliver(effect, entry, ctx)


def _message_of(entry: OutboxEntry) -> int:
    assert isinstance(entry.effect, PostMessage)
    return entry.effect.message_id


def _relay(
    api: Api, chat: ChatGateway | None = None, posts: PostMessageExecutor | None = None, **settings: Any
) -> OutboxRelay:
    """A relay with the app's executors of posts, files, recalls and texts."""
    return OutboxRelay(
        api.app[sessions_key],
        chat or api.app[chat_key],
        RelaySettings(**{"poll_interval": 0.05, "base_backoff": 0.05, "max_backoff": 0.2, **settings}),
        executors=[
            RecallExecutor(),
            PostAttachmentExecutor(),
            posts or PostMessageExecutor(),
            *api.app[messaging_key].outbox_kinds,
        ],
        jitter=lambda cap: cap,
    )


async def _work_off(relay: OutboxRelay, db: asyncpg.Connection, message_ids: Sequence[int]) -> None:
    async def done() -> bool:
        await relay.run_once()
        pending = await db.fetchval(
            "SELECT count(*) FROM outbox WHERE message_id = ANY($1::int[]) AND status = 'pending'",
            list(message_ids),
        )
        return bool(pending == 0)

    await eventually(done, "the relay to settle every entry")


async def _attach(api: Api, team: CareTeam) -> int:
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(PDF), filename="Ann Lee.pdf", content_type="application/pdf")
    status, sent = await api.call(
        "POST", f"/api/conversations/{team.conversation_id}/attachments", team.peer, data=form
    )
    assert status == 202, sent
    return int(sent["id"])


async def _sent(api: Api, team: CareTeam, text: str) -> int:
    status, sent = await send(api, team.peer, team.conversation_id, text)
    assert status == 202, sent
    return int(sent["id"])


async def _recall(api: Api, team: CareTeam, message_id: int) -> dict[str, Any]:
    status, recalled = await api.call(
        "POST", f"/api/messages/{message_id}/recall", team.peer, json={"reason": "wrong patient"}
    )
    assert status == 200, recalled
    return recalled  # type: ignore[no-any-return]


def _copies(api: Api, team: CareTeam, message_id: int) -> list[EmulatedMessage]:
    """Every post in the channel that carries this message's id (removed ones too)."""
    return [
        m
        for m in emulator(api).messages(team.conversation["channelUrl"])
        if json.loads(m.data or "{}").get("message_id") == message_id
    ]


def _posted_texts(api: Api, team: CareTeam) -> list[str]:
    path = f"/v3/group_channels/{team.conversation['channelUrl']}/messages"
    return [str(r.body.get("message")) for r in emulator(api).requests("POST", path) if r.body]


@asynccontextmanager
async def _first_post_in_flight(
    api: Api, relay: OutboxRelay, team: CareTeam
) -> AsyncIterator[asyncio.Task[int]]:
    """One batch of ``relay`` (the task yielded), its first post held in flight in ``team``'s
    channel while the block runs; then the post goes on."""
    emulator(api).faults.hang_next(UNTIL_RELEASED)
    batch = asyncio.create_task(relay.run_once())
    try:
        await eventually(lambda: settled(_posted_texts(api, team)), "the first post to be on its way")
        yield batch
    finally:
        emulator(api).faults.release_hangs()


async def _outcome(db: asyncpg.Connection, message_id: int, kind: str) -> tuple[Any, ...]:
    """What became of the message's post: (outbox status, its last error, the channel delivery's state
    and reason, the message's own state, its recorded Sendbird id)."""
    row = await db.fetchrow(
        "SELECT o.status, o.last_error, d.state AS delivery, d.reason, m.state, m.chat_message_id"
        " FROM messages m JOIN outbox o ON o.message_id = m.id AND o.kind = $2"
        " JOIN message_deliveries d ON d.message_id = m.id AND d.recipient = 'channel' WHERE m.id = $1",
        message_id,
        kind,
    )
    return tuple(row)


# --- files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dedup_mode", DEDUP_MODES)
async def test_a_file_post_whose_answer_was_lost_is_found_posted_once_recorded_and_recalled(
    api: Api, db: asyncpg.Connection, dedup_mode: DedupMode
) -> None:
    emulator(api).dedup_mode = dedup_mode
    team = await care_team(api)
    await stop_app_relay(api.app)
    message_id = await _attach(api, team)
    emulator(api).faults.drop_next(1)  # Sendbird stores the file message; its answer is lost
    relay = _relay(api)

    await _work_off(relay, db, [message_id])

    [file] = _copies(api, team, message_id)  # posted once (the mode "ignored" would post it twice)
    assert file.type == "FILE"
    # recorded with its Sendbird id (not 0, as "already_exists" left it; not failed, as "invalid" did)
    assert await _outcome(db, message_id, "send_file") == (
        "done",
        None,
        "sent",
        None,
        "sent",
        file.message_id,
    )
    attempts = await db.fetchval(
        "SELECT attempts FROM outbox WHERE message_id = $1 AND kind = 'send_file'", message_id
    )
    assert attempts == 1  # found right after the lost answer, not posted again

    await _recall(api, team, message_id)
    await _work_off(relay, db, [message_id])

    assert file.is_removed  # the recalled file left the channel
    notices = [
        m
        for m in emulator(api).messages(team.conversation["channelUrl"])
        if m.custom_type == "caremsg_recall_notice"
    ]
    assert [n.message for n in notices] == ["A message in this conversation was recalled."]


async def test_a_file_recorded_as_taken_with_an_unknown_id_is_found_and_deleted_by_its_recall(
    api: Api, db: asyncpg.Connection
) -> None:
    """Id 0 is what a file post answered "already exists" was recorded with while the original was
    looked for among the text messages: the recall looks for it again, among the file messages."""
    team = await care_team(api)
    await stop_app_relay(api.app)
    message_id = await _attach(api, team)
    relay = _relay(api)
    await _work_off(relay, db, [message_id])
    await db.execute("UPDATE messages SET chat_message_id = 0 WHERE id = $1", message_id)

    await _recall(api, team, message_id)
    await _work_off(relay, db, [message_id])

    [file] = _copies(api, team, message_id)
    assert file.is_removed


# --- a recall after the claim ---------------------------------------------------------------------------


async def test_a_post_recalled_behind_its_conversations_first_in_a_claimed_batch_is_never_posted(
    api: Api, db: asyncpg.Connection, patient_chat: ChatGateway
) -> None:
    team = await care_team(api)
    await stop_app_relay(api.app)
    first = await _sent(api, team, "first message")
    wrong = await _sent(api, team, "WRONG PATIENT: Ann Lee")
    posts = WatchedPosts()
    relay = _relay(api, chat=patient_chat, posts=posts, skip_kinds=TEXT_KINDS)
    # The batch claims both posts: the second waits behind the first.
    async with _first_post_in_flight(api, relay, team) as batch:
        leased = await db.fetchval(
            "SELECT lease_until > now() FROM outbox WHERE message_id = $1 AND kind = 'send_message'", wrong
        )
        assert leased  # the recall's cancel leaves it to the relay that holds it

        recalled = await _recall(api, team, wrong)
        # not posted by the recall's own transaction, nor cancelled by it: its relay holds it
        chat = next(d for d in recalled["deliveries"] if d["channel"] == "chat")
        assert chat["state"] == "queued"
        # A message sent after the claim and recalled before any relay took it, for comparison.
        unclaimed = await _sent(api, team, "WRONG PATIENT again")
        await _recall(api, team, unclaimed)
    assert await batch == 2

    assert _posted_texts(api, team) == ["first message"]
    # Checked again in the settle of the wave before it, one statement for its wave: then fresh.
    assert (posts.rechecked, posts.delivered) == ([[wrong]], [(first, True), (wrong, True)])
    cancelled = ("cancelled", "recalled", "failed", "recalled", "queued", None)
    assert await _outcome(db, wrong, "send_message") == cancelled
    assert await _outcome(db, unclaimed, "send_message") == cancelled  # the same end, claimed or not
    assert (await _outcome(db, first, "send_message"))[:3] == ("done", None, "sent")
    audit = await db.fetch(
        "SELECT outcome, reason FROM audit_events WHERE workflow = 'delivery.send_message'"
        " AND resource_id = $1",
        str(wrong),
    )
    assert [tuple(r) for r in audit] == [("failure", "recalled")]
    status, read = await api.call("GET", f"/api/messages/{wrong}", team.nurse)
    assert status == 200, read
    chat = next(d for d in read["deliveries"] if d["channel"] == "chat")
    assert (chat["state"], chat["reason"]) == ("failed", "recalled")

    # Its recall has nothing to delete and nobody to tell: the message never reached the channel.
    await _work_off(relay, db, [wrong, unclaimed])
    assert _copies(api, team, wrong) == []
    channel = emulator(api).messages(team.conversation["channelUrl"])
    assert [m.custom_type for m in channel if m.custom_type == "caremsg_recall_notice"] == []


async def test_a_file_recalled_behind_a_text_in_a_claimed_batch_is_never_posted(
    api: Api, db: asyncpg.Connection, patient_chat: ChatGateway
) -> None:
    team = await care_team(api)
    await stop_app_relay(api.app)
    first = await _sent(api, team, "first message")
    file = await _attach(api, team)
    relay = _relay(api, chat=patient_chat, skip_kinds=TEXT_KINDS)
    async with _first_post_in_flight(api, relay, team) as batch:
        await _recall(api, team, file)
    assert await batch == 2

    assert _copies(api, team, file) == []
    assert await _outcome(db, file, "send_file") == (
        "cancelled",
        "recalled",
        "failed",
        "recalled",
        "queued",
        None,
    )
    assert (await _outcome(db, first, "send_message"))[0] == "done"


async def test_a_post_recalled_while_it_waits_for_a_delivery_slot_is_never_posted(
    api: Api, db: asyncpg.Connection, patient_chat: ChatGateway
) -> None:
    """Two conversations' first posts in one wave, one delivery at a time: the second waits for the
    slot the first holds, its message is recalled meanwhile."""
    held, waiting = await care_team(api), await care_team(api)
    await stop_app_relay(api.app)
    first = await _sent(api, held, "first message")
    wrong = await _sent(api, waiting, "WRONG PATIENT: Ann Lee")
    posts = WatchedPosts()
    relay = _relay(api, chat=patient_chat, posts=posts, skip_kinds=TEXT_KINDS, concurrency=1)
    async with _first_post_in_flight(api, relay, held) as batch:
        await _recall(api, waiting, wrong)
    assert await batch == 2

    assert _posted_texts(api, waiting) == []
    # It waited for the slot: it checked again by itself, right before its post would have gone out.
    assert (posts.rechecked, posts.delivered) == ([], [(first, True), (wrong, False)])
    assert await _outcome(db, wrong, "send_message") == (
        "cancelled",
        "recalled",
        "failed",
        "recalled",
        "queued",
        None,
    )
    assert (await _outcome(db, first, "send_message"))[0] == "done"


async def test_a_text_recalled_after_its_claim_is_never_sent_and_cancelled_like_its_post(
    patient_api: Api, db: asyncpg.Connection
) -> None:
    api = patient_api
    team = await care_team(api)
    await stop_app_relay(api.app)
    first = await _sent(api, team, "first message")
    wrong = await _sent(api, team, "WRONG PATIENT: Ann Lee")
    await set_aside_others_due(db, team.conversation_id)  # so the claim takes both of its texts
    relay = _relay(api, claim_kinds=TEXT_KINDS, lease_seconds=120)  # run_once renews no lease
    twilio(api).state.faults.hang_next(UNTIL_RELEASED)
    batch = asyncio.create_task(relay.run_once())  # claims both texts: the second behind the first
    try:
        await eventually(lambda: settled(twilio(api).state.received), "the first text to be on its way")
        await _recall(api, team, wrong)
    finally:
        twilio(api).state.faults.release_hangs()
    await batch

    assert len(texts(api, team.phone)) == 1
    rows = await db.fetch(
        "SELECT o.status, o.last_error, d.state, d.reason FROM outbox o"
        " JOIN message_deliveries d ON d.id = CAST(o.payload ->> 'delivery_id' AS integer)"
        " WHERE o.message_id = ANY($1::int[]) AND o.kind = 'send_sms' ORDER BY o.message_id",
        [first, wrong],
    )
    assert [tuple(r) for r in rows] == [
        ("done", None, "sent", None),
        ("cancelled", "recalled", "failed", "recalled"),
    ]
    # The recall's record told no auditor the patient got a text: it was held, not sent, and
    # its own record says it was cancelled.
    recall = await db.fetchval(
        "SELECT details FROM audit_events WHERE workflow = 'message.recall' AND resource_id = $1",
        str(wrong),
    )
    counts = {k: v for k, v in json.loads(recall).items() if "texts" in k}
    cancelled = await db.fetch(
        "SELECT outcome, reason FROM audit_events WHERE workflow = 'delivery.send_sms' AND resource_id = $1",
        str(wrong),
    )
    # In fresh-clone CI the recall at times found the text not held and cancelled it itself (cause
    # not found: issue 11's note); either way nothing not sent is counted as sent.
    if counts["texts_in_flight"] == 0:
        assert (counts, cancelled) == (
            {"cancelled_texts": 1, "texts_already_sent": 0, "texts_in_flight": 0},
            [],
        )
    else:
        assert counts == {"cancelled_texts": 0, "texts_already_sent": 0, "texts_in_flight": 1}
        assert [tuple(r) for r in cancelled] == [("failure", "recalled")]
    # A text the carrier has is counted as sent.
    await _recall(api, team, first)
    recall = await db.fetchval(
        "SELECT details FROM audit_events WHERE workflow = 'message.recall' AND resource_id = $1",
        str(first),
    )
    counts = {k: v for k, v in json.loads(recall).items() if "texts" in k}
    assert counts == {"cancelled_texts": 0, "texts_already_sent": 1, "texts_in_flight": 0}
