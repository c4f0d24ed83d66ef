"""Executors of the effects on a conversation's chat channel: creating it, putting members in (the
on-call holder), taking members out."""

from __future__ import annotations

import json
from collections.abc import Sequence

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from engine.effects import CreateChannel, Effect, InviteMembers, RemoveMembers
from integrations.effects.executor import RelayContext
from integrations.effects.outbox import OutboxEntry

log = structlog.get_logger("caremsg.relay")

_CHANNEL_STATES = text(
    "UPDATE conversations c SET channel_state = s.state"
    " FROM unnest(CAST(:ids AS integer[]), CAST(:states AS text[])) AS s(id, state)"
    " WHERE c.id = s.id"
)


class CreateChannelExecutor:
    """Create a conversation's group channel with every member (users created first as needed); the
    conversation's channel is then ``ready`` (its other effects wait for that) or ``failed``."""

    handles: tuple[type[Effect], ...] = (CreateChannel,)

    async def deliver(self, effect: CreateChannel, entry: OutboxEntry, ctx: RelayContext) -> None:
        conversation_id = effect.conversation_id
        async with ctx.sessions() as session:
            conv = (
                await session.execute(
                    text("SELECT id, title, channel_url FROM conversations WHERE id = :id"),
                    {"id": conversation_id},
                )
            ).one()
            staff = (
                await session.execute(
                    text(
                        "SELECT u.chat_user_id, u.first_name, u.last_name FROM conversation_members m"
                        " JOIN users u ON u.id = m.user_id WHERE m.conversation_id = :id ORDER BY u.id"
                    ),
                    {"id": conversation_id},
                )
            ).all()
            external = (
                await session.execute(
                    text(
                        "SELECT chat_user_id, phone_number FROM external_participants"
                        " WHERE conversation_id = :id ORDER BY id"
                    ),
                    {"id": conversation_id},
                )
            ).all()
        for user in staff:
            # Sendbird caps nicknames at 80 characters (sendbird-api.md §3).
            nickname = f"{user.first_name} {user.last_name[:1]}."
            await ctx.chat.ensure_user(user.chat_user_id, nickname[:80])
        for ext in external:
            await ctx.chat.ensure_user(
                ext.chat_user_id, "External participant", phone_number=ext.phone_number
            )
        await ctx.chat.ensure_channel(
            conv.channel_url,
            name=conv.title[:191],  # Sendbird caps channel names at 191 characters (§4)
            user_ids=[u.chat_user_id for u in staff] + [e.chat_user_id for e in external],
            custom_type="caremsg_conversation",
            data=json.dumps({"conversation_id": conversation_id}),
            repeat=entry.attempts > 1,  # read the channel before creating it again
        )

    async def settle(
        self, done: Sequence[OutboxEntry], failed: Sequence[tuple[OutboxEntry, str]], session: AsyncSession
    ) -> None:
        states = [(e.effect, "ready") for e in done] + [(e.effect, "failed") for e, _ in failed]
        ids = [(effect.conversation_id, s) for effect, s in states if isinstance(effect, CreateChannel)]
        await session.execute(_CHANNEL_STATES, {"ids": [i for i, _ in ids], "states": [s for _, s in ids]})


class RemoveMembersExecutor:
    """Take chat users out of a conversation's channel (after a revocation); safe to repeat."""

    handles: tuple[type[Effect], ...] = (RemoveMembers,)

    async def deliver(self, effect: RemoveMembers, entry: OutboxEntry, ctx: RelayContext) -> None:
        async with ctx.sessions() as session:
            channel_url = (
                await session.execute(
                    text("SELECT channel_url FROM conversations WHERE id = :id"),
                    {"id": effect.conversation_id},
                )
            ).scalar_one()
        await ctx.chat.remove_members(channel_url, list(effect.chat_user_ids), repeat=entry.attempts > 1)

    async def settle(
        self, done: Sequence[OutboxEntry], failed: Sequence[tuple[OutboxEntry, str]], session: AsyncSession
    ) -> None:
        """Nothing to record on success: the membership rows went in the revocation's own transaction."""
        for entry, reason in failed:
            log.error("consents.channel_removal_failed", outbox_id=entry.id, reason=reason)


class InviteMembersExecutor:
    """Put staff into a conversation's channel (the new holder of its on-call role): their chat users
    are made first, as for a new channel; inviting a member again changes nothing, so it is safe to
    repeat."""

    handles: tuple[type[Effect], ...] = (InviteMembers,)

    async def deliver(self, effect: InviteMembers, entry: OutboxEntry, ctx: RelayContext) -> None:
        async with ctx.sessions() as session:
            channel_url = (
                await session.execute(
                    text("SELECT channel_url FROM conversations WHERE id = :id"),
                    {"id": effect.conversation_id},
                )
            ).scalar_one()
            staff = (
                await session.execute(
                    text(
                        "SELECT chat_user_id, first_name, last_name FROM users"
                        " WHERE chat_user_id = ANY(CAST(:ids AS text[])) ORDER BY id"
                    ),
                    {"ids": list(effect.chat_user_ids)},
                )
            ).all()
        for user in staff:
            nickname = f"{user.first_name} {user.last_name[:1]}."
            await ctx.chat.ensure_user(user.chat_user_id, nickname[:80])
        await ctx.chat.invite_members(channel_url, [u.chat_user_id for u in staff])

    async def settle(
        self, done: Sequence[OutboxEntry], failed: Sequence[tuple[OutboxEntry, str]], session: AsyncSession
    ) -> None:
        """Nothing to record on success: the hand-off's own transaction recorded who holds the role."""
        for entry, reason in failed:
            log.error("rosters.channel_invite_failed", outbox_id=entry.id, reason=reason)
