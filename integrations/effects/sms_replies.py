"""The executors of an inbound SMS reply's effects: posting it into the channel as the external
participant who sent it, and deleting that copy when retention ends its lifespan. A reply has no
message row; its outbox entry is its record (integrations/effects/messages.py posts staff messages).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from engine.effects import DeleteSmsReplyFromChannel, Effect, PostSmsReply
from integrations.effects.executor import RelayContext
from integrations.effects.messages import SMS_REPLY_CUSTOM_TYPE, post_once
from integrations.effects.outbox import OutboxEntry


def sms_reply_data(dedup_id: str) -> str:
    """The ``data`` an SMS reply is posted with: the provider's message id, what it is found by."""
    return json.dumps({"source": "sms", "sms_id": dedup_id})


_REPLY_POSTED = text(
    "UPDATE outbox SET payload = payload || jsonb_build_object('chat_message_id', CAST(:chat_id AS bigint))"
    " WHERE id = :id"
)


class PostSmsReplyExecutor:
    """Post an inbound SMS into the channel as the external participant who sent it.

    The provider's message id is carried in ``data`` (what :func:`post_once` reconciles on) and as
    ``dedup_id`` (a second layer), so a provider retry (or ours) never posts twice.
    """

    handles: tuple[type[Effect], ...] = (PostSmsReply,)

    async def deliver(self, effect: PostSmsReply, entry: OutboxEntry, ctx: RelayContext) -> None:
        posted = await post_once(
            ctx.chat,
            entry,
            effect.channel_url,
            sender_id=effect.sender_chat_id,
            text=effect.text,
            dedup_id=effect.dedup_id,
            custom_type=SMS_REPLY_CUSTOM_TYPE,
            data=sms_reply_data(effect.dedup_id),
        )
        # The reply has no message row: its entry keeps the channel's id of it, which is how
        # retention deletes the channel's copy later (DeleteSmsReplyExecutor).
        async with ctx.sessions() as session, session.begin():
            await session.execute(_REPLY_POSTED, {"id": entry.id, "chat_id": posted.message_id})

    async def settle(
        self, done: Sequence[OutboxEntry], failed: Sequence[tuple[OutboxEntry, str]], session: AsyncSession
    ) -> None:
        """Nothing to record beyond the relay's own row and audit record of each entry."""


class DeleteSmsReplyExecutor:
    """Delete an SMS reply's copy from its channel (retention): by the id its post recorded, else
    found by the provider's message id in ``data`` among the participant's recent replies. A reply
    that never reached the channel, or is gone already, has nothing to delete."""

    handles: tuple[type[Effect], ...] = (DeleteSmsReplyFromChannel,)

    async def deliver(self, effect: DeleteSmsReplyFromChannel, entry: OutboxEntry, ctx: RelayContext) -> None:
        chat_id = effect.chat_message_id
        if chat_id is None:
            found = await ctx.chat.find_message(
                effect.channel_url,
                sender_id=effect.sender_chat_id,
                custom_type=SMS_REPLY_CUSTOM_TYPE,
                data=sms_reply_data(effect.dedup_id),
                kind="text",  # posted as a text message (PostSmsReplyExecutor)
            )
            chat_id = None if found is None else found.message_id
        if chat_id:  # 0: a post Sendbird took but whose id could not be learned
            await ctx.chat.delete_message(effect.channel_url, chat_id)

    async def settle(
        self, done: Sequence[OutboxEntry], failed: Sequence[tuple[OutboxEntry, str]], session: AsyncSession
    ) -> None:
        """Nothing to record beyond the relay's own row and audit record of each entry
        (``delivery.delete_sms_reply``)."""
