"""When the relay reads the channel instead of trusting an answer
(``integrations.effects.messages.post_once``), on a fake chat gateway: every case of the rule, in
milliseconds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from engine.effects import PostMessage
from engine.errors import (
    ChatAlreadyExists,
    ChatGatewayError,
    ChatInvalidRequest,
    ChatNotFound,
    ChatRateLimited,
    ChatUnavailable,
)
from engine.ports import ChatPostKind, SentChatMessage
from integrations.effects.messages import ChatFile
from integrations.relay import OutboxEntry, post_once

CHANNEL = "ward_7"
DATA = '{"message_id": 7}'


@dataclass
class FakeChat:
    """A channel in memory. ``post_errors``: what the next posts raise, in order (after taking effect
    when ``lands`` says so); ``read_errors``: what the next reads raise."""

    posted: list[SentChatMessage] = field(default_factory=list)
    data: dict[int, str] = field(default_factory=dict)
    #: What each post was posted as, by its id; what each read asked for, in order.
    kinds: dict[int, ChatPostKind] = field(default_factory=dict)
    asked: list[ChatPostKind | None] = field(default_factory=list)
    post_errors: list[tuple[ChatGatewayError, bool]] = field(default_factory=list)
    read_errors: list[ChatGatewayError] = field(default_factory=list)
    posts: int = 0
    reads: int = 0

    async def ensure_user(self, user_id: str, nickname: str, *, phone_number: str | None = None) -> None:
        return None

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
        return None

    async def invite_members(self, channel_url: str, user_ids: Sequence[str]) -> None:
        return None

    async def remove_members(
        self, channel_url: str, user_ids: Sequence[str], *, repeat: bool = False
    ) -> None:
        return None

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
        return self._post(channel_url, data, "text")

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
        return self._post(channel_url, data, "file")

    def _post(self, channel_url: str, data: str, kind: ChatPostKind) -> SentChatMessage:
        self.posts += 1
        error, lands = self.post_errors.pop(0) if self.post_errors else (None, True)
        if lands:
            message = SentChatMessage(100 + len(self.posted), channel_url, 1_000)
            self.posted.append(message)
            self.data[message.message_id] = data
            self.kinds[message.message_id] = kind
        if error is not None:
            raise error
        return self.posted[-1]

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
        """Like Sendbird's listing, only messages of the kind asked for (None: any)."""
        self.reads += 1
        self.asked.append(kind)
        if self.read_errors:
            raise self.read_errors.pop(0)
        return next(
            (
                m
                for m in reversed(self.posted)
                if self.data[m.message_id] == data and kind in (None, self.kinds[m.message_id])
            ),
            None,
        )


def entry(attempts: int) -> OutboxEntry:
    return OutboxEntry(1, "send_message", PostMessage(conversation_id=3, message_id=7), attempts)


async def post(chat: FakeChat, attempts: int = 1, file: ChatFile | None = None) -> SentChatMessage:
    return await post_once(
        chat,
        entry(attempts),
        CHANNEL,
        sender_id="alice",
        text="" if file else "hi",
        dedup_id="caremsg_msg_7",
        custom_type="caremsg_message",
        data=DATA,
        file=file,
    )


async def test_a_first_attempt_that_succeeds_posts_once_and_reads_nothing() -> None:
    chat = FakeChat()
    sent = await post(chat)
    assert (chat.posts, chat.reads, sent) == (1, 0, chat.posted[0])


async def test_a_repeat_finds_an_earlier_post_and_does_not_post_again() -> None:
    chat = FakeChat()
    await post(chat)  # the first attempt landed, but its outcome was never recorded
    found = await post(chat, attempts=2)
    assert (chat.posts, chat.reads, len(chat.posted), found) == (1, 1, 1, chat.posted[0])


async def test_a_repeat_that_finds_nothing_posts() -> None:
    chat = FakeChat()
    sent = await post(chat, attempts=2)
    assert (chat.posts, chat.reads, sent) == (1, 1, chat.posted[0])


@pytest.mark.parametrize(
    "error", [ChatUnavailable("timeout"), ChatUnavailable("502", status=502)], ids=["timeout", "5xx"]
)
async def test_an_answer_lost_after_the_post_landed_is_found_by_reading(error: ChatGatewayError) -> None:
    chat = FakeChat(post_errors=[(error, True)])
    found = await post(chat)
    assert (chat.posts, chat.reads, found) == (1, 1, chat.posted[0])


async def test_an_ambiguous_failure_with_nothing_in_the_channel_stays_a_retryable_failure() -> None:
    chat = FakeChat(post_errors=[(ChatUnavailable("timeout"), False)])
    with pytest.raises(ChatUnavailable):
        await post(chat)
    assert (chat.posts, chat.reads, chat.posted) == (1, 1, [])


async def test_a_read_that_fails_leaves_the_original_error_standing() -> None:
    chat = FakeChat(post_errors=[(ChatUnavailable("timeout"), True)], read_errors=[ChatUnavailable("read")])
    with pytest.raises(ChatUnavailable, match="timeout"):
        await post(chat)


async def test_a_repeat_whose_read_fails_posts_nothing_and_stays_retryable() -> None:
    chat = FakeChat(read_errors=[ChatUnavailable("outage")])
    with pytest.raises(ChatUnavailable):
        await post(chat, attempts=2)
    assert chat.posts == 0


@pytest.mark.parametrize(
    "error",
    [ChatAlreadyExists("400202"), ChatInvalidRequest("another 4xx")],
    ids=["400202", "another-4xx"],
)
async def test_an_error_answering_a_repeat_is_checked_against_the_channel(error: ChatGatewayError) -> None:
    # Not there when read before the repeat, there by the time the repeat was answered with an error.
    landed = FakeChat(post_errors=[(error, True)])
    found = await post(landed, attempts=2)
    assert (landed.posts, landed.reads, found) == (1, 2, landed.posted[0])

    # Not there at all: the error is believed.
    refused = FakeChat(post_errors=[(error, False)])
    with pytest.raises(type(error)):
        await post(refused, attempts=2)
    assert (refused.posts, refused.reads) == (1, 2)


@pytest.mark.parametrize(
    "error", [ChatInvalidRequest("bad"), ChatNotFound("no channel")], ids=["invalid", "not-found"]
)
async def test_a_refusal_of_a_first_attempt_is_believed_without_a_read(error: ChatGatewayError) -> None:
    chat = FakeChat(post_errors=[(error, False)])
    with pytest.raises(type(error)):
        await post(chat)
    assert chat.reads == 0


async def test_a_rate_limit_is_not_reconciled_sendbird_did_nothing() -> None:
    chat = FakeChat(post_errors=[(ChatRateLimited("429", retry_after=1.0), False)])
    with pytest.raises(ChatRateLimited):
        await post(chat)
    assert chat.reads == 0


PDF = ChatFile("attachment-3.pdf", "application/pdf", b"%PDF-1.4 ...")


async def test_a_file_post_is_looked_for_among_file_messages_before_and_after_posting() -> None:
    # Its answer lost after it landed: found as a file, not posted again on the repeat either.
    chat = FakeChat(post_errors=[(ChatUnavailable("timeout"), True)])
    found = await post(chat, file=PDF)
    again = await post(chat, attempts=2, file=PDF)
    assert (chat.posts, chat.asked, found, again) == (1, ["file", "file"], chat.posted[0], chat.posted[0])


async def test_a_text_post_is_not_taken_for_a_file_post_with_the_same_id_nor_the_other_way() -> None:
    # (caremsg posts a message either as a text or as a file, never both: this holds the kinds apart)
    chat = FakeChat()
    await post(chat)  # the text landed
    await post(chat, attempts=2, file=PDF)  # a file of the same id is still posted
    assert (chat.posts, chat.asked, [chat.kinds[m.message_id] for m in chat.posted]) == (
        2,
        ["file"],
        ["text", "file"],
    )
