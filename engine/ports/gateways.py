"""Chat and SMS gateway ports: what the relay asks of Sendbird (or its emulator) and the SMS provider."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

#: The kind of a chat post: a text message or a file message (Sendbird's ``MESG`` and ``FILE``). A
#: post is looked for among the channel's messages of its own kind (:meth:`ChatGateway.find_message`).
ChatPostKind = Literal["text", "file"]


@dataclass(frozen=True)
class SentChatMessage:
    """What the chat provider says about a message it accepted."""

    message_id: int
    channel_url: str
    created_at_ms: int


class ChatGateway(Protocol):
    """Group-channel chat for staff (Sendbird in production, the emulator in development).

    Every method is safe to retry: creating what exists already is not an error. Whether a call that
    failed ambiguously took effect is learned by reading, never from an undocumented answer: the
    channel for creation and membership (``repeat``), the channel's recent messages for posts
    (``find_message`` on the caller's own id in ``data``); ``dedup_id`` is only a second layer.
    Failures raise :class:`engine.errors.ChatGatewayError` subclasses whose ``retryable`` flag
    tells the caller whether trying again can help.
    """

    async def ensure_user(self, user_id: str, nickname: str, *, phone_number: str | None = None) -> None:
        """Make sure a chat user exists with this opaque id (never PII as an id)."""
        ...

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
        """Create the group channel, or, if it exists already, make sure these users are members.

        ``repeat``: an earlier attempt may have taken effect; read the channel before acting again.
        """
        ...

    async def invite_members(self, channel_url: str, user_ids: Sequence[str]) -> None:
        """Add members to an existing channel."""
        ...

    async def remove_members(
        self, channel_url: str, user_ids: Sequence[str], *, repeat: bool = False
    ) -> None:
        """Remove members from a channel; removing a non-member is not an error.

        ``repeat``: an earlier attempt may have taken effect; read the channel before acting again.
        """
        ...

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
        """Post a text message as ``sender_id``, passing ``dedup_id`` as a second layer against repeats.

        Does not by itself guarantee one post per ``dedup_id``: the caller reconciles with
        :meth:`find_message` after an ambiguous failure.
        """
        ...

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
        """Post a file message as ``sender_id`` (``file_name`` is caremsg's, never the uploader's);
        like :meth:`send_message`, the caller reconciles with :meth:`find_message` after an ambiguous
        failure."""
        ...

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
        """The message ``sender_id`` posted with exactly this ``custom_type`` and ``data`` (which
        carries the caller's own id of it) among the channel's recent messages of ``kind`` (a text
        post is not a file post: each is looked for as what it was posted as; None: of any kind), or
        None.

        Raises :class:`engine.errors.ChatGatewayError` when the channel cannot be read.
        """
        ...

    async def delete_message(self, channel_url: str, message_id: int) -> None:
        """Delete a message from the channel (Sendbird keeps it listable only with
        ``including_removed``); a message that is gone already is not an error."""
        ...


class SmsGateway(Protocol):
    """Text messages to external participants (Sendbird Business Messaging in production).

    ``send_sms`` either hands the text to the provider or raises a
    :class:`engine.errors.ChatGatewayError` subclass whose ``retryable`` flag tells the relay
    whether to try again. The provider offers no dedup key, so a retry after an ambiguous failure
    (timeout, dropped connection) may text twice: delivery is at least once, never lost.
    """

    async def send_sms(self, *, recipient_user_id: str, phone_number: str, text: str) -> str:
        """Send ``text`` to the Sendbird user carrying ``phone_number``; returns the provider's id."""
        ...
