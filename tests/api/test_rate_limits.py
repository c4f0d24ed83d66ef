"""Abuse limits over HTTP: per address and per token, with the IETF draft RateLimit fields and 429
problem+json with Retry-After. The refill rate is set so low that no test depends on timing."""

from __future__ import annotations

import math
import time
from typing import Any

from handlers.app import create_app
from handlers.settings import Settings
from integrations.sendbird import sign_webhook
from integrations.sendbird_emulator import sendbird_json
from tests.api.conftest import Api
from tests.support.messaging import emulator

SLOW = 0.001  # tokens per second: nothing refills during a test


def _limited(settings: Settings, **limits: Any) -> Settings:
    values = {
        "per_address_per_second": SLOW,
        "per_address_burst": 1000,
        "per_token_per_second": SLOW,
        "per_token_burst": 1000,
        **limits,
    }
    return settings.model_copy(update={"ratelimit": settings.ratelimit.model_copy(update=values)})


async def test_every_answer_carries_the_ratelimit_fields(aiohttp_client: Any, settings: Settings) -> None:
    api = Api(await aiohttp_client(create_app(_limited(settings, per_address_burst=50))))
    for path in ("/api/openapi.json", "/api/auth/profile", "/api/no-such-thing"):
        resp = await api.client.get(path)
        assert resp.headers["RateLimit-Policy"] == '"address";q=50;w=50000'
        assert resp.headers["RateLimit"].startswith('"address";r=')


async def test_an_address_over_its_limit_gets_429_problem_json_with_retry_after(
    aiohttp_client: Any, settings: Settings
) -> None:
    api = Api(await aiohttp_client(create_app(_limited(settings, per_address_burst=3))))
    started = time.monotonic()
    statuses = [(await api.client.get("/api/openapi.json")).status for _ in range(3)]
    resp = await api.client.get("/api/openapi.json")
    body = await resp.json(content_type=None)
    elapsed = time.monotonic() - started

    assert statuses == [200, 200, 200]
    assert resp.status == 429
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert body["code"] == "too_many_requests"
    assert body["requestId"] == resp.headers["X-Request-ID"]
    assert 900 <= int(resp.headers["Retry-After"]) <= 1000
    # t: whole seconds until the bucket is full again, 3 tokens at SLOW, less what refilled meanwhile
    # (a second of a loaded machine's requests refills a thousandth of a token: 2999).
    remaining, until_full = resp.headers["RateLimit"].removeprefix('"address";').split(";")
    assert remaining == "r=0"
    assert 3000 - math.ceil(elapsed) <= int(until_full.removeprefix("t=")) <= 3000


async def test_unauthenticated_floods_are_held_by_the_address_limit(
    aiohttp_client: Any, settings: Settings
) -> None:
    api = Api(await aiohttp_client(create_app(_limited(settings, per_address_burst=2))))
    statuses = [
        (await api.client.get("/api/patients", headers={"Authorization": f"Bearer made.up.{i}"})).status
        for i in range(3)
    ]
    assert statuses == [401, 401, 429]


async def test_each_token_has_its_own_limit(aiohttp_client: Any, settings: Settings) -> None:
    api = Api(await aiohttp_client(create_app(_limited(settings, per_token_burst=2))))
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    peer = await api.person("peer_support", org)

    statuses = [(await api.call("GET", "/api/auth/profile", nurse))[0] for _ in range(3)]
    resp = await api.client.get("/api/auth/profile", headers=peer.auth)

    assert statuses == [200, 200, 429]
    assert resp.status == 200
    assert resp.headers["RateLimit-Policy"] == '"address";q=1000;w=1000000, "token";q=2;w=2000'
    assert resp.headers["RateLimit"] == '"token";r=1;t=1000'


async def test_the_health_probe_is_never_limited(aiohttp_client: Any, settings: Settings) -> None:
    api = Api(await aiohttp_client(create_app(_limited(settings, per_address_burst=1))))
    statuses = [(await api.client.get("/health")).status for _ in range(3)]
    assert statuses == [200, 200, 200]


async def test_a_refusal_is_counted_in_the_metrics_by_limit(aiohttp_client: Any, settings: Settings) -> None:
    api = Api(await aiohttp_client(create_app(_limited(settings, per_address_burst=2))))
    for _ in range(3):
        await api.client.get("/api/openapi.json")

    scrape = await (await api.client.get("/metrics")).text()

    assert 'caremsg_rate_limit_refusals_total{limit="api_per_address"} 1.0' in scrape


# --- the providers' signed webhooks ------------------------------------------------------------------


def _event(n: int) -> bytes:
    return sendbird_json({"category": "group_channel:message_read", "channel": {"channel_url": f"c{n}"}})


async def _webhook(api: Api, body: bytes, signature: str) -> int:
    headers = {"Content-Type": "application/json", "x-sendbird-signature": signature}
    return (await api.client.post("/api/webhooks/sendbird", data=body, headers=headers)).status


async def test_signed_deliveries_spend_nothing_of_their_sources_budget(
    aiohttp_client: Any, settings: Settings
) -> None:
    """A busy clinic's Sendbird may send more events a second than one client's budget."""
    api = Api(await aiohttp_client(create_app(_limited(settings, per_address_burst=3))))
    key = emulator(api).api_token

    statuses = [await _webhook(api, _event(n), sign_webhook(_event(n), key)) for n in range(8)]

    assert statuses == [200] * 8
    # The source's whole budget is still there for anything else it asks.
    assert [(await api.client.get("/api/openapi.json")).status for _ in range(4)] == [200, 200, 200, 429]


async def test_failed_signatures_spend_the_budget_and_then_are_refused_unread(
    aiohttp_client: Any, settings: Settings
) -> None:
    api = Api(await aiohttp_client(create_app(_limited(settings, per_address_burst=3))))
    key = emulator(api).api_token

    forged = [await _webhook(api, _event(n), sign_webhook(_event(n), "not-the-key")) for n in range(3)]
    then = await _webhook(api, _event(9), sign_webhook(_event(9), key))

    assert forged == [401, 401, 401]
    assert then == 429  # the source spent its budget on forgeries: refused before its body is read


async def test_posts_to_a_receiver_not_configured_here_spend_the_budget_too(
    aiohttp_client: Any, settings: Settings
) -> None:
    """Texts go through Sendbird here, so the Twilio receiver answers 404: the sender's fault."""
    limited = _limited(settings, per_address_burst=3)
    messaging = limited.messaging.model_copy(update={"sms_provider": "sendbird_business_messaging"})
    api = Api(await aiohttp_client(create_app(limited.model_copy(update={"messaging": messaging}))))

    form = {"From": "+15555550100", "Body": "hello"}
    statuses = [(await api.client.post("/api/webhooks/twilio", data=form)).status for _ in range(4)]

    assert statuses == [404, 404, 404, 429]
