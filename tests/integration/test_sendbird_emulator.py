"""The Sendbird emulator on the wire: reply and error shapes, the request log, faults, and webhooks.

Requests go over real HTTP on a loopback port chosen by the OS. Webhooks go to a small aiohttp
receiver started in the test; tests wait for them on a condition with a timeout, never by sleeping.

Longer than 400 lines because the emulator is one program: its replies, faults and webhooks are
checked with the same requests, through the same fixtures and helpers (``start``, ``seed``,
``error_of``), and the webhook tests only add a receiver to them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from integrations.http_clients import http_client
from integrations.sendbird import verify_webhook_signature
from integrations.sendbird_emulator import (
    DedupMode,
    EmulatorState,
    FaultInjector,
    RunningEmulator,
    create_emulator_app,
    emulator_state_key,
    main,
    sendbird_json,
    start_emulator,
)
from tests.support.polling import eventually, settled

API_TOKEN = "emulator-test-token"
APP_ID = "emulator-test-app"
CHANNEL = "ward_7"
WAIT_S = 5.0  # upper bound for anything the tests wait on; normally a few milliseconds

StartEmulator = Callable[..., Awaitable[RunningEmulator]]


class FaultClock:
    """The emulator's monotonic clock for fault windows, moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fault_clock() -> FaultClock:
    return FaultClock()


@pytest.fixture
async def start(fault_clock: FaultClock) -> AsyncIterator[StartEmulator]:
    """Starts emulators on free loopback ports and closes them after the test."""
    started: list[RunningEmulator] = []

    async def _start(**options: Any) -> RunningEmulator:
        options.setdefault("clock", fault_clock)
        options.setdefault("webhook_retry_delay", 0.0)
        running = await start_emulator(app_id=APP_ID, api_token=API_TOKEN, **options)
        started.append(running)
        return running

    yield _start
    for running in started:
        await running.close()


@pytest.fixture
async def emulator(start: StartEmulator) -> RunningEmulator:
    return await start()


@pytest.fixture
async def api(emulator: RunningEmulator) -> AsyncIterator[httpx.AsyncClient]:
    """Raw HTTP to the emulator, with the right token."""
    async with http_client(base_url=emulator.base_url, headers={"Api-Token": API_TOKEN}) as client:
        yield client


async def seed(api: httpx.AsyncClient, *, operators: list[str] | None = None) -> None:
    """Users alice and bob (bob with a profile URL, to get slashes into payloads) in channel ward_7."""
    for user_id, profile_url in (("alice", ""), ("bob", "https://img.example/bob.png")):
        reply = await api.post(
            "/v3/users", json={"user_id": user_id, "nickname": user_id, "profile_url": profile_url}
        )
        assert reply.status_code == 200
    channel = {
        "channel_url": CHANNEL,
        "name": "Ward 7",
        "user_ids": ["alice", "bob"],
        "operator_ids": operators or [],
    }
    assert (await api.post("/v3/group_channels", json=channel)).status_code == 200


def send(api: httpx.AsyncClient, channel: str = CHANNEL, **body: Any) -> Awaitable[httpx.Response]:
    body.setdefault("message_type", "MESG")
    body.setdefault("message", "hello")
    return api.post(f"/v3/group_channels/{channel}/messages", json=body)


def error_of(reply: httpx.Response) -> tuple[int, int]:
    """(HTTP status, Sendbird code) of an error reply, after checking the §2 error body shape."""
    body = reply.json()
    assert set(body) == {"error", "code", "message"}
    assert body["error"] is True
    assert isinstance(body["message"], str)
    return reply.status_code, body["code"]


# --------------------------------------------------------------------------------------------------
# Serving
# --------------------------------------------------------------------------------------------------


async def test_emulator_listens_on_a_free_loopback_port(emulator: RunningEmulator) -> None:
    assert emulator.base_url.startswith("http://127.0.0.1:")
    assert int(emulator.base_url.rsplit(":", 1)[1]) > 0


async def test_emulator_refuses_to_bind_a_non_loopback_address() -> None:
    with pytest.raises(ValueError, match="loopback"):
        await start_emulator(host="0.0.0.0", api_token=API_TOKEN)  # noqa: S104 - the address being refused


async def test_emulator_app_also_runs_under_aiohttp_test_client() -> None:
    app = create_emulator_app(app_id=APP_ID, api_token=API_TOKEN)
    async with TestClient(TestServer(app)) as client:
        reply = await client.get("/v3/users/alice", headers={"Api-Token": API_TOKEN})

        assert reply.status == 400
        assert (await reply.json())["code"] == 400201
        assert app[emulator_state_key].received[0].path == "/v3/users/alice"


def test_command_line_requires_an_api_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENDBIRD_EMULATOR_API_TOKEN", raising=False)

    with pytest.raises(SystemExit) as exit_info:
        main(["--port", "0"])

    assert exit_info.value.code == 2


# --------------------------------------------------------------------------------------------------
# Authentication and error bodies
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Api-Token": "wrong"}], ids=["missing-token", "wrong-token"])
async def test_requests_without_the_right_api_token_get_400401_with_http_401(
    emulator: RunningEmulator, headers: dict[str, str]
) -> None:
    async with http_client(base_url=emulator.base_url, headers=headers) as client:
        reply = await client.get("/v3/users/alice")

    assert error_of(reply) == (401, 400401)


@pytest.mark.parametrize(
    ("body", "expected_code"),
    [
        pytest.param({"nickname": "a", "profile_url": ""}, 400105, id="missing-user-id-is-400105"),
        pytest.param({"user_id": "a", "profile_url": ""}, 400105, id="missing-nickname-is-400105"),
        pytest.param(
            {"user_id": 7, "nickname": "a", "profile_url": ""}, 400100, id="number-for-string-is-400100"
        ),
        pytest.param(
            {"user_id": "a", "nickname": "a", "profile_url": "", "metadata": ["x"]},
            400103,
            id="list-for-object-is-400103",
        ),
        pytest.param(
            {"user_id": "a" * 81, "nickname": "a", "profile_url": ""}, 400110, id="too-long-is-400110"
        ),
        pytest.param(
            {"user_id": "a", "nickname": "a", "profile_url": "", "phone_number": "0123"},
            400111,
            id="non-e164-is-400111",
        ),
    ],
)
async def test_invalid_user_creation_gets_the_documented_parameter_codes(
    api: httpx.AsyncClient, body: dict[str, Any], expected_code: int
) -> None:
    assert error_of(await api.post("/v3/users", json=body)) == (400, expected_code)


async def test_a_body_that_is_not_json_is_400103(api: httpx.AsyncClient) -> None:
    reply = await api.post("/v3/users", content=b"user_id=alice", headers={"Content-Type": "text/plain"})

    assert error_of(reply) == (400, 400103)


async def test_error_messages_never_echo_a_phone_number(api: httpx.AsyncClient) -> None:
    body = {"user_id": "a", "nickname": "a", "profile_url": "", "phone_number": "555-0199"}

    reply = await api.post("/v3/users", json=body)

    assert "555-0199" not in reply.text


async def test_unknown_objects_are_400201_and_duplicates_400202(api: httpx.AsyncClient) -> None:
    await seed(api)

    assert error_of(await api.get("/v3/users/nobody")) == (400, 400201)
    assert error_of(await api.get("/v3/group_channels/no_such_channel")) == (400, 400201)
    assert error_of(
        await api.post("/v3/users", json={"user_id": "alice", "nickname": "", "profile_url": ""})
    ) == (
        400,
        400202,
    )
    again = {"channel_url": CHANNEL, "user_ids": ["alice"]}
    assert error_of(await api.post("/v3/group_channels", json=again)) == (400, 400202)


async def test_channel_urls_must_be_4_to_100_letters_digits_or_underscores(api: httpx.AsyncClient) -> None:
    for bad in ("abc", "ward-7", "x" * 101):
        reply = await api.post("/v3/group_channels", json={"channel_url": bad, "user_ids": []})
        assert error_of(reply) == (400, 400111)


async def test_channel_url_is_generated_when_none_is_given(api: httpx.AsyncClient) -> None:
    reply = await api.post("/v3/group_channels", json={"user_ids": []})

    assert reply.json()["channel_url"].startswith("sendbird_group_channel_")


async def test_strict_creation_with_an_unknown_user_is_400111_and_lenient_creation_skips_them(
    api: httpx.AsyncClient,
) -> None:
    await api.post("/v3/users", json={"user_id": "alice", "nickname": "", "profile_url": ""})
    strict = {"channel_url": "strict_one", "user_ids": ["alice", "ghost"], "strict": True}
    lenient = {"channel_url": "lenient_one", "user_ids": ["alice", "ghost"]}

    assert error_of(await api.post("/v3/group_channels", json=strict)) == (400, 400111)
    reply = await api.post("/v3/group_channels", json=lenient)
    assert [m["user_id"] for m in reply.json()["members"]] == ["alice"]


async def test_leaving_a_channel_removes_the_members_listed_and_ignores_the_others(
    api: httpx.AsyncClient, emulator: RunningEmulator
) -> None:
    # The answer for a non-member is undocumented (sendbird-api.md §8); no undocumented code is made up.
    await seed(api)

    reply = await api.put(f"/v3/group_channels/{CHANNEL}/leave", json={"user_ids": ["alice", "carol"]})

    assert reply.status_code == 200
    assert emulator.state.channels[CHANNEL].members == ["bob"]


async def test_get_channel_lists_members_only_when_asked(api: httpx.AsyncClient) -> None:
    await seed(api)

    plain = (await api.get(f"/v3/group_channels/{CHANNEL}")).json()
    with_members = (await api.get(f"/v3/group_channels/{CHANNEL}", params={"show_member": "true"})).json()

    assert "members" not in plain
    assert plain["member_count"] == 2
    assert [m["user_id"] for m in with_members["members"]] == ["alice", "bob"]


# --------------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------------


async def test_repeated_dedup_id_in_a_channel_returns_the_original_message(
    api: httpx.AsyncClient, emulator: RunningEmulator
) -> None:
    await seed(api)

    first = await send(api, user_id="alice", message="original", dedup_id="sms-1")
    again = await send(api, user_id="alice", message="changed on retry", dedup_id="sms-1")

    assert again.status_code == 200
    assert again.json() == first.json()
    assert [m.message for m in emulator.state.messages(CHANNEL)] == ["original"]


@pytest.mark.parametrize(
    ("mode", "answer", "stored"),
    [
        pytest.param("already_exists", (400, 400202), ["original"], id="already-exists-400202"),
        pytest.param("invalid", (400, 400111), ["original"], id="another-4xx"),
        pytest.param("ignored", None, ["original", "changed on retry"], id="ignored-a-second-message"),
    ],
)
async def test_each_documented_possibility_for_a_repeated_dedup_id_is_a_mode(
    api: httpx.AsyncClient,
    emulator: RunningEmulator,
    mode: DedupMode,
    answer: tuple[int, int] | None,
    stored: list[str],
) -> None:
    await seed(api)
    emulator.state.dedup_mode = mode

    first = await send(api, user_id="alice", message="original", dedup_id="sms-1")
    again = await send(api, user_id="alice", message="changed on retry", dedup_id="sms-1")

    assert first.status_code == 200
    if answer is None:
        assert again.status_code == 200
        assert again.json()["message_id"] != first.json()["message_id"]
    else:
        assert error_of(again) == answer
    assert [m.message for m in emulator.state.messages(CHANNEL)] == stored


async def test_accept_then_drop_for_a_while_stores_every_request_and_answers_none(
    api: httpx.AsyncClient, emulator: RunningEmulator, fault_clock: FaultClock
) -> None:
    await seed(api)
    emulator.state.faults.drop_for(1.0)

    for text in ("one", "two"):
        with pytest.raises(httpx.TransportError):
            await send(api, user_id="alice", message=text)
    fault_clock.now += 1.0
    assert (await send(api, user_id="alice", message="three")).status_code == 200

    assert [m.message for m in emulator.state.messages(CHANNEL)] == ["one", "two", "three"]


async def test_a_hang_for_a_while_holds_every_request_until_released_and_ends_with_its_time(
    api: httpx.AsyncClient, emulator: RunningEmulator, fault_clock: FaultClock
) -> None:
    await seed(api)
    emulator.state.faults.hang_for(30)

    held = [asyncio.create_task(send(api, user_id="alice", message=text)) for text in ("one", "two")]
    path = f"/v3/group_channels/{CHANNEL}/messages"
    await eventually(lambda: settled(len(emulator.state.requests("POST", path)) == 2), "both held")
    assert emulator.state.messages(CHANNEL) == []  # held before they are processed
    emulator.state.faults.release_hangs()

    assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
    assert [m.message for m in emulator.state.messages(CHANNEL)] == ["one", "two"]
    assert [f.kind for f in emulator.state.faults.pending()] == ["hang"]
    fault_clock.now += 30
    assert emulator.state.faults.pending() == []


async def test_channel_metadata_create_answers_metadata_and_include_ts_as_sendbird_does(
    api: httpx.AsyncClient,
) -> None:
    await seed(api)

    reply = await api.post(f"/v3/group_channels/{CHANNEL}/metadata", json={"metadata": {"ward": "7"}})

    assert reply.json() == {"metadata": {"ward": "7"}, "include_ts": False}


async def test_the_same_dedup_id_in_another_channel_is_a_new_message(
    api: httpx.AsyncClient, emulator: RunningEmulator
) -> None:
    await seed(api)
    await api.post("/v3/group_channels", json={"channel_url": "ward_8", "user_ids": ["alice"]})

    here = await send(api, user_id="alice", dedup_id="sms-1")
    there = await send(api, "ward_8", user_id="alice", dedup_id="sms-1")

    assert here.json()["message_id"] != there.json()["message_id"]
    assert len(emulator.state.messages(CHANNEL)) == len(emulator.state.messages("ward_8")) == 1


async def test_emulators_started_one_after_another_never_hand_out_the_same_message_id() -> None:
    # `caremsg serve` restarted on the same database: webhooks are deduplicated by message id there.
    handed_out: list[list[int]] = []
    for _ in range(3):
        running = await start_emulator(app_id=APP_ID, api_token=API_TOKEN)
        try:
            headers = {"Api-Token": API_TOKEN}
            async with http_client(base_url=running.base_url, headers=headers) as api:
                await seed(api)
                replies = [await send(api, user_id="alice") for _ in range(20)]
                handed_out.append([reply.json()["message_id"] for reply in replies])
        finally:
            await running.close()

    every = [i for ids in handed_out for i in ids]
    assert len(set(every)) == len(every) == 60
    assert every == sorted(every)  # each later emulator starts above everything handed out before
    assert all(2**32 < i < 2**53 for i in every)  # int64 like Sendbird's, and exact as a JSON double


def test_message_ids_keep_increasing_when_the_clock_stands_still_or_steps_back() -> None:
    readings = iter([1_000, 1_000, 1_000, 900, 5_000])
    state = EmulatorState(APP_ID, API_TOKEN, FaultInjector(FaultClock()), id_clock_us=lambda: next(readings))

    assert [state.next_message_id() for _ in range(5)] == [1_000, 1_001, 1_002, 1_003, 5_000]


async def test_only_members_may_send_and_a_frozen_channel_takes_only_operators_and_admins(
    api: httpx.AsyncClient,
) -> None:
    await seed(api, operators=["alice"])
    await api.post("/v3/users", json={"user_id": "carol", "nickname": "", "profile_url": ""})
    await api.put(f"/v3/group_channels/{CHANNEL}/freeze", json={"freeze": True})

    # The real codes are undocumented (§5); 900020/900050 are Chat SDK codes, not Platform API answers.
    assert error_of(await send(api, user_id="carol")) == (400, 400108)
    assert error_of(await send(api, user_id="bob")) == (400, 400108)
    assert (await send(api, user_id="alice")).status_code == 200
    assert (await send(api, message_type="ADMM")).status_code == 200


async def test_mesg_needs_a_sender_and_a_file_message_needs_its_file(api: httpx.AsyncClient) -> None:
    await seed(api)

    assert error_of(await send(api)) == (400, 400105)
    # A FILE message is multipart with the part ``file``; as JSON it has no file.
    assert error_of(await send(api, user_id="alice", message_type="FILE")) == (400, 400105)
    assert error_of(await send(api, user_id="alice", message_type="LINK")) == (400, 400111)


async def test_list_messages_needs_an_anchor_and_limits_within_200(api: httpx.AsyncClient) -> None:
    await seed(api)
    path = f"/v3/group_channels/{CHANNEL}/messages"

    assert error_of(await api.get(path)) == (400, 400105)
    assert error_of(await api.get(path, params={"message_ts": "0", "next_limit": "201"})) == (400, 400111)
    assert error_of(await api.get(path, params={"message_ts": "soon"})) == (400, 400101)


async def test_list_messages_lists_one_type_as_each_message_was_sent_and_refuses_an_unknown_one(
    api: httpx.AsyncClient,
) -> None:
    await seed(api)
    path = f"/v3/group_channels/{CHANNEL}/messages"
    assert (await send(api, user_id="alice", message="a text")).status_code == 200
    form = {"message_type": "FILE", "user_id": "alice", "data": '{"message_id": 7}'}
    file = {"file": ("attachment-7.pdf", b"%PDF-1.7\n%%EOF\n", "application/pdf")}
    assert (await api.post(path, data=form, files=file)).status_code == 200
    assert (await send(api, message_type="ADMM", message="an admin line")).status_code == 200

    async def listed(**query: str) -> list[str]:
        reply = await api.get(
            path, params={"message_ts": "0", "prev_limit": "0", "next_limit": "10", **query}
        )
        assert reply.status_code == 200, reply.text
        return [m["type"] for m in reply.json()["messages"]]

    assert await listed() == ["MESG", "FILE", "ADMM"]
    assert await listed(message_type="MESG") == ["MESG"]
    assert await listed(message_type="FILE") == ["FILE"]
    assert await listed(message_type="ADMM") == ["ADMM"]
    # not an empty list, which a caller would take for "not posted" (and post again)
    assert error_of(await api.get(path, params={"message_ts": "0", "message_type": "LINK"})) == (400, 400111)


async def test_replies_escape_slashes_like_sendbird(api: httpx.AsyncClient) -> None:
    await seed(api)

    reply = await api.get("/v3/users/bob")

    assert b'"profile_url":"https:\\/\\/img.example\\/bob.png"' in reply.content
    assert reply.json()["profile_url"] == "https://img.example/bob.png"


def test_sendbird_json_escapes_slashes_and_non_ascii_without_changing_the_value() -> None:
    value = {"url": "https://a.example/x", "text": "Grüße \\/ done"}

    raw = sendbird_json(value)

    assert raw == b'{"url":"https:\\/\\/a.example\\/x","text":"Gr\\u00fc\\u00dfe \\\\\\/ done"}'
    assert json.loads(raw) == value


# --------------------------------------------------------------------------------------------------
# The request log
# --------------------------------------------------------------------------------------------------


async def test_received_log_records_every_api_request_but_not_admin_calls(
    api: httpx.AsyncClient, emulator: RunningEmulator
) -> None:
    await api.post("/_emulator/faults", json={"kind": "error", "count": 1})
    await api.post("/v3/users", json={"user_id": "alice", "nickname": "A", "profile_url": ""})
    await api.get("/v3/users/alice", params={"include_unread_count": "true"})

    assert [(r.method, r.path, r.query, r.body) for r in emulator.state.received] == [
        ("POST", "/v3/users", {}, {"user_id": "alice", "nickname": "A", "profile_url": ""}),
        ("GET", "/v3/users/alice", {"include_unread_count": "true"}, None),
    ]
    assert emulator.state.users == {}  # the first request met the injected fault


# --------------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------------


async def test_admin_endpoint_injects_a_5xx_for_the_next_n_requests(api: httpx.AsyncClient) -> None:
    added = await api.post("/_emulator/faults", json={"kind": "error", "status": 502, "count": 2})

    statuses = [(await api.get("/v3/users/alice")).status_code for _ in range(3)]

    assert added.status_code == 201
    assert statuses == [502, 502, 400]


async def test_admin_endpoint_injects_a_5xx_window_on_the_fault_clock(
    api: httpx.AsyncClient, fault_clock: FaultClock
) -> None:
    await api.post("/_emulator/faults", json={"kind": "error", "status": 503, "for_seconds": 30})

    during = [(await api.get("/v3/users/alice")).status_code for _ in range(3)]
    fault_clock.now += 30
    after = (await api.get("/v3/users/alice")).status_code

    assert during == [503, 503, 503]
    assert after == 400


async def test_rate_limit_fault_answers_429_with_retry_after_and_code_500910(api: httpx.AsyncClient) -> None:
    await api.post("/_emulator/faults", json={"kind": "rate_limit", "count": 1, "retry_after": 2})

    reply = await api.get("/v3/users/alice")

    assert error_of(reply) == (429, 500910)
    assert reply.headers["X-RateLimit-RetryAfter"] == "2"


async def test_faults_apply_in_the_order_they_were_added(
    api: httpx.AsyncClient, emulator: RunningEmulator
) -> None:
    emulator.state.faults.rate_limit_next(1)
    emulator.state.faults.fail_next(1, status=500)

    statuses = [(await api.get("/v3/users/alice")).status_code for _ in range(3)]

    assert statuses == [429, 500, 400]


def test_a_fault_for_one_method_lets_the_others_pass() -> None:
    """A test holds its own post (POST) while reads of other work in the same app (GET) pass."""
    faults = FaultInjector(FaultClock())
    faults.hang_next(3.0, method="POST")

    assert faults.take("GET") is None
    held = faults.take("POST")
    assert held is not None
    assert (held.kind, held.hang_seconds) == ("hang", 3.0)
    assert faults.take("POST") is None  # spent


async def test_admin_endpoint_lists_and_clears_faults(api: httpx.AsyncClient) -> None:
    await api.post("/_emulator/faults", json={"kind": "drop", "count": 2})
    await api.post("/_emulator/faults", json={"kind": "hang", "count": 1, "hang_seconds": 9})

    listed = (await api.get("/_emulator/faults")).json()["faults"]
    cleared = (await api.delete("/_emulator/faults")).json()["faults"]

    assert [(f["kind"], f["remaining"]) for f in listed] == [("drop", 2), ("hang", 1)]
    assert cleared == []
    assert (await api.get("/v3/users/alice")).status_code == 400


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"kind": "explode", "count": 1}, id="unknown-kind"),
        pytest.param({"kind": "error"}, id="neither-count-nor-duration"),
        pytest.param({"kind": "error", "count": 1, "for_seconds": 5}, id="both-count-and-duration"),
        pytest.param({"kind": "error", "count": 1, "status": 404}, id="error-status-not-5xx"),
        pytest.param({"kind": "drop", "count": 0}, id="zero-count"),
        pytest.param({"kind": "error", "for_seconds": 0}, id="zero-duration"),
        pytest.param({"kind": "drop", "count": "1"}, id="count-not-a-number"),
        pytest.param({"kind": "drop", "count": 1, "after": 3}, id="unknown-field"),
        pytest.param(["drop"], id="not-an-object"),
    ],
)
async def test_admin_endpoint_rejects_a_malformed_fault(api: httpx.AsyncClient, spec: Any) -> None:
    reply = await api.post("/_emulator/faults", json=spec)

    assert reply.status_code == 400
    assert reply.json()["error"]
    assert (await api.get("/_emulator/faults")).json()["faults"] == []


async def test_hang_fault_holds_the_request_past_the_client_timeout(
    api: httpx.AsyncClient, emulator: RunningEmulator
) -> None:
    emulator.state.faults.hang_next(30)

    with pytest.raises(httpx.ReadTimeout):
        await api.get("/v3/users/alice", timeout=0.2)

    assert emulator.state.requests("GET", "/v3/users/alice")


async def test_drop_fault_processes_the_request_then_closes_the_connection_without_a_reply(
    api: httpx.AsyncClient, emulator: RunningEmulator
) -> None:
    await api.post("/_emulator/faults", json={"kind": "drop", "count": 1})

    with pytest.raises(httpx.RemoteProtocolError):
        await api.post("/v3/users", json={"user_id": "alice", "nickname": "A", "profile_url": ""})

    assert list(emulator.state.users) == ["alice"]
    assert (await api.get("/v3/users/alice")).status_code == 200


# --------------------------------------------------------------------------------------------------
# Webhooks
# --------------------------------------------------------------------------------------------------


@dataclass
class WebhookReceiver:
    """A stand-in for caremsg's webhook endpoint: records raw bodies and answers the given statuses."""

    statuses: list[int] = field(default_factory=list)
    hold: asyncio.Event | None = None
    calls: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((await request.read(), dict(request.headers)))
        async with self.arrived:
            self.arrived.notify_all()
        if self.hold is not None:
            await self.hold.wait()
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    async def wait_for_calls(self, count: int) -> None:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.calls) >= count), WAIT_S)

    def body(self, index: int = 0) -> Any:
        return json.loads(self.calls[index][0])


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[WebhookReceiver, str]]:
    hook = WebhookReceiver()
    app = web.Application()
    app.router.add_post("/sendbird/webhook", hook.handle)
    async with TestServer(app) as server:
        yield hook, str(server.make_url("/sendbird/webhook"))


@pytest.fixture
async def hooked(
    start: StartEmulator, receiver: tuple[WebhookReceiver, str]
) -> AsyncIterator[tuple[RunningEmulator, httpx.AsyncClient, WebhookReceiver]]:
    """An emulator posting webhooks to the receiver, and a raw client for it."""
    hook, url = receiver
    running = await start(webhook_url=url)
    async with http_client(base_url=running.base_url, headers={"Api-Token": API_TOKEN}) as client:
        yield running, client, hook


Hooked = tuple[RunningEmulator, httpx.AsyncClient, WebhookReceiver]


async def test_message_send_webhook_is_signed_over_the_raw_escaped_bytes(hooked: Hooked) -> None:
    _, api, hook = hooked
    await seed(api)

    sent = (
        await send(api, user_id="bob", message="see https://wiki.example/k", custom_type="sms", data="{}")
    ).json()
    await hook.wait_for_calls(1)

    raw, headers = hook.calls[0]
    assert verify_webhook_signature(raw, headers["x-sendbird-signature"], API_TOKEN)
    assert headers["x-signature"] == headers["x-sendbird-signature"]
    assert (headers["User-Agent"], headers["Content-Type"]) == ("SendBird", "application/json")
    assert b"https:\\/\\/wiki.example\\/k" in raw
    assert not verify_webhook_signature(
        json.dumps(json.loads(raw)).encode(), headers["x-sendbird-signature"], API_TOKEN
    )
    event = hook.body()
    assert (event["category"], event["app_id"], event["type"], event["sdk"]) == (
        "group_channel:message_send",
        APP_ID,
        "MESG",
        "API",
    )
    assert event["payload"] == {
        "message_id": sent["message_id"],
        "message": "see https://wiki.example/k",
        "custom_type": "sms",
        "data": "{}",
        "created_at": sent["created_at"],
        "translations": {},
    }
    assert event["sender"] == {
        "user_id": "bob",
        "nickname": "bob",
        "profile_url": "https://img.example/bob.png",
        "metadata": {},
    }
    assert event["channel"]["channel_url"] == CHANNEL
    assert "members" not in event  # only with include_members (§7)


async def test_webhook_delivery_never_blocks_the_api_reply(hooked: Hooked) -> None:
    emulator, api, hook = hooked
    hook.hold = asyncio.Event()
    await seed(api)

    reply = await send(api, user_id="alice")
    await hook.wait_for_calls(1)

    assert reply.status_code == 200  # answered while the receiver is still holding the webhook
    assert emulator.state.webhook_deliveries[0].statuses == []
    hook.hold.set()
    await asyncio.wait_for(emulator.drain_webhooks(), WAIT_S)
    assert emulator.state.webhook_deliveries[0].statuses == [200]


async def test_webhook_is_retried_with_the_same_bytes_until_the_receiver_answers_2xx(hooked: Hooked) -> None:
    emulator, api, hook = hooked
    hook.statuses = [500, 503]
    await seed(api)

    await send(api, user_id="alice")
    await asyncio.wait_for(emulator.drain_webhooks(), WAIT_S)

    [delivery] = emulator.state.webhook_deliveries
    assert delivery.statuses == [500, 503, 200]
    assert delivery.delivered
    assert len({(raw, headers["x-sendbird-signature"]) for raw, headers in hook.calls}) == 1


async def test_webhook_is_given_up_after_three_attempts(hooked: Hooked) -> None:
    emulator, api, hook = hooked
    hook.statuses = [500] * 5
    await seed(api)

    await send(api, user_id="alice")
    await asyncio.wait_for(emulator.drain_webhooks(), WAIT_S)

    assert len(hook.calls) == 3
    assert emulator.state.webhook_deliveries[0].statuses == [500, 500, 500]
    assert not emulator.state.webhook_deliveries[0].delivered


async def test_an_unreachable_webhook_url_is_given_up_without_failing_the_send(start: StartEmulator) -> None:
    async with TestServer(web.Application()) as gone:  # a port that was free a moment ago and is closed now
        url = str(gone.make_url("/sendbird/webhook"))
    emulator = await start(webhook_url=url)
    async with http_client(base_url=emulator.base_url, headers={"Api-Token": API_TOKEN}) as api:
        await seed(api)
        reply = await send(api, user_id="alice")
    await asyncio.wait_for(emulator.drain_webhooks(), WAIT_S)

    assert reply.status_code == 200
    assert emulator.state.webhook_deliveries[0].statuses == [None, None, None]


async def test_a_repeated_dedup_id_sends_no_second_webhook(hooked: Hooked) -> None:
    emulator, api, hook = hooked
    await seed(api)

    await send(api, user_id="alice", dedup_id="d-1")
    await send(api, user_id="alice", dedup_id="d-1")
    await asyncio.wait_for(emulator.drain_webhooks(), WAIT_S)

    assert len(hook.calls) == 1


async def test_admin_message_webhook_has_no_sender(hooked: Hooked) -> None:
    _, api, hook = hooked
    await seed(api)

    await send(api, message_type="ADMM", message="Archived")
    await hook.wait_for_calls(1)

    event = hook.body()
    assert event["type"] == "ADMM"
    assert "sender" not in event


async def test_mark_as_read_sends_a_message_read_webhook(hooked: Hooked) -> None:
    emulator, api, hook = hooked
    await seed(api)
    await send(api, user_id="alice")
    await send(api, user_id="alice")
    await hook.wait_for_calls(2)

    reply = await api.put(f"/v3/group_channels/{CHANNEL}/messages/mark_as_read", json={"user_id": "bob"})
    await hook.wait_for_calls(3)

    assert reply.status_code == 200
    raw, headers = hook.calls[2]
    assert verify_webhook_signature(raw, headers["x-sendbird-signature"], API_TOKEN)
    event = hook.body(2)
    assert event["category"] == "group_channel:message_read"
    assert event["read_updates"] == [
        {
            "user_id": "bob",
            "read_ts": emulator.state.channels[CHANNEL].read_ts["bob"],
            "channel_unread_message_count": 0,
            "total_unread_message_count": 0,
        }
    ]
    unread = {m["user_id"]: m["channel_unread_message_count"] for m in event["members"]}
    assert unread == {"alice": 0, "bob": 0}


async def test_members_are_in_message_send_webhooks_only_when_configured(
    start: StartEmulator, receiver: tuple[WebhookReceiver, str]
) -> None:
    hook, url = receiver
    emulator = await start(webhook_url=url, include_members=True)
    async with http_client(base_url=emulator.base_url, headers={"Api-Token": API_TOKEN}) as api:
        await seed(api)
        await send(api, user_id="alice")
    await hook.wait_for_calls(1)

    members = {m["user_id"]: m["channel_unread_message_count"] for m in hook.body()["members"]}
    assert members == {"alice": 0, "bob": 1}


async def test_no_webhook_is_sent_without_a_webhook_url(
    api: httpx.AsyncClient, emulator: RunningEmulator
) -> None:
    await seed(api)

    await send(api, user_id="alice")
    await emulator.drain_webhooks()

    assert emulator.state.webhook_deliveries == []
