"""HTTP hygiene (issue 10, item 8): one middleware sets the security headers on every response, and
each header has its test here, on a success, a refusal and an endpoint that does not exist."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.app import create_app
from handlers.settings import Settings
from tests.api.conftest import Api
from tests.support.api import PROBLEM_JSON


async def responses(api: Api) -> list[tuple[str, int, dict[str, str]]]:
    """A 200 with PHI, a 401 and a 404: the headers must not depend on how a request ended."""
    org = await api.organization()
    peer = await api.person("peer_support", org)
    patient_id = await api.patient(peer)
    out = []
    for path, who in ((f"/api/patients/{patient_id}", peer), ("/api/patients", None), ("/api/nowhere", peer)):
        status, headers, _ = await api.send("GET", path, who)
        out.append((path, status, headers))
    assert [status for _, status, _ in out] == [200, 401, 404]
    return out


def header_everywhere(seen: list[tuple[str, int, dict[str, str]]], name: str) -> list[str]:
    return [headers.get(name, "<missing>") for _, _, headers in seen]


async def test_the_server_header_names_no_software_or_version(api: Api) -> None:
    for value in header_everywhere(await responses(api), "Server"):
        assert value == "caremsg"


async def test_content_type_sniffing_is_off(api: Api) -> None:
    assert set(header_everywhere(await responses(api), "X-Content-Type-Options")) == {"nosniff"}


async def test_no_page_may_frame_a_response(api: Api) -> None:
    seen = await responses(api)

    assert set(header_everywhere(seen, "X-Frame-Options")) == {"DENY"}
    for csp in header_everywhere(seen, "Content-Security-Policy"):
        assert "frame-ancestors 'none'" in csp
        assert "default-src 'none'" in csp


async def test_no_referrer_leaves_with_a_link(api: Api) -> None:
    assert set(header_everywhere(await responses(api), "Referrer-Policy")) == {"no-referrer"}


async def test_no_response_is_stored_by_a_cache(api: Api) -> None:
    assert set(header_everywhere(await responses(api), "Cache-Control")) == {"no-store"}


async def test_a_method_an_endpoint_does_not_take_is_a_405_with_allow(api: Api) -> None:
    status, headers, body = await api.send("DELETE", "/api/patients")

    assert status == 405, body
    assert headers["Content-Type"].startswith(PROBLEM_JSON)
    assert body["code"] == "method_not_allowed"
    assert set(headers["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}
    assert headers["X-Content-Type-Options"] == "nosniff"


async def test_no_hsts_over_plain_http(api: Api) -> None:
    status, headers, _ = await api.send("GET", "/health", headers={"X-Forwarded-Proto": "https"})

    assert status == 200
    assert "Strict-Transport-Security" not in headers  # a client's X-Forwarded-Proto is not trusted


@pytest.fixture
def behind_tls_proxy(settings: Settings) -> Settings:
    service = settings.service.model_copy(update={"trust_forwarded_proto": True})
    return settings.model_copy(update={"service": service})


async def test_hsts_behind_a_trusted_proxy_that_says_https(
    aiohttp_client: Any, behind_tls_proxy: Settings
) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(behind_tls_proxy))

    over_https = await client.get("/health", headers={"X-Forwarded-Proto": "https"})
    over_http = await client.get("/health", headers={"X-Forwarded-Proto": "http"})

    hsts = over_https.headers["Strict-Transport-Security"]
    assert hsts.startswith("max-age=")
    assert int(hsts.split(";")[0].removeprefix("max-age=")) >= 31_536_000  # a year at least
    assert "Strict-Transport-Security" not in over_http.headers


@pytest.mark.parametrize(("proxies", "hsts"), [(("127.0.0.1/32",), True), (("10.0.0.0/8",), False)])
async def test_with_proxies_named_only_theirs_is_believed(
    aiohttp_client: Any, behind_tls_proxy: Settings, proxies: tuple[str, ...], hsts: bool
) -> None:
    """As for X-Forwarded-For (handlers/proxies.py): the test client connects from 127.0.0.1."""
    service = behind_tls_proxy.service.model_copy(
        update={"trusted_proxies": tuple(ipaddress.ip_network(p) for p in proxies)}
    )
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(behind_tls_proxy.model_copy(update={"service": service}))
    )

    resp = await client.get("/health", headers={"X-Forwarded-Proto": "https"})

    assert ("Strict-Transport-Security" in resp.headers) is hsts
