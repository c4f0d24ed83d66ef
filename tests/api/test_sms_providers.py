"""Which SMS provider texts external participants, and what the service promises with each.

Sendbird Business Messaging is outbound only (sendbird-api.md §8): no reply and no STOP can arrive
through it. With it alone the service says so at start-up and sends no text (a text under an SMS
consent promises a working STOP) unless ``messaging.accept_outbound_only_sms`` accepts that.
"""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from handlers.app import create_app
from handlers.settings import Settings
from tests.api.conftest import Api
from tests.api.messaging_support import care_team, emulator, send, settled_deliveries


def _business_messaging(settings: Settings, *, accept: bool) -> Settings:
    messaging = settings.messaging.model_copy(
        update={"sms_provider": "sendbird_business_messaging", "accept_outbound_only_sms": accept}
    )
    return settings.model_copy(update={"messaging": messaging})


async def test_with_business_messaging_alone_the_start_up_says_replies_cannot_arrive_and_nothing_is_texted(
    aiohttp_client: Any, settings: Settings
) -> None:
    with capture_logs() as logs:
        api = Api(await aiohttp_client(create_app(_business_messaging(settings, accept=False))))
    team = await care_team(api)

    status, accepted = await send(api, team.peer, team.conversation_id, "Please call the clinic.")
    assert status == 202, accepted
    deliveries = await settled_deliveries(api, team.peer, accepted["id"])

    [warning] = [e for e in logs if e["event"] == "sms.outbound_only"]
    assert warning["texts_sent"] is False
    assert [(d["state"], d.get("reason")) for d in deliveries] == [
        ("sent", None),
        ("failed", "no_opt_out_path"),
    ]
    assert [n for n in emulator(api).notifications if n.phone_number == team.phone] == []
    reply = await api.client.post("/api/webhooks/twilio", data={"MessageSid": "SM1"})
    assert reply.status == 404


async def test_business_messaging_texts_when_the_deployment_accepts_outbound_only_sms(
    aiohttp_client: Any, settings: Settings
) -> None:
    api = Api(await aiohttp_client(create_app(_business_messaging(settings, accept=True))))
    team = await care_team(api)

    status, accepted = await send(api, team.peer, team.conversation_id, "Please call the clinic.")
    assert status == 202, accepted
    deliveries = await settled_deliveries(api, team.peer, accepted["id"])

    assert [d["state"] for d in deliveries] == ["sent", "sent"]
    assert [n.phone_number for n in emulator(api).notifications if n.phone_number == team.phone] == [
        team.phone
    ]
