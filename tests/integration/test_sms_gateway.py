"""The Business Messaging SMS adapter against the emulator over real HTTP (sendbird-api.md §8)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import httpx
import pytest

from engine.errors import ChatCredentialsRejected, ChatInvalidRequest, ChatRateLimited, ChatUnavailable
from engine.sms import textable
from integrations.http_clients import http_client
from integrations.sendbird import SendbirdClient
from integrations.sendbird_emulator import RunningEmulator, start_emulator
from integrations.sms import SendbirdSmsGateway

PHONE = "+12025550143"


@pytest.fixture
async def running() -> AsyncIterator[RunningEmulator]:
    emulator = await start_emulator(api_token=secrets.token_hex(16))
    try:
        yield emulator
    finally:
        await emulator.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with http_client() as client:
        yield client


def gateway(
    http: httpx.AsyncClient, running: RunningEmulator, token: str | None = None
) -> SendbirdSmsGateway:
    return SendbirdSmsGateway(
        http,
        base_url=running.base_url,
        api_token=token or running.state.api_token,
        template_key="caremsg_sms",
        timeout=1.0,
        per_second=1000,
    )


async def user_with_phone(
    http: httpx.AsyncClient, running: RunningEmulator, phone: str | None = PHONE
) -> str:
    client = SendbirdClient(http, base_url=running.base_url, api_token=running.state.api_token)
    user_id = f"ext_{secrets.token_hex(6)}"
    await client.create_user(user_id, nickname="External participant", phone_number=phone)
    return user_id


async def test_a_text_is_a_realtime_notification_to_the_user_carrying_the_number(
    http: httpx.AsyncClient, running: RunningEmulator
) -> None:
    user_id = await user_with_phone(http, running)

    provider_id = await gateway(http, running).send_sms(
        recipient_user_id=user_id, phone_number=PHONE, text="Hi"
    )

    (sent,) = running.state.notifications
    assert (sent.user_id, sent.phone_number, sent.template_key, sent.text) == (
        user_id,
        PHONE,
        "caremsg_sms",
        "Hi",
    )
    assert provider_id == sent.request_id
    (request,) = running.state.requests("POST", "/v1/notifications")
    assert request.body["mode"] == "realtime"
    assert request.body["targets"] == [user_id]
    assert request.body["template"] == {"key": "caremsg_sms", "variables": {user_id: {"message": "Hi"}}}


async def test_a_user_without_a_phone_number_cannot_be_texted(
    http: httpx.AsyncClient, running: RunningEmulator
) -> None:
    user_id = await user_with_phone(http, running, phone=None)

    with pytest.raises(ChatInvalidRequest) as caught:
        await gateway(http, running).send_sms(recipient_user_id=user_id, phone_number=PHONE, text="Hi")

    assert not caught.value.retryable
    assert PHONE not in str(caught.value)
    assert running.state.notifications == []


async def test_a_wrong_business_messaging_token_is_a_refusal_of_our_credentials_not_of_the_text(
    http: httpx.AsyncClient, running: RunningEmulator
) -> None:
    user_id = await user_with_phone(http, running)

    with pytest.raises(ChatCredentialsRejected) as refused:
        await gateway(http, running, token="wrong").send_sms(
            recipient_user_id=user_id, phone_number=PHONE, text="x"
        )

    assert (refused.value.provider, refused.value.provider_code) == ("sendbird_business_messaging", 400401)
    assert refused.value.retryable


async def test_an_outage_and_rate_limiting_are_retryable(
    http: httpx.AsyncClient, running: RunningEmulator
) -> None:
    user_id = await user_with_phone(http, running)
    running.state.faults.fail_next(1)
    running.state.faults.rate_limit_next(1, retry_after=2.5)
    sms = gateway(http, running)

    with pytest.raises(ChatUnavailable) as unavailable:
        await sms.send_sms(recipient_user_id=user_id, phone_number=PHONE, text="x")
    with pytest.raises(ChatRateLimited) as limited:
        await sms.send_sms(recipient_user_id=user_id, phone_number=PHONE, text="x")

    assert unavailable.value.retryable
    assert limited.value.retry_after == 2.5
    assert running.state.notifications == []


async def test_a_hung_provider_times_out_as_retryable(
    http: httpx.AsyncClient, running: RunningEmulator
) -> None:
    user_id = await user_with_phone(http, running)
    running.state.faults.hang_next(3.0)

    with pytest.raises(ChatUnavailable, match="timed out"):
        await gateway(http, running).send_sms(recipient_user_id=user_id, phone_number=PHONE, text="x")


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        pytest.param("+12025550143", True, id="valid-us"),
        pytest.param("+442079460018", True, id="valid-uk"),
        pytest.param("+11234567890", False, id="us-area-code-123-does-not-exist"),
        pytest.param("+4420", False, id="too-short"),
        pytest.param("not a number", False, id="garbage"),
    ],
)
def test_only_numbers_valid_in_their_numbering_plan_are_textable(number: str, expected: bool) -> None:
    assert textable(number) is expected
