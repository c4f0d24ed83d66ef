"""Taking a recalled message out of its chat channel, and telling the channel a message was recalled.

The recall workflow asks for one :class:`engine.effects.RecallFromChannel` in the transaction that
recalls the message (and cancels whatever of it had not gone out). This executor finds the message's
copy in the channel — by the Sendbird id recorded when it was posted, else by caremsg's own id in
``data`` (a post whose answer was lost) among the channel's messages of the kind it was posted as
(a file message for an attachment, a text message otherwise) — deletes it (``DELETE
/v3/group_channels/{channel_url}/messages/{message_id}``: it then leaves every listing unless
``including_removed=true``) and posts a notice in its place as caremsg's system user, saying only
that a message was recalled.

A post that a relay was delivering at the moment of the recall may still land: while it is pending
and not found in the channel, this effect is retried, so the copy is deleted once it is there. So
may a post cancelled after one of its requests went unanswered (a timeout: Sendbird may have taken
it and store it late), whether the recall or a relay cancelled it: for :data:`LATE_LANDING_SECONDS`
after the cancel it counts as still being delivered. A message that never reached the channel (its
post cancelled before any request was made, or that window over) has nothing to delete and no
notice.
Safe to repeat: deleting a message gone already is not an error, and the notice is posted once
(``post_once``, reconciled on the recalled message's id in ``data``).

The retention sweep asks for :class:`engine.effects.DeleteFromChannel`: the same deletion, done by
this same executor, without the notice (a message whose content's lifespan ended is not news).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from engine.effects import DeleteFromChannel, Effect, PostAttachment, PostMessage, RecallFromChannel, kind_of
from engine.errors import ChatUnavailable
from integrations.db.messaging import PENDING_CTE
from integrations.effects.executor import RelayContext
from integrations.effects.messages import post_once
from integrations.effects.outbox import OutboxEntry

#: The chat user system notices are posted as (an opaque id, like every chat user id).
SYSTEM_USER = "caremsg_system"
#: custom_type of recall notices; what a chat client may render as a system line.
RECALL_NOTICE_CUSTOM_TYPE = "caremsg_recall_notice"
#: What the channel is told: that a message was recalled, never what it said or who recalled it.
RECALL_NOTICE = "A message in this conversation was recalled."
#: custom_type caremsg's own message posts carry (integrations/effects/messages.py).
MESSAGE_CUSTOM_TYPE = "caremsg_message"
#: How long after a post with an unanswered request was cancelled its copy may still land: many
#: times the chat client's timeout (``sendbird.timeout_seconds``, 5 s by default).
LATE_LANDING_SECONDS = 60

#: The recalled message's post in the channel, whether its post is still to go out (compared with
#: ``pending.status``: :data:`~integrations.db.messaging.PENDING_CTE` says why), and whether it was
#: posted as a file (its post is a ``PostAttachment``): what its copy is looked for as. Read from the
#: outbox, whose rows stay, not from the attachment, which retention deletes with the content.
RECALLED = text(
    f"WITH {PENDING_CTE}"  # noqa: S608 - assembled from constants; every value is a bound parameter
    " SELECT m.chat_message_id, c.channel_url, u.chat_user_id AS sender_chat_id,"
    " EXISTS (SELECT 1 FROM outbox o, pending p WHERE o.message_id = m.id"
    "         AND o.kind = ANY(CAST(:posts AS text[])) AND (o.status = p.status"
    # cancelled after a request (attempts counts requests made) and not long ago: it may still land
    "           OR (o.status = 'cancelled' AND o.attempts > 0"
    "               AND o.done_at > now() - make_interval(secs => :late_landing)))) AS post_pending,"
    " EXISTS (SELECT 1 FROM outbox o WHERE o.message_id = m.id AND o.kind = :file_post) AS file_post"
    " FROM messages m JOIN conversations c ON c.id = m.conversation_id"
    " JOIN users u ON u.id = m.sender_id WHERE m.id = :id"
)


def recalled_parameters(message_id: int) -> dict[str, object]:
    """The bind parameters of :data:`RECALLED` for the message: the kinds of its posts, and of a file's."""
    posts = [kind_of(PostMessage), kind_of(PostAttachment)]
    return {
        "id": message_id,
        "posts": posts,
        "file_post": kind_of(PostAttachment),
        "late_landing": LATE_LANDING_SECONDS,
    }


class RecallExecutor:
    """Delete a recalled message's copy from its channel and post the recall notice there."""

    handles: tuple[type[Effect], ...] = (RecallFromChannel, DeleteFromChannel)

    async def deliver(
        self, effect: RecallFromChannel | DeleteFromChannel, entry: OutboxEntry, ctx: RelayContext
    ) -> None:
        async with ctx.sessions() as session:
            row = (await session.execute(RECALLED, recalled_parameters(effect.message_id))).one()
        chat_id = row.chat_message_id
        # None: no id recorded (not posted, or its answer was lost); 0: Sendbird took the post but its
        # id could not be learned then (UNKNOWN_MESSAGE_ID). Either way it is looked for by caremsg's
        # id, as what it was posted as: a file among the channel's file messages.
        if not chat_id:
            found = await ctx.chat.find_message(
                row.channel_url,
                sender_id=row.sender_chat_id,
                custom_type=MESSAGE_CUSTOM_TYPE,
                data=json.dumps({"message_id": effect.message_id}),
                kind="file" if row.file_post else "text",
            )
            if found is None and chat_id is None and row.post_pending:
                raise ChatUnavailable("the recalled message's post is still being delivered")
            if found is not None:
                chat_id = found.message_id
        if chat_id is None:
            return  # it never reached the channel: nothing to delete, nobody to tell
        if chat_id > 0:  # still 0: taken, but not found among the channel's recent messages
            await ctx.chat.delete_message(row.channel_url, chat_id)
        if isinstance(effect, DeleteFromChannel):
            return  # retention: the content's lifespan ended; nobody is told in the channel
        await ctx.chat.ensure_user(SYSTEM_USER, "caremsg")
        await ctx.chat.invite_members(row.channel_url, [SYSTEM_USER])
        await post_once(
            ctx.chat,
            entry,
            row.channel_url,
            sender_id=SYSTEM_USER,
            text=RECALL_NOTICE,
            dedup_id=f"caremsg_recall_{effect.message_id}",
            custom_type=RECALL_NOTICE_CUSTOM_TYPE,
            data=json.dumps({"recalled_message_id": effect.message_id}),
        )

    async def settle(
        self, done: Sequence[OutboxEntry], failed: Sequence[tuple[OutboxEntry, str]], session: AsyncSession
    ) -> None:
        """Nothing to record beyond the relay's own row and audit record of each entry
        (``delivery.recall_message``)."""
