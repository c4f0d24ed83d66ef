"""``SendbirdChatGateway``: :class:`engine.ports.ChatGateway` on the Sendbird client, safe to repeat."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final

import structlog

from engine.errors import (
    ChatAlreadyExists,
    ChatInvalidRequest,
    ChatNotFound,
    ChatUnavailable,
)
from engine.ports import ChatPostKind, SentChatMessage
from integrations.sendbird.client import ListedType, SendbirdClient

_log = structlog.get_logger("integrations.sendbird")

# What ``SendbirdChatGateway.send_message`` reports when Sendbird refused a duplicate ``dedup_id`` and
# the original message could not be found again: the message was delivered, its id is not known.
UNKNOWN_MESSAGE_ID: Final = 0

# How far back the gateway looks for the original of a refused duplicate, and how much clock skew
# between us and Sendbird it allows for when anchoring that search at "now".
_DUPLICATE_LOOKBACK: Final = 100
# A day: a false "not posted" (anchor behind Sendbird's clock, newest messages missed) would post twice,
# while anchoring later than needed costs nothing (the page is the newest messages before it).
_CLOCK_SKEW_MS: Final = 86_400_000


# The Sendbird message type each kind of post is stored as (§5: MESG a text, FILE a file), which is
# what list_messages filters on: a file post is found only among FILE messages, a text among MESG.
_LISTED_AS: Final[dict[ChatPostKind, ListedType]] = {"text": "MESG", "file": "FILE"}


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class SendbirdChatGateway:
    """:class:`engine.ports.ChatGateway` on Sendbird: every method is safe to call again after any failure.

    Nothing here trusts an answer Sendbird does not document (sendbird-api.md §8). Whether a call
    that failed ambiguously (timeout, dropped connection, 5xx) took effect is learned by reading:
    the channel (creation, membership) or its recent messages (:meth:`find_message`, matched on the
    caller's own id carried in ``data``, a field every message reply returns, §5).
    """

    def __init__(self, client: SendbirdClient, *, wall_clock_ms: Callable[[], int] = _wall_clock_ms) -> None:
        self._client = client
        self._wall_clock_ms = wall_clock_ms

    async def ensure_user(self, user_id: str, nickname: str, *, phone_number: str | None = None) -> None:
        """Create the user, or bring an existing one's nickname (and phone number, if given) up to date.

        A create that failed ambiguously and is repeated answers 400202 (§3, duplicate ``user_id``),
        which lands here as "update" too.
        """
        try:
            await self._client.create_user(user_id, nickname=nickname, phone_number=phone_number)
        except ChatAlreadyExists:
            await self._client.update_user(user_id, nickname=nickname, phone_number=phone_number)

    async def ensure_channel(
        self,
        channel_url: str,
        *,
        name: str,
        user_ids: Sequence[str],
        custom_type: str = "",
        data: str = "",
        repeat: bool = False,
    ) -> None:
        """Create the channel at ``channel_url``, or add the missing ``user_ids`` to the one already there.

        With ``repeat`` (an earlier attempt may have taken effect) the channel is read first and only
        what is missing is done. After an ambiguous failure of the create, the channel is read too.
        The users must exist already (:meth:`ensure_user`): creation is strict, see
        :meth:`SendbirdClient.create_group_channel`.
        """
        if repeat and await self._complete_existing(channel_url, user_ids):
            return
        try:
            await self._client.create_group_channel(
                channel_url, name=name, user_ids=user_ids, custom_type=custom_type, data=data
            )
        except ChatAlreadyExists:
            await self._complete_existing(channel_url, user_ids)
        except ChatUnavailable:
            if not await self._complete_existing(channel_url, user_ids):
                raise

    async def _complete_existing(self, channel_url: str, user_ids: Sequence[str]) -> bool:
        """If the channel exists, invite whoever of ``user_ids`` is not in it; False if there is none."""
        try:
            channel = await self._client.get_group_channel(channel_url)
        except ChatNotFound:
            return False
        missing = [u for u in _unique(user_ids) if u not in channel.member_ids]
        if missing:
            await self._client.invite_members(channel_url, missing)
        return True

    async def invite_members(self, channel_url: str, user_ids: Sequence[str]) -> None:
        """Add members to an existing channel; members already in it stay as they are."""
        if user_ids:
            await self._client.invite_members(channel_url, _unique(user_ids))

    async def remove_members(
        self, channel_url: str, user_ids: Sequence[str], *, repeat: bool = False
    ) -> None:
        """Make sure none of ``user_ids`` is a member; a missing channel or a non-member is not an error.

        How Sendbird answers "leave" for a non-member is undocumented (§8), so whenever the answer is
        not a plain success (or ``repeat`` says an earlier attempt may have done part of it), the
        member list is read and only whoever is still in is removed.
        """
        wanted = _unique(user_ids)
        if not wanted:
            return
        if not repeat:
            try:
                await self._client.leave_members(channel_url, wanted)
                return
            except (ChatNotFound, ChatInvalidRequest, ChatUnavailable):
                pass  # read below what the call did or did not do
        try:
            channel = await self._client.get_group_channel(channel_url)
        except ChatNotFound:
            return  # no channel, so nobody is a member of it
        still_in = [user_id for user_id in wanted if user_id in channel.member_ids]
        if still_in:
            await self._client.leave_members(channel_url, still_in)

    async def send_message(
        self,
        channel_url: str,
        *,
        sender_id: str,
        text: str,
        dedup_id: str,
        custom_type: str = "",
        data: str = "",
    ) -> SentChatMessage:
        """Post a text message with ``dedup_id`` as a second layer against duplicates.

        What Sendbird returns for a repeated ``dedup_id`` is undocumented (§8): the original message
        (nothing special to do), 400202, another 4xx, or a second message. Whether an earlier post
        landed is therefore learned with :meth:`find_message` by the caller (the outbox relay), not
        from this answer. Only the one answer that says so outright, "already exists", is resolved
        here: the original is looked up by ``data``; if it is not found again it is reported
        delivered with :data:`UNKNOWN_MESSAGE_ID`.
        """
        try:
            sent = await self._client.send_message(
                channel_url,
                user_id=sender_id,
                message=text,
                dedup_id=dedup_id,
                custom_type=custom_type,
                data=data,
            )
        except ChatAlreadyExists:
            found = await self.find_message(
                channel_url, sender_id=sender_id, custom_type=custom_type, data=data, kind="text", text=text
            )
            if found is not None:
                _log.info("sendbird.duplicate_resolved", message_id=found.message_id)
                return found
            _log.warning("sendbird.duplicate_unresolved")
            return SentChatMessage(UNKNOWN_MESSAGE_ID, channel_url, 0)
        return SentChatMessage(sent.message_id, sent.channel_url, sent.created_at_ms)

    async def send_file(
        self,
        channel_url: str,
        *,
        sender_id: str,
        file: bytes,
        file_name: str,
        content_type: str,
        dedup_id: str,
        custom_type: str = "",
        data: str = "",
    ) -> SentChatMessage:
        """Post a file message; a repeat is resolved like :meth:`send_message`'s, the original looked
        for among the channel's file messages."""
        try:
            sent = await self._client.send_file_message(
                channel_url,
                user_id=sender_id,
                file=file,
                file_name=file_name,
                content_type=content_type,
                dedup_id=dedup_id,
                custom_type=custom_type,
                data=data,
            )
        except ChatAlreadyExists:
            found = await self.find_message(
                channel_url, sender_id=sender_id, custom_type=custom_type, data=data, kind="file"
            )
            if found is not None:
                _log.info("sendbird.duplicate_resolved", message_id=found.message_id)
                return found
            _log.warning("sendbird.duplicate_unresolved")
            return SentChatMessage(UNKNOWN_MESSAGE_ID, channel_url, 0)
        return SentChatMessage(sent.message_id, sent.channel_url, sent.created_at_ms)

    async def find_message(
        self,
        channel_url: str,
        *,
        sender_id: str,
        custom_type: str,
        data: str,
        kind: ChatPostKind | None,
        text: str | None = None,
    ) -> SentChatMessage | None:
        """The newest message ``sender_id`` posted with exactly this ``custom_type`` and ``data``, if it
        is among the sender's latest messages of that custom type and ``kind`` in the channel (a
        file post among the FILE messages, a text among the MESG ones; None: any type); None if it
        is not.

        ``data`` carries the caller's own id of the message, so a match is that message. Without
        ``data`` (older posts), ``text`` must match too. Raises like any call when the read fails:
        the caller then knows nothing yet.
        """
        recent = await self._client.list_messages(
            channel_url,
            message_ts=self._wall_clock_ms() + _CLOCK_SKEW_MS,
            prev_limit=_DUPLICATE_LOOKBACK,
            next_limit=0,
            sender_ids=[sender_id],
            custom_types=[custom_type] if custom_type else (),
            message_type=None if kind is None else _LISTED_AS[kind],
        )
        for message in reversed(recent):  # newest first: a retry follows its original closely
            if (message.sender_id, message.custom_type, message.data) != (sender_id, custom_type, data):
                continue
            if data or message.message == text:
                return SentChatMessage(message.message_id, message.channel_url, message.created_at_ms)
        return None

    async def delete_message(self, channel_url: str, message_id: int) -> None:
        """Delete the message; Sendbird's "not found" (400201: deleted already, by an earlier attempt
        whose answer was lost) means it is gone, which is what was asked."""
        try:
            await self._client.delete_message(channel_url, message_id)
        except ChatNotFound:
            _log.info("sendbird.delete_found_gone", message_id=message_id)


def _unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))
