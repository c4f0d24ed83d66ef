"""Posting a message's attached file into its chat channel as a Sendbird file message, exactly once.

``POST /v3/group_channels/{channel_url}/messages`` with ``message_type`` FILE and the file in the
multipart part ``file`` (sendbird-api.md §1, §5). Like a text post (``post_once``), the post carries
caremsg's message id in ``data`` and the same ``custom_type`` as caremsg's other message posts, so a
lost answer is reconciled, and a recall finds and deletes the copy (integrations/effects/recalls.py):
both look for it among the channel's file messages (``message_type`` FILE), where it is, never among
the text ones. The file and its message are read right before the post: a message recalled after
the claim is not posted, its post cancelled as the recall cancels one no relay holds.
The file is named after its attachment id and type, never after the uploader's file name. A file
is a disclosure like a text: the first one a recipient organization's members get under a Part 2
consent is preceded by the 42 CFR 2.32 notice, given once per conversation and organization whichever
of the two posts (a text's or a file's) comes first (:func:`give_part2_notices`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from engine.effects import Effect, PostAttachment, kind_of
from engine.policy import PART2_SHORT_NOTICE
from engine.services import utc_now
from integrations.effects.executor import RelayContext
from integrations.effects.messages import ChatFile, give_part2_notices, post_once, read_messages_to_post
from integrations.effects.outbox import OutboxEntry
from integrations.effects.posts import MessageRecalled, not_posted, posted, record_posts

#: custom_type of caremsg's own message posts (integrations/effects/messages.py): what recalls find.
MESSAGE_CUSTOM_TYPE = "caremsg_message"

_EXTENSIONS = {"application/pdf": "pdf", "image/png": "png", "image/jpeg": "jpg", "image/gif": "gif"}

_FILE_TO_POST = text(
    "SELECT a.content_type, a.data, m.recalled_at IS NOT NULL AS recalled, c.channel_url, u.chat_user_id"
    " FROM message_attachments a JOIN messages m ON m.id = a.message_id"
    " JOIN conversations c ON c.id = m.conversation_id JOIN users u ON u.id = m.sender_id"
    " WHERE a.id = :attachment_id AND a.message_id = :message_id"
)


def file_name(attachment_id: int, content_type: str) -> str:
    """caremsg's name for an attachment's file in the channel: its id, never the uploader's name."""
    return f"attachment-{attachment_id}.{_EXTENSIONS.get(content_type, 'bin')}"


def _message_id(entry: OutboxEntry) -> int:
    if not isinstance(entry.effect, PostAttachment):
        raise TypeError(f"outbox entry {entry.id} is not an attachment post")
    return entry.effect.message_id


class PostAttachmentExecutor:
    """Post an attachment as a file message as its message's sender, exactly once (:func:`post_once`),
    and record the message as sent (its chat id, the channel delivery) or failed."""

    handles: tuple[type[Effect], ...] = (PostAttachment,)

    def __init__(
        self,
        part2_notice: Callable[[], str] = lambda: PART2_SHORT_NOTICE,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._sent: dict[int, tuple[int, int]] = {}
        #: The notice of policies/notices.toml in force (the app passes the policy's; reloads swap it).
        self._part2_notice = part2_notice
        self._clock = clock  # the app's: which Part 2 consents are active, when a notice was given

    async def deliver(self, effect: PostAttachment, entry: OutboxEntry, ctx: RelayContext) -> None:
        async with ctx.sessions() as session:
            row = (
                await session.execute(
                    _FILE_TO_POST, {"attachment_id": effect.attachment_id, "message_id": effect.message_id}
                )
            ).one_or_none()
            now = self._clock()
            msg = (await read_messages_to_post(session, [effect.message_id], now)).get(effect.message_id)
        if row is None or msg is None:
            raise LookupError(f"attachment {effect.attachment_id} of outbox entry {entry.id} not found")
        if row.recalled:
            raise MessageRecalled(f"message {effect.message_id} was recalled")
        if msg.notices:
            notice = self._part2_notice()
            workflow = f"delivery.{kind_of(PostAttachment)}"
            await give_part2_notices(msg, entry, ctx, notice, workflow=workflow, at=self._clock())
        sent = await post_once(
            ctx.chat,
            entry,
            row.channel_url,
            sender_id=row.chat_user_id,
            text="",
            dedup_id=f"caremsg_msg_{effect.message_id}",
            custom_type=MESSAGE_CUSTOM_TYPE,
            data=json.dumps({"message_id": effect.message_id}),
            file=ChatFile(
                file_name(effect.attachment_id, row.content_type), row.content_type, bytes(row.data)
            ),
        )
        self._sent[entry.id] = (sent.message_id, sent.created_at_ms)

    async def settle(
        self, done: Sequence[OutboxEntry], failed: Sequence[tuple[OutboxEntry, str]], session: AsyncSession
    ) -> None:
        """Record a wave's file posts as its message posts are recorded (one statement): sent, failed,
        or cancelled because the message was recalled before its file went out."""
        rows = [posted(_message_id(e), self._sent.pop(e.id, None)) for e in done]
        for entry, reason in failed:
            self._sent.pop(entry.id, None)
            rows.append(not_posted(_message_id(entry), reason))
        await record_posts(session, rows)
