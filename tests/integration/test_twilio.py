"""The Twilio SMS adapter: X-Twilio-Signature as Twilio documents it, and the gateway against the Twilio
emulator over real HTTP (texts accepted, refusals mapped to delivery reasons, outages retryable)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from engine.errors import ChatCredentialsRejected, ChatRateLimited, ChatUnavailable
from integrations.http_clients import http_client
from integrations.twilio import (
    BadTwilioRequest,
    SmsNotSent,
    TwilioSmsGateway,
    TwilioWebhookCheck,
    inbound_message,
    sign_request,
    verified_inbound_message,
    verify_request,
)
from integrations.twilio_emulator import RunningTwilioEmulator, start_twilio_emulator

PHONE = "+12025550143"

# Twilio's documented example (twilio.com/docs/usage/security): this URL, these parameters and the
# Auth Token 12345 give this signature.
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
DOC_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_the_signature_is_twilios_documented_example() -> None:
    assert sign_request(DOC_URL, DOC_PARAMS, "12345") == DOC_SIGNATURE
    assert verify_request(DOC_URL, DOC_PARAMS, DOC_SIGNATURE, "12345")


@pytest.mark.parametrize(
    ("url", "params", "signature", "token"),
    [
        pytest.param(DOC_URL, DOC_PARAMS, DOC_SIGNATURE, "54321", id="another-auth-token"),
        pytest.param(DOC_URL.replace("foo=1", "foo=2"), DOC_PARAMS, DOC_SIGNATURE, "12345", id="another-url"),
        pytest.param(DOC_URL, {**DOC_PARAMS, "Digits": "1235"}, DOC_SIGNATURE, "12345", id="a-changed-param"),
        pytest.param(DOC_URL, {**DOC_PARAMS, "Extra": ""}, DOC_SIGNATURE, "12345", id="an-added-param"),
        pytest.param(DOC_URL, DOC_PARAMS, "", "12345", id="no-signature"),
    ],
)
def test_anything_but_the_signed_url_params_and_token_fails_verification(
    url: str, params: dict[str, str], signature: str, token: str
) -> None:
    assert not verify_request(url, params, signature, token)


def test_the_url_is_also_checked_with_and_without_its_default_port() -> None:
    with_port = DOC_URL.replace("mycompany.com", "mycompany.com:443")
    assert verify_request(with_port, DOC_PARAMS, DOC_SIGNATURE, "12345")
    assert not verify_request(DOC_URL.replace("https", "http"), DOC_PARAMS, DOC_SIGNATURE, "12345")


def test_an_incoming_message_reads_optouttype_and_refuses_another_accounts_request() -> None:
    params = {"MessageSid": "SM1", "AccountSid": "AC1", "From": PHONE, "Body": "yes", "OptOutType": "START"}

    message = inbound_message(params, account_sid="AC1")

    assert (message.message_sid, message.from_number, message.body, message.keyword) == (
        "SM1",
        PHONE,
        "yes",
        "start",
    )
    with pytest.raises(ValueError, match="AccountSid"):
        inbound_message(params, account_sid="AC2")


def test_a_repeated_parameter_is_refused_as_its_order_is_not_signed() -> None:
    check = TwilioWebhookCheck("AC1", "12345", DOC_URL)
    signed = [("MessageSid", "SM1"), ("AccountSid", "AC1"), ("From", PHONE), ("From", "+12025550199")]
    signature = sign_request(DOC_URL, signed, "12345")
    reordered = b"MessageSid=SM1&AccountSid=AC1&From=%2B12025550199&From=%2B12025550143"

    with pytest.raises(BadTwilioRequest, match="From"):
        verified_inbound_message(reordered, request_url=DOC_URL, signature=signature, check=check)


@pytest.fixture
async def carrier() -> AsyncIterator[RunningTwilioEmulator]:
    running = await start_twilio_emulator()
    yield running
    await running.close()


@pytest.fixture
async def gateway(carrier: RunningTwilioEmulator) -> AsyncIterator[TwilioSmsGateway]:
    async with http_client() as http:
        yield TwilioSmsGateway(
            http,
            account_sid=carrier.state.account_sid,
            auth_token=carrier.state.auth_token,
            messaging_service_sid=carrier.state.messaging_service_sid,
            base_url=carrier.base_url,
            timeout=2.0,
            per_second=1000,
        )


async def test_a_text_is_accepted_and_its_message_sid_returned(
    gateway: TwilioSmsGateway, carrier: RunningTwilioEmulator
) -> None:
    sid = await gateway.send_sms(recipient_user_id="ext_1", phone_number=PHONE, text="Hello")

    [sent] = carrier.state.sent
    assert (sent.sid, sent.phone_number, sent.text, sent.sender) == (
        sid,
        PHONE,
        "Hello",
        carrier.state.messaging_service_sid,
    )
    [(method, path, form)] = carrier.state.received
    assert (method, path) == ("POST", f"/2010-04-01/Accounts/{carrier.state.account_sid}/Messages.json")
    assert form == {"To": PHONE, "MessagingServiceSid": carrier.state.messaging_service_sid, "Body": "Hello"}


async def test_a_number_that_texted_stop_is_refused_for_good_as_opted_out(
    gateway: TwilioSmsGateway, carrier: RunningTwilioEmulator
) -> None:
    carrier.state.opted_out.add(PHONE)

    with pytest.raises(SmsNotSent) as refused:
        await gateway.send_sms(recipient_user_id="ext_1", phone_number=PHONE, text="Hello")

    assert (refused.value.code, refused.value.provider_code, refused.value.retryable) == (
        "opted_out",
        21610,
        False,
    )
    assert carrier.state.sent == []


async def test_an_invalid_number_is_refused_for_good_without_echoing_it(gateway: TwilioSmsGateway) -> None:
    with pytest.raises(SmsNotSent) as refused:
        await gateway.send_sms(recipient_user_id="ext_1", phone_number="12345", text="Hello")

    assert refused.value.code == "invalid_number"
    assert "12345" not in str(refused.value)


async def test_wrong_credentials_are_a_refusal_of_ours_retried_not_of_the_text(
    carrier: RunningTwilioEmulator,
) -> None:
    async with http_client() as http:
        gateway = TwilioSmsGateway(
            http,
            account_sid=carrier.state.account_sid,
            auth_token="wrong",
            from_number="+12025550100",
            base_url=carrier.base_url,
        )
        with pytest.raises(ChatCredentialsRejected) as refused:
            await gateway.send_sms(recipient_user_id="ext_1", phone_number=PHONE, text="Hello")

    assert (refused.value.status, refused.value.provider_code) == (401, 20003)
    assert (refused.value.provider, refused.value.retryable) == ("twilio", True)


async def test_outages_and_rate_limits_are_retryable(
    gateway: TwilioSmsGateway, carrier: RunningTwilioEmulator
) -> None:
    carrier.state.faults.fail_next(1)
    carrier.state.faults.rate_limit_next(1)
    carrier.state.faults.drop_next(1)

    for expected in (ChatUnavailable, ChatRateLimited, ChatUnavailable):
        with pytest.raises(expected) as failed:
            await gateway.send_sms(recipient_user_id="ext_1", phone_number=PHONE, text="Hello")
        assert failed.value.retryable

    # The dropped one was accepted: Twilio has no idempotency key, a retry would text twice.
    assert len(carrier.state.sent) == 1
