"""SendbirdClient over real HTTP against the emulator, plus MockTransport edge cases: users, group
channels, messages, channel metadata, the mapping of Sendbird's errors, retries (429, timeouts, 5xx
windows, dropped connections) and client-side rate limiting. The gateway built on it:
test_gateway.py; shared fixtures: conftest.py here.

Time that the client waits on (rate limiter, retry-after) runs on :class:`ManualClock`, so no test
sleeps and spacing is asserted on fake timestamps. Only the timeout test waits for real, 0.2 s,
because a timeout is what it checks.

Longer than 400 lines because the client's calls, its error mapping, retries and rate limits are
driven through the same fixtures and canned errors, and each error case is read next to the call it
breaks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest
from structlog.testing import capture_logs

from engine.errors import (
    ChatAlreadyExists,
    ChatCredentialsRejected,
    ChatGatewayError,
    ChatInvalidRequest,
    ChatNotFound,
    ChatRateLimited,
    ChatUnavailable,
)
from engine.ports import SentChatMessage
from integrations.sendbird import RateLimits, SendbirdChatGateway, SendbirdClient, TokenBucket
from integrations.sendbird_emulator import RunningEmulator
from tests.support.sendbird import (
    API_TOKEN,
    CHANNEL,
    PHONE,
    SECRET_TEXT,
    Handler,
    ManualClock,
    client_events,
    seed_team,
    sendbird_error,
)

# --------------------------------------------------------------------------------------------------
# Users
# --------------------------------------------------------------------------------------------------


async def test_create_user_returns_the_user_with_phone_number_and_metadata(client: SendbirdClient) -> None:
    user = await client.create_user(
        "u-1",
        nickname="Dr Ada",
        profile_url="https://img.example/a.png",
        phone_number=PHONE,
        metadata={"role": "rn"},
    )

    assert (user.user_id, user.nickname, user.profile_url) == ("u-1", "Dr Ada", "https://img.example/a.png")
    assert user.phone_number == PHONE
    assert user.metadata == {"role": "rn"}
    assert user.is_active
    assert user.created_at_ms > 0


async def test_get_user_returns_what_was_created(client: SendbirdClient) -> None:
    created = await client.create_user("u-1", nickname="Ada", phone_number=PHONE)

    assert await client.get_user("u-1") == created


async def test_user_ids_with_slashes_and_spaces_survive_the_url_path(client: SendbirdClient) -> None:
    await client.create_user("team/a b", nickname="Odd")

    assert (await client.get_user("team/a b")).user_id == "team/a b"


async def test_update_user_changes_only_the_given_fields(client: SendbirdClient) -> None:
    await client.create_user("u-1", nickname="Ada", profile_url="https://img.example/a.png")

    updated = await client.update_user("u-1", nickname="Ada L.", phone_number=PHONE)

    assert (updated.nickname, updated.phone_number) == ("Ada L.", PHONE)
    assert updated.profile_url == "https://img.example/a.png"


async def test_update_user_metadata_adds_keys_and_keeps_the_others(client: SendbirdClient) -> None:
    await client.create_user("u-1", nickname="Ada", metadata={"role": "rn"})

    changed = await client.update_user_metadata("u-1", {"unit": "icu"})

    assert changed == {"unit": "icu"}
    assert (await client.get_user("u-1")).metadata == {"role": "rn", "unit": "icu"}


# --------------------------------------------------------------------------------------------------
# Group channels
# --------------------------------------------------------------------------------------------------


async def test_create_group_channel_adds_members_and_operators(client: SendbirdClient) -> None:
    await client.create_user("alice", nickname="Alice")
    await client.create_user("bob", nickname="Bob")

    channel = await client.create_group_channel(
        CHANNEL,
        name="Ward 7",
        user_ids=["alice", "bob"],
        custom_type="care_team",
        data='{"ward":7}',
        operator_ids=["alice"],
    )

    assert channel.channel_url == CHANNEL
    assert (channel.name, channel.custom_type, channel.data) == ("Ward 7", "care_team", '{"ward":7}')
    assert (channel.member_ids, channel.member_count) == (("alice", "bob"), 2)
    assert channel.operator_ids == ("alice",)
    assert not channel.is_frozen


async def test_get_group_channel_lists_the_members(client: SendbirdClient) -> None:
    await seed_team(client)

    channel = await client.get_group_channel(CHANNEL)

    assert channel.member_ids == ("alice", "bob")


async def test_update_group_channel_changes_name_and_data_but_not_members(client: SendbirdClient) -> None:
    await seed_team(client)

    channel = await client.update_group_channel(CHANNEL, name="Ward 7 nights", data="{}")

    assert (channel.name, channel.data, channel.custom_type) == ("Ward 7 nights", "{}", "")
    assert channel.member_ids == ("alice", "bob")


async def test_invite_members_adds_users_to_the_channel(client: SendbirdClient) -> None:
    await seed_team(client, "carol")

    channel = await client.invite_members(CHANNEL, ["carol", "alice"])

    assert channel.member_ids == ("alice", "bob", "carol")


async def test_leave_members_removes_users_from_the_channel(client: SendbirdClient) -> None:
    await seed_team(client)

    await client.leave_members(CHANNEL, ["bob"])

    assert (await client.get_group_channel(CHANNEL)).member_ids == ("alice",)


async def test_freeze_channel_freezes_and_unfreezes(client: SendbirdClient) -> None:
    await seed_team(client)

    assert (await client.freeze_channel(CHANNEL, True)).is_frozen
    assert not (await client.freeze_channel(CHANNEL, False)).is_frozen


# --------------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------------


async def test_send_message_posts_a_text_message_as_the_sender(
    client: SendbirdClient, emulator: RunningEmulator
) -> None:
    await seed_team(client)

    sent = await client.send_message(
        CHANNEL,
        user_id="alice",
        message=SECRET_TEXT,
        dedup_id="sms-1",
        custom_type="sms",
        data='{"via":"sms"}',
    )

    assert (sent.channel_url, sent.message_type, sent.sender_id) == (CHANNEL, "MESG", "alice")
    assert (sent.message, sent.custom_type, sent.data) == (SECRET_TEXT, "sms", '{"via":"sms"}')
    assert sent.message_id > 0
    assert sent.created_at_ms > 0
    assert not sent.is_removed
    [stored] = emulator.state.messages(CHANNEL)
    assert (stored.message_id, stored.dedup_id) == (sent.message_id, "sms-1")


async def test_a_file_message_is_posted_as_multipart_with_its_file(
    client: SendbirdClient, emulator: RunningEmulator
) -> None:
    await seed_team(client)
    pdf = b"%PDF-1.7\n%%EOF\n"

    sent = await client.send_file_message(
        CHANNEL,
        user_id="alice",
        file=pdf,
        file_name="attachment-7.pdf",
        content_type="application/pdf",
        dedup_id="file-1",
        custom_type="caremsg_message",
        data='{"message_id": 7}',
    )

    assert (sent.message_type, sent.sender_id, sent.data) == ("FILE", "alice", '{"message_id": 7}')
    [stored] = emulator.state.messages(CHANNEL)
    assert stored.file is not None
    assert (stored.file.name, stored.file.type, stored.file.content) == (
        "attachment-7.pdf",
        "application/pdf",
        pdf,
    )
    assert stored.dedup_id == "file-1"


async def test_a_file_message_without_a_file_is_refused_and_nothing_is_posted(
    client: SendbirdClient, emulator: RunningEmulator
) -> None:
    await seed_team(client)

    with pytest.raises(ChatInvalidRequest) as refused:
        await client.send_message(CHANNEL, user_id="alice", message="", message_type="FILE")  # type: ignore[arg-type]

    assert not refused.value.retryable
    assert emulator.state.messages(CHANNEL) == []


async def test_admin_message_is_sent_without_a_user_id(
    client: SendbirdClient, emulator: RunningEmulator
) -> None:
    await seed_team(client)

    sent = await client.send_message(CHANNEL, message="Channel archived at 18:00", message_type="ADMM")

    assert (sent.message_type, sent.sender_id) == ("ADMM", None)
    [request] = emulator.state.requests("POST", f"/v3/group_channels/{CHANNEL}/messages")
    assert "user_id" not in request.body


async def test_message_type_and_sender_must_agree_before_any_request_is_made(
    client: SendbirdClient, emulator: RunningEmulator
) -> None:
    with pytest.raises(ValueError, match="user_id"):
        await client.send_message(CHANNEL, message="hi")
    with pytest.raises(ValueError, match="no sender"):
        await client.send_message(CHANNEL, message="hi", user_id="alice", message_type="ADMM")

    assert emulator.state.received == []


async def test_list_messages_around_a_timestamp_returns_neighbours_oldest_first(
    client: SendbirdClient,
) -> None:
    await seed_team(client)
    sent = [await client.send_message(CHANNEL, user_id="alice", message=f"m{i}") for i in range(5)]
    anchor = sent[2].created_at_ms

    around = await client.list_messages(CHANNEL, message_ts=anchor, prev_limit=1, next_limit=1)
    without_anchor = await client.list_messages(
        CHANNEL, message_ts=anchor, prev_limit=1, next_limit=1, include=False
    )
    newest_first = await client.list_messages(
        CHANNEL, message_ts=anchor, prev_limit=1, next_limit=1, reverse=True
    )

    assert [m.message for m in around] == ["m1", "m2", "m3"]
    assert [m.message for m in without_anchor] == ["m1", "m3"]
    assert [m.message for m in newest_first] == ["m3", "m2", "m1"]


async def test_list_messages_around_a_message_id_honours_prev_and_next_limits(client: SendbirdClient) -> None:
    await seed_team(client)
    sent = [await client.send_message(CHANNEL, user_id="alice", message=f"m{i}") for i in range(5)]

    before = await client.list_messages(CHANNEL, message_id=sent[2].message_id, prev_limit=2, next_limit=0)
    after = await client.list_messages(CHANNEL, message_id=sent[2].message_id, prev_limit=0, next_limit=5)

    assert [m.message_id for m in before] == [m.message_id for m in sent[:3]]
    assert [m.message_id for m in after] == [m.message_id for m in sent[2:]]


async def test_list_messages_filters_by_sender_and_type_a_file_only_as_a_file(client: SendbirdClient) -> None:
    await seed_team(client)
    await client.send_message(CHANNEL, user_id="alice", message="from alice")
    await client.send_message(CHANNEL, user_id="bob", message="from bob")
    await client.send_message(CHANNEL, message="from admin", message_type="ADMM")
    await client.send_file_message(
        CHANNEL, user_id="alice", file=b"%PDF-1.7", file_name="a.pdf", content_type="application/pdf"
    )

    by_bob = await client.list_messages(
        CHANNEL, message_ts=0, prev_limit=0, next_limit=10, sender_ids=["bob"]
    )
    admin = await client.list_messages(
        CHANNEL, message_ts=0, prev_limit=0, next_limit=10, message_type="ADMM"
    )
    alices_texts = await client.list_messages(
        CHANNEL, message_ts=0, prev_limit=0, next_limit=10, sender_ids=["alice"], message_type="MESG"
    )
    alices_files = await client.list_messages(
        CHANNEL, message_ts=0, prev_limit=0, next_limit=10, sender_ids=["alice"], message_type="FILE"
    )

    assert [m.message for m in by_bob] == ["from bob"]
    assert [m.message for m in admin] == ["from admin"]
    assert [m.message_type for m in alices_texts] == ["MESG"]
    assert [m.message_type for m in alices_files] == ["FILE"]


async def test_list_messages_needs_exactly_one_anchor_and_limits_within_200(client: SendbirdClient) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        await client.list_messages(CHANNEL)
    with pytest.raises(ValueError, match="exactly one"):
        await client.list_messages(CHANNEL, message_ts=1, message_id=1)
    with pytest.raises(ValueError, match=r"0\.\.200"):
        await client.list_messages(CHANNEL, message_ts=1, prev_limit=201)


async def test_delete_message_hides_it_unless_removed_messages_are_asked_for(client: SendbirdClient) -> None:
    await seed_team(client)
    sent = await client.send_message(CHANNEL, user_id="alice", message="oops")

    await client.delete_message(CHANNEL, sent.message_id)

    assert await client.list_messages(CHANNEL, message_ts=0, prev_limit=0, next_limit=10) == []
    [removed] = await client.list_messages(
        CHANNEL, message_ts=0, prev_limit=0, next_limit=10, including_removed=True
    )
    assert removed.is_removed
    with pytest.raises(ChatNotFound):
        await client.delete_message(CHANNEL, sent.message_id)


async def test_mark_as_read_records_the_read_time_for_the_member(
    client: SendbirdClient, emulator: RunningEmulator
) -> None:
    await seed_team(client)
    sent = await client.send_message(CHANNEL, user_id="alice", message="hi")

    await client.mark_as_read(CHANNEL, "bob")

    assert emulator.state.channels[CHANNEL].read_ts["bob"] > sent.created_at_ms


# --------------------------------------------------------------------------------------------------
# Channel metadata
# --------------------------------------------------------------------------------------------------


async def test_channel_metadata_can_be_created_upserted_read_and_deleted(client: SendbirdClient) -> None:
    await seed_team(client)

    assert await client.create_channel_metadata(CHANNEL, {"ward": "7"}) == {"ward": "7"}
    assert await client.update_channel_metadata(CHANNEL, {"ward": "8", "shift": "night"}) == {
        "ward": "8",
        "shift": "night",
    }
    assert await client.get_channel_metadata(CHANNEL) == {"ward": "8", "shift": "night"}
    assert await client.get_channel_metadata(CHANNEL, ["shift"]) == {"shift": "night"}

    await client.delete_channel_metadata(CHANNEL, "shift")
    assert await client.get_channel_metadata(CHANNEL) == {"ward": "8"}
    await client.delete_channel_metadata(CHANNEL)
    assert await client.get_channel_metadata(CHANNEL) == {}


async def test_channel_metadata_create_refuses_existing_keys_and_update_without_upsert_refuses_new_ones(
    client: SendbirdClient,
) -> None:
    await seed_team(client)
    await client.create_channel_metadata(CHANNEL, {"ward": "7"})

    with pytest.raises(ChatAlreadyExists):
        await client.create_channel_metadata(CHANNEL, {"ward": "9"})
    with pytest.raises(ChatNotFound):
        await client.update_channel_metadata(CHANNEL, {"shift": "day"}, upsert=False)
    with pytest.raises(ChatNotFound):
        await client.delete_channel_metadata(CHANNEL, "shift")


# --------------------------------------------------------------------------------------------------
# Error mapping
# --------------------------------------------------------------------------------------------------


async def test_unknown_user_or_channel_is_chat_not_found(client: SendbirdClient) -> None:
    with pytest.raises(ChatNotFound) as user_error:
        await client.get_user("nobody")
    with pytest.raises(ChatNotFound):
        await client.get_group_channel("no_such_channel")

    assert (user_error.value.provider_code, user_error.value.status, user_error.value.retryable) == (
        400201,
        400,
        False,
    )


async def test_existing_user_id_or_channel_url_is_chat_already_exists(client: SendbirdClient) -> None:
    await seed_team(client)

    with pytest.raises(ChatAlreadyExists):
        await client.create_user("alice", nickname="Alice again")
    with pytest.raises(ChatAlreadyExists):
        await client.create_group_channel(CHANNEL, name="Again", user_ids=["alice"])


async def test_missing_parameter_is_chat_invalid_request(client: SendbirdClient) -> None:
    await seed_team(client)

    with pytest.raises(ChatInvalidRequest) as error:
        await client.invite_members(CHANNEL, [])

    assert (error.value.provider_code, error.value.retryable) == (400105, False)


async def test_strict_channel_creation_with_an_unknown_user_is_chat_invalid_request(
    client: SendbirdClient,
) -> None:
    await client.create_user("alice", nickname="Alice")

    with pytest.raises(ChatInvalidRequest) as error:
        await client.create_group_channel(CHANNEL, name="Ward 7", user_ids=["alice", "ghost"])

    assert error.value.provider_code == 400111


async def test_a_wrong_api_token_is_a_retryable_refusal_of_our_credentials_not_of_the_request(
    http: httpx.AsyncClient, emulator: RunningEmulator
) -> None:
    client = SendbirdClient(http, base_url=emulator.base_url, api_token="not-the-token")

    with pytest.raises(ChatCredentialsRejected) as error:
        await client.get_user("alice")

    assert (error.value.provider_code, error.value.status, error.value.retryable) == (400401, 401, True)
    assert error.value.provider == "sendbird"
    assert "credentials" in str(error.value)


async def test_posting_into_a_frozen_channel_is_chat_invalid_request(client: SendbirdClient) -> None:
    await seed_team(client)
    await client.freeze_channel(CHANNEL, True)

    with pytest.raises(ChatInvalidRequest) as error:
        await client.send_message(CHANNEL, user_id="bob", message="hi")

    # The real code is undocumented (§5); the emulator answers the documented generic 400108.
    assert error.value.provider_code == 400108


@pytest.mark.parametrize(
    ("reply", "expected", "provider_code"),
    [
        pytest.param(sendbird_error(400201), ChatNotFound, 400201, id="400201-is-not-found"),
        pytest.param(sendbird_error(400202), ChatAlreadyExists, 400202, id="400202-is-already-exists"),
        pytest.param(
            sendbird_error(400105), ChatInvalidRequest, 400105, id="400105-missing-parameter-is-invalid"
        ),
        pytest.param(
            sendbird_error(400111), ChatInvalidRequest, 400111, id="400111-invalid-value-is-invalid"
        ),
        pytest.param(
            sendbird_error(400108, status=403),
            ChatInvalidRequest,
            400108,
            id="400108-not-allowed-to-the-resource-refuses-the-request",
        ),
        pytest.param(
            sendbird_error(400401, status=401),
            ChatCredentialsRejected,
            400401,
            id="400401-bad-token-is-our-credentials",
        ),
        pytest.param(
            sendbird_error(400401, status=400),
            ChatCredentialsRejected,
            400401,
            id="400401-on-http-400-is-our-credentials",
        ),
        pytest.param(
            httpx.Response(401, text="<html>no</html>"),
            ChatCredentialsRejected,
            None,
            id="bare-401-is-our-credentials",
        ),
        pytest.param(
            httpx.Response(403, json={"message": "forbidden"}),
            ChatCredentialsRejected,
            None,
            id="403-without-code-is-our-credentials",
        ),
        pytest.param(
            sendbird_error(500910, status=429), ChatRateLimited, 500910, id="500910-is-rate-limited"
        ),
        pytest.param(
            sendbird_error(500910, status=400),
            ChatRateLimited,
            500910,
            id="500910-on-http-400-is-rate-limited",
        ),
        pytest.param(
            httpx.Response(429, text="slow down"), ChatRateLimited, None, id="bare-429-is-rate-limited"
        ),
        pytest.param(
            sendbird_error(500901, status=500), ChatUnavailable, 500901, id="5xx-code-is-unavailable"
        ),
        pytest.param(
            sendbird_error(400201, status=500), ChatNotFound, 400201, id="the-code-wins-over-the-status"
        ),
        pytest.param(
            sendbird_error(900050, status=400),
            ChatInvalidRequest,
            900050,
            id="unknown-code-on-4xx-is-invalid",
        ),
        pytest.param(
            sendbird_error(900999, status=503),
            ChatUnavailable,
            900999,
            id="unknown-code-on-5xx-is-unavailable",
        ),
        pytest.param(
            httpx.Response(502, json={"message": "bad gateway"}), ChatUnavailable, None, id="5xx-without-code"
        ),
        pytest.param(
            httpx.Response(503, text="<html>down</html>"), ChatUnavailable, None, id="5xx-html-is-unavailable"
        ),
        pytest.param(
            httpx.Response(404, text="<html>nope</html>"), ChatUnavailable, None, id="4xx-html-is-unavailable"
        ),
        pytest.param(
            httpx.Response(200, text="{truncated"), ChatUnavailable, None, id="200-non-json-is-unavailable"
        ),
        pytest.param(
            httpx.Response(400, json={"error": True}), ChatInvalidRequest, None, id="4xx-json-without-code"
        ),
        pytest.param(
            httpx.Response(200, json={"error": True, "code": 400201, "message": "x"}),
            ChatNotFound,
            400201,
            id="200-saying-error-true-is-an-error",
        ),
    ],
)
async def test_sendbird_replies_map_to_typed_errors_by_code(
    mocked: Callable[..., SendbirdClient],
    reply: httpx.Response,
    expected: type[ChatGatewayError],
    provider_code: int | None,
) -> None:
    client = mocked(lambda request: reply, max_retries=0)

    with pytest.raises(ChatGatewayError) as error:
        await client.get_user("alice")

    assert type(error.value) is expected
    assert error.value.provider_code == provider_code
    assert error.value.retryable == (expected in (ChatRateLimited, ChatUnavailable, ChatCredentialsRejected))


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(httpx.ConnectError("refused"), id="connection-refused"),
        pytest.param(httpx.ReadTimeout("slow"), id="read-timeout"),
        pytest.param(httpx.RemoteProtocolError("dropped"), id="dropped-connection"),
    ],
)
async def test_transport_failures_are_chat_unavailable(
    mocked: Callable[..., SendbirdClient], failure: httpx.HTTPError
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise failure

    with pytest.raises(ChatUnavailable) as error:
        await mocked(handler).get_user("alice")

    assert error.value.retryable
    assert error.value.__cause__ is failure


async def test_a_user_reply_without_user_id_is_chat_unavailable(
    mocked: Callable[..., SendbirdClient],
) -> None:
    client = mocked(lambda request: httpx.Response(200, json={"nickname": "x"}))

    with pytest.raises(ChatUnavailable, match="user_id"):
        await client.get_user("alice")


async def test_errors_logs_and_reprs_never_carry_message_text_or_phone_numbers(
    client: SendbirdClient, mocked: Callable[..., SendbirdClient]
) -> None:
    await seed_team(client)
    await client.freeze_channel(CHANNEL, True)
    rate_limited = mocked(lambda request: sendbird_error(500910, status=429), max_retries=1)
    attempts: list[Callable[[], Awaitable[object]]] = [
        lambda: client.send_message(CHANNEL, user_id="bob", message=SECRET_TEXT),
        lambda: client.update_user("alice", phone_number="555 0123 not e164"),
        lambda: rate_limited.update_user("alice", phone_number=PHONE),
    ]
    failures: list[ChatGatewayError] = []

    with capture_logs() as logs:
        for attempt in attempts:
            with pytest.raises(ChatGatewayError) as error:
                await attempt()
            failures.append(error.value)
    user = await client.update_user("alice", phone_number=PHONE)
    message = await client.send_message(CHANNEL, message=SECRET_TEXT, message_type="ADMM")

    visible = " ".join([*(f"{e!s} {e!r}" for e in failures), repr(logs), repr(user), repr(message)])
    for secret in (SECRET_TEXT, PHONE, "555 0123"):
        assert secret not in visible


# --------------------------------------------------------------------------------------------------
# 429, timeouts, 5xx windows, dropped connections
# --------------------------------------------------------------------------------------------------


async def test_rate_limited_call_is_retried_after_retry_after_then_succeeds(
    client: SendbirdClient, emulator: RunningEmulator, clock: ManualClock
) -> None:
    emulator.state.faults.rate_limit_next(2, retry_after=1.5)

    with capture_logs() as logs:
        user = await client.create_user("alice", nickname="Alice")

    assert user.user_id == "alice"
    assert list(emulator.state.users) == ["alice"]
    assert clock.sleeps == [1.5, 1.5]
    assert len(emulator.state.requests("POST", "/v3/users")) == 3
    assert client_events(logs) == ["sendbird.rate_limited"] * 2


async def test_rate_limiting_beyond_the_retries_raises_chat_rate_limited(
    client: SendbirdClient, emulator: RunningEmulator, clock: ManualClock
) -> None:
    emulator.state.faults.rate_limit_next(4, retry_after=2)

    with pytest.raises(ChatRateLimited) as error:
        await client.get_user("alice")

    assert (error.value.retry_after, error.value.provider_code, error.value.status) == (2.0, 500910, 429)
    assert clock.sleeps == [2.0, 2.0, 2.0]  # the default of 3 retries: 4 attempts, 3 waits
    assert len(emulator.state.requests("GET", "/v3/users/alice")) == 4


@pytest.mark.parametrize(
    ("reply", "retry_after"),
    [
        pytest.param(
            sendbird_error(500910, status=429, headers={"X-RateLimit-RetryAfter": "2.5"}), 2.5, id="header"
        ),
        pytest.param(
            httpx.Response(429, json={"error": True, "code": 500910, "retry_after": 4}, headers={}),
            4.0,
            id="body",
        ),
        pytest.param(
            httpx.Response(
                429,
                json={"error": True, "code": 500910, "retry_after": 4},
                headers={"X-RateLimit-RetryAfter": "1"},
            ),
            1.0,
            id="header-before-body",
        ),
        pytest.param(
            sendbird_error(500910, status=429, headers={"X-RateLimit-RetryAfter": "soon"}),
            None,
            id="unreadable",
        ),
        pytest.param(sendbird_error(500910, status=429), None, id="absent"),
    ],
)
async def test_retry_after_comes_from_the_header_else_the_body_else_none(
    mocked: Callable[..., SendbirdClient], reply: httpx.Response, retry_after: float | None
) -> None:
    with pytest.raises(ChatRateLimited) as error:
        await mocked(lambda request: reply, max_retries=0).get_user("alice")

    assert error.value.retry_after == retry_after


async def test_retry_waits_are_capped_and_back_off_when_sendbird_gives_no_retry_after(
    mocked: Callable[..., SendbirdClient], clock: ManualClock
) -> None:
    huge = mocked(
        lambda r: sendbird_error(500910, status=429, headers={"X-RateLimit-RetryAfter": "3600"}),
        max_retry_after=10,
    )
    silent = mocked(lambda r: sendbird_error(500910, status=429), max_retries=3)

    with pytest.raises(ChatRateLimited):
        await huge.get_user("alice")
    assert clock.sleeps == [10, 10, 10]
    clock.sleeps.clear()
    with pytest.raises(ChatRateLimited):
        await silent.get_user("alice")
    assert clock.sleeps == [1.0, 2.0, 4.0]


async def test_request_hanging_past_the_timeout_is_chat_unavailable(
    http: httpx.AsyncClient, emulator: RunningEmulator, clock: ManualClock
) -> None:
    client = SendbirdClient(
        http, base_url=emulator.base_url, api_token=API_TOKEN, timeout=0.2, clock=clock, sleep=clock.sleep
    )
    emulator.state.faults.hang_next(30)

    with pytest.raises(ChatUnavailable, match="timed out") as error:
        await client.get_user("alice")

    assert error.value.retryable


async def test_5xx_window_is_chat_unavailable_until_it_ends(
    client: SendbirdClient, emulator: RunningEmulator, fault_clock: ManualClock
) -> None:
    await client.create_user("alice", nickname="Alice")
    emulator.state.faults.fail_for(10, status=503)

    for _ in range(2):
        with pytest.raises(ChatUnavailable) as error:
            await client.get_user("alice")
        assert (error.value.status, error.value.retryable) == (503, True)
    fault_clock.now += 10

    assert (await client.get_user("alice")).user_id == "alice"


async def test_dropped_connection_after_accept_then_retry_with_same_dedup_id_records_one_message(
    client: SendbirdClient, gateway: SendbirdChatGateway, emulator: RunningEmulator
) -> None:
    await seed_team(client)
    emulator.state.faults.drop_next()

    with pytest.raises(ChatUnavailable):
        await gateway.send_message(CHANNEL, sender_id="alice", text=SECRET_TEXT, dedup_id="outbox-42")
    retried = await gateway.send_message(CHANNEL, sender_id="alice", text=SECRET_TEXT, dedup_id="outbox-42")

    [stored] = emulator.state.messages(CHANNEL)
    assert retried == SentChatMessage(stored.message_id, CHANNEL, stored.created_at)
    assert len(emulator.state.requests("POST", f"/v3/group_channels/{CHANNEL}/messages")) == 2


# --------------------------------------------------------------------------------------------------
# Client-side rate limiting
# --------------------------------------------------------------------------------------------------


def recording(clock: ManualClock, calls: list[tuple[str, float]]) -> Handler:
    """A MockTransport handler that notes (method, fake time) and answers a valid user."""

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, clock.now))
        return httpx.Response(200, json={"user_id": "alice", "nickname": "Alice"})

    return handler


async def test_writes_are_spaced_at_the_write_rate(
    mocked: Callable[..., SendbirdClient], clock: ManualClock
) -> None:
    calls: list[tuple[str, float]] = []
    client = mocked(recording(clock, calls))

    for _ in range(4):
        await client.update_user("alice", nickname="A")

    assert [t for _, t in calls] == pytest.approx([0.0, 0.2, 0.4, 0.6])


async def test_reads_are_spaced_at_the_read_rate_independently_of_writes(
    mocked: Callable[..., SendbirdClient], clock: ManualClock
) -> None:
    calls: list[tuple[str, float]] = []
    client = mocked(recording(clock, calls))

    for _ in range(2):
        await client.get_user("alice")
        await client.update_user("alice", nickname="A")
    await client.get_user("alice")

    assert [t for m, t in calls if m == "GET"] == pytest.approx([0.0, 0.1, 0.2])
    assert [t for m, t in calls if m == "PUT"] == pytest.approx([0.0, 0.2])


async def test_a_larger_burst_lets_that_many_calls_through_at_once(
    mocked: Callable[..., SendbirdClient], clock: ManualClock
) -> None:
    calls: list[tuple[str, float]] = []
    client = mocked(recording(clock, calls), rate_limits=RateLimits(write_per_second=5, burst=3))

    for _ in range(4):
        await client.update_user("alice", nickname="A")

    assert [t for _, t in calls] == pytest.approx([0.0, 0.0, 0.0, 0.2])


async def test_concurrent_callers_each_wait_once_in_arrival_order() -> None:
    waits: list[float] = []

    async def record_only(seconds: float) -> None:
        waits.append(seconds)

    bucket = TokenBucket(5, clock=lambda: 0.0, sleep=record_only)

    await asyncio.gather(*(bucket.acquire() for _ in range(4)))

    assert waits == pytest.approx([0.2, 0.4, 0.6])  # one sleep per waiting caller: no polling


def test_rate_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(5, burst=0)
