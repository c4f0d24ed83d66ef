"""SendbirdChatGateway, the chat gateway port's adapter, against the emulator: users and channels
made idempotent (ensure_*), membership changes, posts and their ids, and how the client's errors
reach the relay (duplicates, ambiguous creates, retryable failures). Fixtures: conftest.py here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from engine.errors import ChatUnavailable
from engine.ports import ChatGateway, ChatPostKind, SentChatMessage
from integrations.sendbird import UNKNOWN_MESSAGE_ID, SendbirdChatGateway, SendbirdClient
from integrations.sendbird_emulator import DedupMode, RunningEmulator
from tests.support.sendbird import CHANNEL, PHONE, SECRET_TEXT, client_events, seed_team, sendbird_error


async def test_gateway_implements_the_chat_gateway_port(
    gateway: SendbirdChatGateway, emulator: RunningEmulator
) -> None:
    port: ChatGateway = gateway  # mypy checks the structural match

    await port.ensure_user("alice", "Alice")

    assert "alice" in emulator.state.users


async def test_ensure_user_creates_a_missing_user(
    gateway: SendbirdChatGateway, emulator: RunningEmulator
) -> None:
    await gateway.ensure_user("alice", "Alice", phone_number=PHONE)

    user = emulator.state.users["alice"]
    assert (user.nickname, user.phone_number) == ("Alice", PHONE)


async def test_ensure_user_updates_nickname_and_phone_of_an_existing_user(
    gateway: SendbirdChatGateway, emulator: RunningEmulator
) -> None:
    await gateway.ensure_user("alice", "Alice")

    await gateway.ensure_user("alice", "Alice B.", phone_number=PHONE)
    await gateway.ensure_user("alice", "Alice B.")  # no phone given: the stored one stays

    user = emulator.state.users["alice"]
    assert (user.nickname, user.phone_number) == ("Alice B.", PHONE)


async def test_ensure_channel_creates_the_channel_with_its_members(
    gateway: SendbirdChatGateway, emulator: RunningEmulator
) -> None:
    for user_id in ("alice", "bob"):
        await gateway.ensure_user(user_id, user_id)

    await gateway.ensure_channel(
        CHANNEL, name="Ward 7", user_ids=["alice", "bob"], custom_type="care_team", data="{}"
    )

    channel = emulator.state.channels[CHANNEL]
    assert (channel.name, channel.custom_type, channel.data, channel.members) == (
        "Ward 7",
        "care_team",
        "{}",
        ["alice", "bob"],
    )


async def test_ensure_channel_on_an_existing_channel_invites_the_members(
    gateway: SendbirdChatGateway, emulator: RunningEmulator
) -> None:
    for user_id in ("alice", "bob", "carol"):
        await gateway.ensure_user(user_id, user_id)
    await gateway.ensure_channel(CHANNEL, name="Ward 7", user_ids=["alice"])

    await gateway.ensure_channel(CHANNEL, name="Ward 7", user_ids=["alice", "bob", "carol"])

    assert emulator.state.channels[CHANNEL].members == ["alice", "bob", "carol"]


async def test_invite_members_keeps_existing_members_and_ignores_an_empty_list(
    client: SendbirdClient, gateway: SendbirdChatGateway, emulator: RunningEmulator
) -> None:
    await seed_team(client, "carol")
    before = len(emulator.state.received)

    await gateway.invite_members(CHANNEL, [])
    await gateway.invite_members(CHANNEL, ["carol", "carol", "bob"])

    assert emulator.state.channels[CHANNEL].members == ["alice", "bob", "carol"]
    assert len(emulator.state.received) == before + 1


async def test_remove_members_removes_the_members_and_ignores_non_members(
    client: SendbirdClient, gateway: SendbirdChatGateway, emulator: RunningEmulator
) -> None:
    await seed_team(client, "dave")

    await gateway.remove_members(CHANNEL, ["alice", "dave", "ghost"])

    assert emulator.state.channels[CHANNEL].members == ["bob"]


async def test_remove_members_on_a_missing_channel_is_not_an_error(
    gateway: SendbirdChatGateway, emulator: RunningEmulator
) -> None:
    await gateway.remove_members("no_such_channel", ["alice"])  # returns: nothing to remove

    # It asked to leave, was told the channel does not exist, read it to be sure, and made nothing.
    assert [r.method for r in emulator.state.received if "no_such_channel" in r.path] == ["PUT", "GET"]
    assert "no_such_channel" not in emulator.state.channels


async def test_send_message_returns_the_sent_message(
    client: SendbirdClient, gateway: SendbirdChatGateway, emulator: RunningEmulator
) -> None:
    await seed_team(client)

    sent = await gateway.send_message(
        CHANNEL, sender_id="alice", text=SECRET_TEXT, dedup_id="d-1", custom_type="sms"
    )

    [stored] = emulator.state.messages(CHANNEL)
    assert sent == SentChatMessage(stored.message_id, CHANNEL, stored.created_at)
    assert (stored.sender_id, stored.message, stored.custom_type, stored.dedup_id) == (
        "alice",
        SECRET_TEXT,
        "sms",
        "d-1",
    )


async def test_send_message_with_a_repeated_dedup_id_returns_the_original_and_posts_once(
    client: SendbirdClient, gateway: SendbirdChatGateway, emulator: RunningEmulator
) -> None:
    await seed_team(client)

    first = await gateway.send_message(CHANNEL, sender_id="alice", text=SECRET_TEXT, dedup_id="d-1")
    again = await gateway.send_message(CHANNEL, sender_id="alice", text=SECRET_TEXT, dedup_id="d-1")

    assert again == first
    assert len(emulator.state.messages(CHANNEL)) == 1


def message_json(
    message_id: int, text: str, *, sender: str = "alice", custom_type: str = ""
) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "channel_url": CHANNEL,
        "type": "MESG",
        "message": text,
        "custom_type": custom_type,
        "data": "",
        "created_at": 1_000 + message_id,
        "user": {"user_id": sender},
    }


async def test_duplicate_refused_with_an_error_resolves_to_the_original_message(
    mocked: Callable[..., SendbirdClient],
) -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.method == "POST":
            return sendbird_error(400202)
        return httpx.Response(
            200,
            json={
                "messages": [
                    message_json(7, SECRET_TEXT),
                    message_json(8, "something else"),
                    message_json(9, SECRET_TEXT, custom_type="sms"),
                ]
            },
        )

    gateway = SendbirdChatGateway(mocked(handler), wall_clock_ms=lambda: 5_000)

    sent = await gateway.send_message(
        CHANNEL, sender_id="alice", text=SECRET_TEXT, dedup_id="d-1", custom_type="sms"
    )

    assert sent == SentChatMessage(9, CHANNEL, 1_009)
    lookup = requests[1].url.params
    assert (lookup["sender_ids"], lookup["message_type"], lookup["next_limit"]) == ("alice", "MESG", "0")
    assert int(lookup["message_ts"]) >= 5_000


async def test_duplicate_refused_and_not_found_again_is_reported_delivered_with_unknown_id(
    mocked: Callable[..., SendbirdClient],
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return sendbird_error(400202)
        return httpx.Response(200, json={"messages": [message_json(8, "something else")]})

    with capture_logs() as logs:
        sent = await SendbirdChatGateway(mocked(handler)).send_message(
            CHANNEL, sender_id="alice", text=SECRET_TEXT, dedup_id="d-1"
        )

    assert sent == SentChatMessage(UNKNOWN_MESSAGE_ID, CHANNEL, 0)
    assert client_events(logs) == ["sendbird.duplicate_unresolved"]


async def test_gateway_lets_retryable_failures_through_for_the_outbox_to_retry(
    client: SendbirdClient, gateway: SendbirdChatGateway, emulator: RunningEmulator
) -> None:
    emulator.state.faults.fail_next(1, status=502)

    with pytest.raises(ChatUnavailable):
        await gateway.ensure_user("alice", "Alice")
    await gateway.ensure_user("alice", "Alice")

    assert list(emulator.state.users) == ["alice"]


async def test_find_message_finds_a_post_by_the_callers_own_id_in_data_and_nothing_else(
    client: SendbirdClient, gateway: SendbirdChatGateway, emulator: RunningEmulator
) -> None:
    await seed_team(client)
    emulator.state.faults.drop_next(1)  # accept-then-drop: the post lands, its answer is lost
    with pytest.raises(ChatUnavailable):
        await gateway.send_message(
            CHANNEL, sender_id="alice", text=SECRET_TEXT, dedup_id="d-1", custom_type="m", data='{"id": 1}'
        )
    await gateway.send_message(
        CHANNEL, sender_id="alice", text=SECRET_TEXT, dedup_id="d-2", custom_type="m", data='{"id": 2}'
    )

    found = await gateway.find_message(
        CHANNEL, sender_id="alice", custom_type="m", data='{"id": 1}', kind="text"
    )
    missing = await gateway.find_message(
        CHANNEL, sender_id="alice", custom_type="m", data='{"id": 3}', kind="text"
    )
    other_sender = await gateway.find_message(
        CHANNEL, sender_id="bob", custom_type="m", data='{"id": 1}', kind="text"
    )

    first = emulator.state.messages(CHANNEL)[0]
    assert found == SentChatMessage(first.message_id, CHANNEL, first.created_at)
    assert missing is None
    assert other_sender is None


async def _send_file(gateway: SendbirdChatGateway, data: str, dedup_id: str = "f-1") -> SentChatMessage:
    return await gateway.send_file(
        CHANNEL,
        sender_id="alice",
        file=b"%PDF-1.7\n%%EOF\n",
        file_name="attachment-7.pdf",
        content_type="application/pdf",
        dedup_id=dedup_id,
        custom_type="m",
        data=data,
    )


async def test_find_message_finds_a_file_post_among_the_file_messages_only(
    client: SendbirdClient, gateway: SendbirdChatGateway, emulator: RunningEmulator
) -> None:
    await seed_team(client)
    await gateway.send_message(
        CHANNEL, sender_id="alice", text=SECRET_TEXT, dedup_id="d-1", custom_type="m", data='{"id": 1}'
    )
    emulator.state.faults.drop_next(1)  # accept-then-drop: the file lands, its answer is lost
    with pytest.raises(ChatUnavailable):
        await _send_file(gateway, '{"id": 2}')
    text_post, file_post = emulator.state.messages(CHANNEL)

    def find(data: str, kind: ChatPostKind | None) -> Awaitable[SentChatMessage | None]:
        return gateway.find_message(CHANNEL, sender_id="alice", custom_type="m", data=data, kind=kind)

    assert await find('{"id": 2}', "file") == SentChatMessage(
        file_post.message_id, CHANNEL, file_post.created_at
    )
    assert await find('{"id": 2}', None) == SentChatMessage(
        file_post.message_id, CHANNEL, file_post.created_at
    )
    assert await find('{"id": 2}', "text") is None  # the file is no text message
    assert await find('{"id": 1}', "file") is None  # nor the text a file message
    assert await find('{"id": 1}', "text") == SentChatMessage(
        text_post.message_id, CHANNEL, text_post.created_at
    )
    lookups = [
        r.query.get("message_type")
        for r in emulator.state.requests("GET", f"/v3/group_channels/{CHANNEL}/messages")
    ]
    assert lookups == ["FILE", None, "MESG", "FILE", "MESG"]


@pytest.mark.parametrize("dedup_mode", ["original", "already_exists"])
async def test_send_file_with_a_repeated_dedup_id_answers_the_original_file_message(
    client: SendbirdClient, gateway: SendbirdChatGateway, emulator: RunningEmulator, dedup_mode: DedupMode
) -> None:
    """Refused as existing, the original is looked up among the file messages: its id is learned,
    not recorded as unknown (0), which would leave a recall nothing to delete."""
    await seed_team(client)
    emulator.state.dedup_mode = dedup_mode

    first = await _send_file(gateway, '{"id": 7}')
    again = await _send_file(gateway, '{"id": 7}')

    assert again == first
    assert again.message_id != UNKNOWN_MESSAGE_ID
    assert len(emulator.state.messages(CHANNEL)) == 1


async def test_ensure_channel_after_an_ambiguous_create_reads_the_channel_and_adds_only_who_is_missing(
    client: SendbirdClient, gateway: SendbirdChatGateway, emulator: RunningEmulator
) -> None:
    for user_id in ("alice", "bob", "carol"):
        await client.create_user(user_id, nickname=user_id)
    emulator.state.faults.drop_next(1)  # the create takes effect, its answer is lost

    await gateway.ensure_channel(CHANNEL, name="Ward 7", user_ids=["alice", "bob"])
    await gateway.ensure_channel(CHANNEL, name="Ward 7", user_ids=["alice", "bob", "carol"], repeat=True)

    assert emulator.state.channels[CHANNEL].members == ["alice", "bob", "carol"]
    creates = emulator.state.requests("POST", "/v3/group_channels")
    invites = emulator.state.requests("POST", f"/v3/group_channels/{CHANNEL}/invite")
    assert len(creates) == 1  # created once; then read, and only carol invited
    assert [r.body["user_ids"] for r in invites] == [["carol"]]


async def test_remove_members_repeated_reads_the_channel_and_leaves_only_who_is_still_in(
    client: SendbirdClient, gateway: SendbirdChatGateway, emulator: RunningEmulator
) -> None:
    await seed_team(client)
    await client.leave_members(CHANNEL, ["alice"])  # an earlier attempt took effect

    await gateway.remove_members(CHANNEL, ["alice"], repeat=True)

    assert emulator.state.requests("PUT", f"/v3/group_channels/{CHANNEL}/leave")[1:] == []
    assert emulator.state.channels[CHANNEL].members == ["bob"]


async def test_the_gateway_deletes_a_message_once_and_a_repeat_finds_it_gone_without_error(
    client: SendbirdClient, gateway: SendbirdChatGateway
) -> None:
    await seed_team(client)
    sent = await client.send_message(CHANNEL, user_id="alice", message=SECRET_TEXT)

    await gateway.delete_message(CHANNEL, sent.message_id)
    await gateway.delete_message(CHANNEL, sent.message_id)  # an earlier attempt's answer was lost

    assert await client.list_messages(CHANNEL, message_ts=0, prev_limit=0, next_limit=10) == []
