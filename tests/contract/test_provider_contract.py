"""Contract tests: the clients and the emulators, both held against one table of documented calls
(``tests/contract/contract.py``). See that module for how the table is read."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from aiohttp import web

from integrations.http_clients import http_client
from integrations.sendbird import RateLimits, SendbirdClient
from integrations.sendbird_emulator import RunningEmulator, start_emulator
from integrations.sms import SendbirdSmsGateway
from integrations.twilio import (
    EMPTY_TWIML,
    SIGNATURE_HEADER,
    TwilioSmsGateway,
    inbound_message,
    verify_request,
)
from integrations.twilio_emulator import RunningTwilioEmulator, start_twilio_emulator
from tests.contract.contract import (
    BUSINESS_MESSAGING,
    SENDBIRD,
    TWILIO_CREATE_MESSAGE,
    TWILIO_INBOUND_DOCUMENTED,
    TWILIO_INBOUND_READ,
    Call,
    check_reply,
    check_request,
    row_for,
)

TOKEN = "contract-token"
PHONE = "+12025550143"
Exchange = tuple[httpx.Request, httpx.Response]


def _body(call: Call, request: httpx.Request) -> dict[str, Any] | None:
    if not request.content:
        return None
    if call.form:
        return dict(parse_qsl(request.content.decode()))
    body = json.loads(request.content)
    assert isinstance(body, dict)
    return body


def _checked(table: tuple[Call, ...], request: httpx.Request) -> Call:
    call = row_for(table, request.method, request.url.path)
    check_request(call, request.headers, _body(call, request), dict(request.url.params))
    return call


async def exercise_sendbird(client: SendbirdClient) -> None:
    """Every call the Sendbird client makes, once."""
    await client.create_user("u-1", nickname="Ada", phone_number=PHONE, metadata={"role": "rn"})
    await client.get_user("u-1")
    await client.update_user("u-1", nickname="Ada L", phone_number=PHONE, is_active=True)
    await client.update_user_metadata("u-1", {"unit": "icu"})
    await client.create_group_channel("ward_7", name="Ward 7", user_ids=["u-1"], custom_type="t", data="d")
    await client.get_group_channel("ward_7")
    await client.update_group_channel("ward_7", name="Ward 7b", custom_type="t", data="d2")
    await client.create_user("u-2", nickname="Bo")
    await client.invite_members("ward_7", ["u-2"])
    sent = await client.send_message(
        "ward_7", message="hi", user_id="u-1", dedup_id="d-1", custom_type="c", data='{"message_id": 1}'
    )
    await client.list_messages(
        "ward_7",
        message_ts=4_000_000_000_000,
        prev_limit=10,
        next_limit=0,
        sender_ids=["u-1"],
        custom_types=["c"],
        message_type="MESG",
        including_removed=True,
    )
    await client.mark_as_read("ward_7", "u-2")
    await client.create_channel_metadata("ward_7", {"ward": "7"})
    await client.update_channel_metadata("ward_7", {"ward": "8"})
    await client.get_channel_metadata("ward_7", ["ward"])
    await client.delete_channel_metadata("ward_7", "ward")
    await client.delete_channel_metadata("ward_7")
    await client.delete_message("ward_7", sent.message_id)
    await client.leave_members("ward_7", ["u-2"])
    await client.freeze_channel("ward_7", True)


async def _against_mock(
    table: tuple[Call, ...], run: Callable[[httpx.AsyncClient], Awaitable[None]]
) -> list[Call]:
    hit: list[Call] = []

    def handler(request: httpx.Request) -> httpx.Response:
        call = _checked(table, request)
        hit.append(call)
        return httpx.Response(201 if call.form else 200, json=call.example)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        await run(http)
    return hit


async def _against_emulator(
    table: tuple[Call, ...], run: Callable[[httpx.AsyncClient], Awaitable[None]]
) -> list[Call]:
    exchanges: list[Exchange] = []

    async def record(response: httpx.Response) -> None:
        await response.aread()
        exchanges.append((response.request, response))

    async with http_client(event_hooks={"response": [record]}) as http:
        await run(http)
    hit = []
    for request, response in exchanges:
        call = _checked(table, request)
        assert response.status_code in (200, 201), (call.operation, response.status_code, response.text)
        check_reply(call, response.json())
        hit.append(call)
    return hit


@pytest.fixture
async def sendbird() -> AsyncIterator[RunningEmulator]:
    running = await start_emulator(api_token=TOKEN)
    yield running
    await running.close()


@pytest.fixture
async def carrier() -> AsyncIterator[RunningTwilioEmulator]:
    running = await start_twilio_emulator()
    yield running
    await running.close()


#: The calls' shapes are under test here, not the client's pacing (tests/unit has its own tests):
#: the free-trial default of 5 writes a second spread one run of the table over 3 s.
UNPACED = RateLimits(get_per_second=1000, write_per_second=1000)


def _sendbird_client(http: httpx.AsyncClient, base_url: str) -> SendbirdClient:
    return SendbirdClient(http, base_url=base_url, api_token=TOKEN, rate_limits=UNPACED)


async def test_the_sendbird_client_sends_only_documented_fields_and_reads_only_documented_ones() -> None:
    hit = await _against_mock(
        SENDBIRD, lambda http: exercise_sendbird(_sendbird_client(http, "https://mock"))
    )
    assert {c.operation for c in hit} == {c.operation for c in SENDBIRD}  # every row exercised


async def test_the_sendbird_emulator_answers_every_documented_call_with_the_documented_fields(
    sendbird: RunningEmulator,
) -> None:
    hit = await _against_emulator(
        SENDBIRD, lambda http: exercise_sendbird(_sendbird_client(http, sendbird.base_url))
    )
    assert {c.operation for c in hit} == {c.operation for c in SENDBIRD}


async def _business_messaging(http: httpx.AsyncClient, base_url: str) -> None:
    gateway = SendbirdSmsGateway(http, base_url=base_url, api_token=TOKEN, template_key="caremsg_sms")
    await gateway.send_sms(recipient_user_id="u-1", phone_number=PHONE, text="hi")


async def test_the_business_messaging_client_and_emulator_follow_the_documented_send(
    sendbird: RunningEmulator,
) -> None:
    table = (BUSINESS_MESSAGING, *SENDBIRD)
    assert await _against_mock(table, lambda http: _business_messaging(http, "https://mock")) == [
        BUSINESS_MESSAGING
    ]

    async def seeded(http: httpx.AsyncClient) -> None:
        await _sendbird_client(http, sendbird.base_url).create_user("u-1", nickname="Ada", phone_number=PHONE)
        await _business_messaging(http, sendbird.base_url)

    assert [c.operation for c in await _against_emulator(table, seeded)] == [
        "create_user",
        "send_notification",
    ]


async def _twilio(http: httpx.AsyncClient, base_url: str, sid: str, token: str, service: str) -> None:
    gateway = TwilioSmsGateway(
        http, account_sid=sid, auth_token=token, messaging_service_sid=service, base_url=base_url
    )
    await gateway.send_sms(recipient_user_id="u-1", phone_number=PHONE, text="hi")


async def test_the_twilio_client_and_emulator_follow_the_documented_message_create(
    carrier: RunningTwilioEmulator,
) -> None:
    table = (TWILIO_CREATE_MESSAGE,)
    mocked = await _against_mock(table, lambda http: _twilio(http, "https://mock", "AC1", "t", "MG1"))
    state = carrier.state
    emulated = await _against_emulator(
        table,
        lambda http: _twilio(
            http, carrier.base_url, state.account_sid, state.auth_token, state.messaging_service_sid
        ),
    )
    assert mocked == emulated == [TWILIO_CREATE_MESSAGE]


async def test_the_twilio_emulators_incoming_message_webhook_carries_the_documented_parameters(
    carrier: RunningTwilioEmulator, aiohttp_server: Any
) -> None:
    received: list[tuple[dict[str, str], str]] = []

    async def receiver(request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        received.append((form, request.headers.get(SIGNATURE_HEADER, "")))
        return web.Response(text=EMPTY_TWIML, content_type="text/xml")

    app = web.Application()
    app.router.add_post("/hook", receiver)
    server = await aiohttp_server(app)
    url = str(server.make_url("/hook"))
    carrier.set_webhook_url(url)

    carrier.receive_sms(PHONE, "Thanks")
    carrier.receive_sms(PHONE, "STOP")
    await carrier.drain()

    for form, signature in received:
        assert TWILIO_INBOUND_READ <= set(form) <= TWILIO_INBOUND_DOCUMENTED
        assert verify_request(url, form, signature, carrier.state.auth_token)
        inbound_message(form, account_sid=carrier.state.account_sid)
    assert [form.get("OptOutType") for form, _ in received] == [None, "STOP"]
