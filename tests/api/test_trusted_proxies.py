"""Behind a trusted proxy the client is the address the proxy saw (``X-Forwarded-For``): it is what
the rate limits, the login back-off and the audit trail count; anyone else's header is ignored.

The test client connects from 127.0.0.1, which the module's app trusts as its proxy; each test
speaks for clients of its own (addresses from the documentation ranges), so no test spends
another's buckets or back-off.
"""

from __future__ import annotations

import ipaddress
import json
import random
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from engine.sources import counted_source
from handlers.app import create_app
from handlers.settings import Settings
from tests.api.conftest import PASSWORD, Api, SharedApp, new_request_id

BURST = 3  # requests per client address before 429 (nothing refills during a test)


def _behind(settings: Settings, *proxies: str) -> Settings:
    """``settings`` trusting ``proxies``, with a small address limit and address back-off."""
    service = settings.service.model_copy(
        update={"trusted_proxies": tuple(ipaddress.ip_network(p) for p in proxies)}
    )
    ratelimit = settings.ratelimit.model_copy(
        update={"per_address_per_second": 0.001, "per_address_burst": BURST}
    )
    auth = settings.auth.model_copy(
        update={"login_address_free_failures": 2, "login_account_free_failures": 100}
    )
    return settings.model_copy(update={"service": service, "ratelimit": ratelimit, "auth": auth})


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def proxied_app(settings: Settings) -> AsyncIterator[SharedApp]:
    shared = SharedApp(_behind(settings, "127.0.0.1/32"))
    try:
        yield shared
    finally:
        await shared.stop()


@pytest.fixture
async def proxied(proxied_app: SharedApp) -> Api:
    return await proxied_app.started()


@pytest.fixture
async def clients(db: asyncpg.Connection) -> AsyncIterator[list[str]]:
    """Three client addresses of this test's own (the IPv6 one in a /64 of its own); their login
    back-off is cleared afterwards."""
    written = [f"203.0.113.{n}" for n in random.sample(range(1, 255), 2)] + [
        f"2001:db8:{secrets.token_hex(2)}:{secrets.token_hex(2)}::{secrets.token_hex(2)}"
    ]
    addresses = [str(ipaddress.ip_address(a)) for a in written]  # as the service writes them
    yield addresses
    counted = [f"address:{counted_source(a)}" for a in addresses]
    await db.execute("DELETE FROM login_throttles WHERE key = ANY($1)", counted)


def _via(client: str, *more: str) -> dict[str, str]:
    """The header as a proxy writes it: what came before, then the address it saw."""
    return {"X-Forwarded-For": ", ".join([*more, client])}


async def _statuses(api: Api, headers: dict[str, str], count: int) -> list[int]:
    return [(await api.client.get("/api/openapi.json", headers=headers)).status for _ in range(count)]


async def test_each_client_behind_the_proxy_has_its_own_address_limit(
    proxied: Api, clients: list[str]
) -> None:
    first, second, third = clients

    assert await _statuses(proxied, _via(first), BURST + 1) == [200] * BURST + [429]
    assert await _statuses(proxied, _via(second), 1) == [200]
    assert await _statuses(proxied, _via(third), 1) == [200]  # IPv6 too


async def test_what_the_client_wrote_before_the_proxys_entry_is_not_believed(
    proxied: Api, clients: list[str]
) -> None:
    client = clients[0]
    spoofed = [_via(client, f"198.51.100.{n}") for n in range(BURST + 1)]

    statuses = [(await proxied.client.get("/api/openapi.json", headers=h)).status for h in spoofed]

    assert statuses == [200] * BURST + [429]  # one client, however many addresses it made up


async def test_one_ipv6_subscriber_is_one_client_whichever_of_its_addresses_it_uses(
    proxied: Api, clients: list[str]
) -> None:
    """A /64 is one subscriber's: a fresh address per request does not start a fresh limit."""
    subscriber = ipaddress.IPv6Network(f"{clients[2]}/64", strict=False)
    addresses = [str(subscriber[secrets.randbits(64)]) for _ in range(BURST + 1)]
    neighbour = str(ipaddress.IPv6Network((int(subscriber.network_address) + 2**64, 64))[1])

    statuses = [(await proxied.client.get("/api/openapi.json", headers=_via(a))).status for a in addresses]

    assert statuses == [200] * BURST + [429]
    assert await _statuses(proxied, _via(neighbour), 1) == [200]  # the next /64: another subscriber


async def test_the_audit_trail_records_the_client_not_the_proxy(
    proxied: Api, clients: list[str], db: asyncpg.Connection
) -> None:
    nurse = await proxied.person("care_team_member", await proxied.organization())
    rid = new_request_id()
    status, _ = await proxied.call(
        "POST",
        "/api/patients",
        nurse,
        json={"firstName": "Ada", "lastName": "Doe", "riskLevel": "low"},
        headers={**_via(clients[2], "192.0.2.1"), "X-Request-ID": rid},
    )

    assert status == 201
    rows = await db.fetch("SELECT source_address FROM audit_events WHERE request_id = $1", rid)
    assert rows
    assert {str(ipaddress.ip_address(row["source_address"])) for row in rows} == {clients[2]}


async def test_one_clients_failed_logins_do_not_back_off_another_behind_the_same_proxy(
    proxied: Api, clients: list[str]
) -> None:
    attacker, nurse_address, _ = clients
    nurse = await proxied.person("care_team_member", await proxied.organization())

    async def login(address: str, email: str, password: str) -> int:
        body = {"email": email, "password": password}
        return (await proxied.client.post("/api/auth/login", json=body, headers=_via(address))).status

    failures = [
        await login(attacker, f"nobody.{secrets.token_hex(4)}@example.org", "wrong") for _ in range(3)
    ]
    assert failures[:2] == [401, 401]

    assert await login(attacker, nurse.email, PASSWORD) == 429  # the attacker's address waits ...
    assert await login(nurse_address, nurse.email, PASSWORD) == 200  # ... the nurse's does not


async def test_an_ipv6_subscriber_changing_address_between_logins_still_backs_off(
    proxied: Api, clients: list[str]
) -> None:
    subscriber = ipaddress.IPv6Network(f"{clients[2]}/64", strict=False)
    nurse = await proxied.person("care_team_member", await proxied.organization())

    async def login(email: str, password: str) -> int:
        address = str(subscriber[secrets.randbits(64)])  # a new one each time
        body = {"email": email, "password": password}
        return (await proxied.client.post("/api/auth/login", json=body, headers=_via(address))).status

    for _ in range(3):  # two free failures, the third earns a wait
        assert await login(f"nobody.{secrets.token_hex(4)}@example.org", "wrong") == 401

    assert await login(nurse.email, PASSWORD) == 429


async def test_refused_tokens_from_one_ipv6_subscriber_are_audited_as_one_summary(
    proxied: Api, clients: list[str], db: asyncpg.Connection
) -> None:
    subscriber = ipaddress.IPv6Network(f"{clients[2]}/64", strict=False)
    await proxied.flush_rejections()
    ids = [new_request_id() for _ in range(BURST)]
    for rid in ids:
        headers = {
            **_via(str(subscriber[secrets.randbits(64)])),
            "Authorization": "Bearer made.up",
            "X-Request-ID": rid,
        }
        assert (await proxied.client.get("/api/patients", headers=headers)).status == 401

    await proxied.flush_rejections()

    (row,) = await db.fetch(
        "SELECT source_address, details FROM audit_events WHERE event = 'auth.token_rejected'"
        " AND request_id = ANY($1)",
        ids,
    )
    assert row["source_address"] == str(subscriber)
    assert json.loads(row["details"])["count"] == BURST


async def test_a_trusted_proxys_entry_that_is_no_address_is_refused_without_echoing_it(
    proxied: Api,
) -> None:
    status, headers, body = await proxied.send(
        "GET", "/api/openapi.json", headers={"X-Forwarded-For": "192.0.2.1, Ada Lovelace"}
    )

    assert status == 400
    assert headers["Content-Type"].startswith("application/problem+json")
    assert body["code"] == "malformed_request"
    assert [(e["field"], e["type"]) for e in body["errors"]] == [("X-Forwarded-For", "header_invalid")]
    assert body["requestId"] == headers["X-Request-ID"]
    assert "Lovelace" not in json.dumps(body)


@pytest.mark.parametrize("trusted", [(), ("10.0.0.0/8",)], ids=["no proxy trusted", "another proxy trusted"])
async def test_a_peer_that_is_no_trusted_proxy_is_the_client_whatever_its_header_says(
    aiohttp_client: Any, settings: Settings, trusted: tuple[str, ...]
) -> None:
    api = Api(await aiohttp_client(create_app(_behind(settings, *trusted))))
    made_up = [{"X-Forwarded-For": f"198.51.100.{n}"} for n in range(BURST + 1)]

    statuses = [(await api.client.get("/api/openapi.json", headers=h)).status for h in made_up]

    assert statuses == [200] * BURST + [429]  # every request spent 127.0.0.1's one bucket
