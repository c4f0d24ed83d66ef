"""What a provider's answer means for an outbox entry: each answer, mapped by the real Sendbird and
Twilio clients (over ``httpx.MockTransport``), then classified by the relay's one rule
(``integrations.relay.failures.classify``). A refusal of caremsg's own credentials is an outage:
held, never failed; a refusal of what was asked (400108 "not allowed to access resource" included)
ends the entry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from engine.errors import ChatCredentialsRejected, ChatGatewayError, ChatUnavailable
from integrations.effects.texts import SmsRefused
from integrations.relay.failures import Failure, classify
from integrations.sendbird import SendbirdChatGateway, SendbirdClient
from integrations.sendbird.wire import reply_body
from integrations.twilio import TwilioSmsGateway
from tests.support.sendbird import sendbird_error


def _sendbird(reply: httpx.Response, provider: str = "sendbird") -> Failure:
    with pytest.raises(ChatGatewayError) as raised:
        reply_body("send_message", reply, provider=provider)
    return classify(raised.value)


async def _twilio(reply: httpx.Response) -> Failure:
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda request: reply)) as http:
        gateway = TwilioSmsGateway(
            http, account_sid="AC1", auth_token="token", from_number="+12025550100", base_url="https://t.test"
        )
        with pytest.raises(ChatGatewayError) as raised:
            await gateway.send_sms(recipient_user_id="ext_1", phone_number="+12025550143", text="x")
    return classify(raised.value)


def _twilio_error(code: int, status: int) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": "m", "more_info": "", "status": status})


@pytest.mark.parametrize(
    ("reply", "kind", "provider_code"),
    [
        pytest.param(sendbird_error(400401, status=401), "credentials", 400401, id="400401-bad-token"),
        pytest.param(sendbird_error(400401, status=400), "credentials", 400401, id="400401-on-http-400"),
        pytest.param(httpx.Response(401, text="<html>no</html>"), "credentials", 401, id="bare-401"),
        pytest.param(httpx.Response(403, json={}), "credentials", 403, id="403-without-code"),
        pytest.param(sendbird_error(400108, status=403), "refusal", None, id="400108-not-allowed-here"),
        pytest.param(sendbird_error(400111), "refusal", None, id="400111-invalid-value"),
        pytest.param(sendbird_error(400201), "refusal", None, id="400201-not-found"),
        pytest.param(sendbird_error(500910, status=429), "outage", None, id="500910-rate-limited"),
        pytest.param(httpx.Response(503, text="down"), "outage", None, id="503"),
    ],
)
def test_sendbird_answers_are_classified_by_whether_they_are_about_us_or_the_entry(
    reply: httpx.Response, kind: str, provider_code: int | None
) -> None:
    failure = _sendbird(reply)

    assert failure.kind == kind
    assert failure.provider_code == provider_code
    assert failure.outage == (kind in ("credentials", "outage"))
    assert failure.final == (kind == "refusal")


def test_a_refused_business_messaging_token_names_that_api() -> None:
    failure = _sendbird(sendbird_error(400401, status=401), provider="sendbird_business_messaging")

    assert (failure.kind, failure.provider, failure.reason) == (
        "credentials",
        "sendbird_business_messaging",
        ChatCredentialsRejected.code,
    )


@pytest.mark.parametrize(
    ("reply", "kind", "reason"),
    [
        pytest.param(_twilio_error(20003, 401), "credentials", "chat_credentials_rejected", id="20003-auth"),
        pytest.param(
            _twilio_error(20005, 403), "credentials", "chat_credentials_rejected", id="20005-account-inactive"
        ),
        pytest.param(httpx.Response(401, text=""), "credentials", "chat_credentials_rejected", id="bare-401"),
        pytest.param(_twilio_error(21610, 400), "refusal", "opted_out", id="21610-opted-out"),
        pytest.param(_twilio_error(21211, 400), "refusal", "invalid_number", id="21211-invalid-number"),
        pytest.param(_twilio_error(21617, 400), "refusal", "chat_invalid_request", id="21617-too-long"),
        pytest.param(_twilio_error(20429, 429), "outage", "chat_rate_limited", id="20429-rate-limited"),
        pytest.param(httpx.Response(500, text="oops"), "outage", "chat_unavailable", id="500"),
    ],
)
async def test_twilio_answers_are_classified_by_whether_they_are_about_us_or_the_text(
    reply: httpx.Response, kind: str, reason: str
) -> None:
    failure = await _twilio(reply)

    assert (failure.kind, failure.reason) == (kind, reason)
    if kind == "credentials":
        assert failure.provider == "twilio"


@pytest.mark.parametrize(
    ("exc", "kind", "reason"),
    [
        pytest.param(
            ChatCredentialsRejected("bad token", provider="sendbird", status=401),
            "credentials",
            "chat_credentials_rejected",
            id="credentials",
        ),
        pytest.param(ChatUnavailable("down"), "outage", "chat_unavailable", id="unavailable"),
        pytest.param(SmsRefused("opted_out"), "refusal", "opted_out", id="a-text-refused-here"),
        pytest.param(ConnectionRefusedError("db away"), "outage", "relay_error", id="database-away"),
        pytest.param(KeyError("channel_url"), "own_error", "relay_error", id="a-bug"),
    ],
)
def test_every_failure_an_executor_raises_has_one_meaning(exc: Exception, kind: str, reason: str) -> None:
    failure = classify(exc)

    assert (failure.kind, failure.reason) == (kind, reason)


def _refusing_chat() -> tuple[SendbirdChatGateway, list[httpx.Request]]:
    """The chat gateway on a Sendbird that refuses its token to every request, and what it was sent."""
    sent: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return sendbird_error(400401, status=401)

    http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    return SendbirdChatGateway(SendbirdClient(http, base_url="https://sb.test", api_token="t")), sent


CHAT_CALLS: dict[str, Callable[[SendbirdChatGateway], Awaitable[object]]] = {
    "create a user": lambda chat: chat.ensure_user("u1", "N."),
    "create a channel": lambda chat: chat.ensure_channel("c1", name="Care", user_ids=["u1"]),
    "create a channel again": lambda chat: chat.ensure_channel(
        "c1", name="Care", user_ids=["u1"], repeat=True
    ),
    "invite members": lambda chat: chat.invite_members("c1", ["u1"]),
    "remove members": lambda chat: chat.remove_members("c1", ["u1"]),
    "remove members again": lambda chat: chat.remove_members("c1", ["u1"], repeat=True),
    "post a message": lambda chat: chat.send_message("c1", sender_id="u1", text="t", dedup_id="d"),
    "post a file": lambda chat: chat.send_file(
        "c1", sender_id="u1", file=b"%PDF", file_name="a.pdf", content_type="application/pdf", dedup_id="d"
    ),
    "look for a post": lambda chat: chat.find_message(
        "c1", sender_id="u1", custom_type="x", data="{}", kind="text"
    ),
    "delete a recalled post": lambda chat: chat.delete_message("c1", 42),
}


@pytest.mark.parametrize("call", list(CHAT_CALLS), ids=list(CHAT_CALLS))
async def test_every_chat_call_the_executors_make_lets_a_refusal_of_our_token_through_as_itself(
    call: str,
) -> None:
    """No path (channel creation, membership, posts, files, recall deletes, SMS replies' posts) turns
    a refused token into something else, or reads the channel after it: the relay's one rule sees it."""
    chat, sent = _refusing_chat()

    with pytest.raises(ChatCredentialsRejected) as refused:
        await CHAT_CALLS[call](chat)

    assert classify(refused.value).kind == "credentials"
    assert len(sent) == 1  # refused before anything was done: nothing to read back
