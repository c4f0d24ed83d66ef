"""Executors of the effects that post into a chat channel, and :func:`post_once`, which they share.

**Reconciliation, not trust** (sendbird-api.md §8). Every post carries caremsg's own id of what it
posts in ``data``, a field Sendbird returns with every message. After an ambiguous outcome (a
timeout, a dropped connection, a 5xx, any error answering a repeat) and before any repeat of a post,
the channel's recent messages are read: if the post landed, its Sendbird id is recorded and nothing
is posted again. ``dedup_id`` stays as a second layer only, because what Sendbird answers a repeated
one is not documented. This holds as long as a post in flight ends before its lease does (the
relay's ``lease_seconds`` well above the chat client's timeout).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from engine.effects import Effect, PostMessage, PostSmsReply
from engine.errors import ChatGatewayError, ChatRateLimited
from engine.ports import ChatGateway, SentChatMessage
from integrations.effects.executor import RelayContext
from integrations.effects.outbox import OutboxEntry

log = structlog.get_logger("caremsg.relay")

#: custom_type of SMS replies posted into channels; their webhook echoes are ignored.
SMS_REPLY_CUSTOM_TYPE = "caremsg_sms_reply"


@dataclass(frozen=True)
class ChatFile:
    """A file to post as a file message: caremsg's name for it, its type and bytes."""

    name: str
    content_type: str
    content: bytes = field(repr=False)


async def post_once(
    chat: ChatGateway,
    entry: OutboxEntry,
    channel_url: str,
    *,
    sender_id: str,
    text: str,
    dedup_id: str,
    custom_type: str,
    data: str,
    file: ChatFile | None = None,
) -> SentChatMessage:
    """Post a message (a file message when ``file`` is given) unless it is in the channel already;
    what was posted (or found) either way.

    ``data`` must carry caremsg's own id of the message: it is what the channel's messages are
    searched for. Read before posting when an earlier attempt was made (it may have landed), and
    after an ambiguous failure of this post (timeout, dropped connection, 5xx) or any failure of a
    repeat, before the failure is believed. A failed read leaves the original error standing.
    """
    if entry.attempts > 1:
        landed = await chat.find_message(channel_url, sender_id=sender_id, custom_type=custom_type, data=data)
        if landed is not None:
            log.info("relay.reconciled", outbox_id=entry.id, kind=entry.kind, found="before_post")
            return landed
    try:
        if file is not None:
            return await chat.send_file(
                channel_url,
                sender_id=sender_id,
                file=file.content,
                file_name=file.name,
                content_type=file.content_type,
                dedup_id=dedup_id,
                custom_type=custom_type,
                data=data,
            )
        return await chat.send_message(
            channel_url, sender_id=sender_id, text=text, dedup_id=dedup_id, custom_type=custom_type, data=data
        )
    except ChatGatewayError as exc:
        # A rate limit means Sendbird did nothing; any other error on a first attempt that is not
        # retryable (bad input, no channel) is believed.
        if isinstance(exc, ChatRateLimited) or not (exc.retryable or entry.attempts > 1):
            raise
        try:
            landed = await chat.find_message(
                channel_url, sender_id=sender_id, custom_type=custom_type, data=data
            )
        except ChatGatewayError:
            raise exc from None
        if landed is None:
            raise
        log.info("relay.reconciled", outbox_id=entry.id, kind=entry.kind, found="after_error")
        return landed


@dataclass(frozen=True)
class MessageToPost:
    """What posting one stored message needs: its text, its channel and its sender's chat id."""

    body: str = field(repr=False)
    channel_url: str
    sender_chat_id: str
    #: Recalled after its post was claimed: it is never posted.
    recalled: bool = False


class MessageRecalled(ChatGatewayError):
    """The message was recalled before it was posted: the post is given up (delivery ``failed:
    recalled``), never retried."""

    code = "recalled"


_MESSAGES_TO_POST = text(
    "SELECT m.id, m.body, m.recalled_at IS NOT NULL AS recalled, c.channel_url, u.chat_user_id"
    " FROM messages m"
    " JOIN conversations c ON c.id = m.conversation_id JOIN users u ON u.id = m.sender_id"
    " WHERE m.id = ANY(CAST(:ids AS integer[]))"
)

# A wave's messages and their channel delivery rows, sent or failed, in one statement. Read
# receipts compare their read_ts with the delivery row's provider_ts_ms.
_SETTLE_MESSAGES = text(
    """
    WITH s AS (
        SELECT * FROM unnest(
            CAST(:ids AS integer[]), CAST(:states AS text[]), CAST(:chat_ids AS bigint[]),
            CAST(:ts AS bigint[]), CAST(:reasons AS text[])
        ) AS s(id, state, chat_id, ts, reason)
    ), m AS (
        UPDATE messages m SET
            state = s.state,
            chat_message_id = CASE WHEN s.state = 'sent' THEN s.chat_id ELSE m.chat_message_id END
        FROM s WHERE m.id = s.id
    )
    UPDATE message_deliveries d SET
        state = s.state,
        provider_ts_ms = CASE WHEN s.state = 'sent' THEN s.ts ELSE d.provider_ts_ms END,
        reason = CASE WHEN s.state = 'failed' THEN s.reason ELSE d.reason END,
        updated_at = now()
    FROM s
    WHERE d.message_id = s.id AND d.recipient = 'channel' AND (s.state = 'failed' OR d.state = 'queued')
    """
)


def _message_id(entry: OutboxEntry) -> int:
    effect = entry.effect
    if not isinstance(effect, PostMessage):
        raise TypeError(f"outbox entry {entry.id} is not a message post")
    return effect.message_id


class PostMessageExecutor:
    """Post a stored message into its channel as its sender, exactly once (:func:`post_once`): its
    ``data`` carries caremsg's message id, ``dedup_id`` is a second layer. The whole batch's messages
    are read in the claim (``prepare``), a wave's outcomes written in one statement (``settle``)."""

    handles: tuple[type[Effect], ...] = (PostMessage,)

    def __init__(self) -> None:
        # Sendbird's message id and timestamp of each post, by outbox id, for the settle.
        self._sent: dict[int, tuple[int, int]] = {}

    async def prepare(self, entries: Sequence[OutboxEntry], session: AsyncSession) -> Mapping[int, object]:
        message_ids = [_message_id(e) for e in entries]
        rows = await session.execute(_MESSAGES_TO_POST, {"ids": message_ids})
        found = {r.id: MessageToPost(r.body, r.channel_url, r.chat_user_id, r.recalled) for r in rows}
        return {e.id: found[m] for e, m in zip(entries, message_ids, strict=True) if m in found}

    async def deliver(self, effect: PostMessage, entry: OutboxEntry, ctx: RelayContext) -> None:
        msg = entry.prepared
        if not isinstance(msg, MessageToPost):
            async with ctx.sessions() as session:
                msg = (await self.prepare([entry], session)).get(entry.id)
            if not isinstance(msg, MessageToPost):
                raise LookupError(f"message {effect.message_id} of outbox entry {entry.id} not found")
        if msg.recalled:
            raise MessageRecalled(f"message {effect.message_id} was recalled")
        sent = await post_once(
            ctx.chat,
            entry,
            msg.channel_url,
            sender_id=msg.sender_chat_id,
            text=msg.body,
            dedup_id=f"caremsg_msg_{effect.message_id}",
            custom_type="caremsg_message",
            data=json.dumps({"message_id": effect.message_id}),
        )
        self._sent[entry.id] = (sent.message_id, sent.created_at_ms)

    async def settle(
        self, done: Sequence[OutboxEntry], failed: Sequence[tuple[OutboxEntry, str]], session: AsyncSession
    ) -> None:
        rows: list[tuple[int, str, int | None, int | None, str | None]] = []
        for entry in done:
            chat_id, ts = self._sent.pop(entry.id, (None, None))
            rows.append((_message_id(entry), "sent", chat_id, ts, None))
        for entry, reason in failed:
            self._sent.pop(entry.id, None)
            rows.append((_message_id(entry), "failed", None, None, reason))
        if not rows:
            return
        ids, states, chat_ids, timestamps, reasons = (list(column) for column in zip(*rows, strict=True))
        await session.execute(
            _SETTLE_MESSAGES,
            {"ids": ids, "states": states, "chat_ids": chat_ids, "ts": timestamps, "reasons": reasons},
        )


class PostSmsReplyExecutor:
    """Post an inbound SMS into the channel as the external participant who sent it.

    The provider's message id is carried in ``data`` (what :func:`post_once` reconciles on) and as
    ``dedup_id`` (a second layer), so a provider retry (or ours) never posts twice.
    """

    handles: tuple[type[Effect], ...] = (PostSmsReply,)

    async def deliver(self, effect: PostSmsReply, entry: OutboxEntry, ctx: RelayContext) -> None:
        await post_once(
            ctx.chat,
            entry,
            effect.channel_url,
            sender_id=effect.sender_chat_id,
            text=effect.text,
            dedup_id=effect.dedup_id,
            custom_type=SMS_REPLY_CUSTOM_TYPE,
            data=json.dumps({"source": "sms", "sms_id": effect.dedup_id}),
        )

    async def settle(
        self, done: Sequence[OutboxEntry], failed: Sequence[tuple[OutboxEntry, str]], session: AsyncSession
    ) -> None:
        """Nothing to record beyond the relay's own row and audit record of each entry."""
