"""Fixtures of the Sendbird client's and gateway's tests: the emulator on its own fault clock, a real
HTTP client, the Sendbird client on a manual clock (no test sleeps), the gateway over it, and
clients whose HTTP goes to a MockTransport handler instead."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from integrations.http_clients import http_client
from integrations.sendbird import SendbirdChatGateway, SendbirdClient
from integrations.sendbird_emulator import RunningEmulator, start_emulator
from tests.support.sendbird import API_TOKEN, APP_ID, MOCK_BASE_URL, Handler, ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fault_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def emulator(fault_clock: ManualClock) -> AsyncIterator[RunningEmulator]:
    ticks = itertools.count(1_700_000_000_000, 1_000)  # distinct created_at per object, 1 s apart
    running = await start_emulator(
        app_id=APP_ID, api_token=API_TOKEN, clock=fault_clock, wall_clock_ms=lambda: next(ticks)
    )
    yield running
    await running.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with http_client() as client:
        yield client


@pytest.fixture
def client(http: httpx.AsyncClient, emulator: RunningEmulator, clock: ManualClock) -> SendbirdClient:
    return SendbirdClient(
        http, base_url=emulator.base_url, api_token=API_TOKEN, clock=clock, sleep=clock.sleep
    )


@pytest.fixture
def gateway(client: SendbirdClient) -> SendbirdChatGateway:
    return SendbirdChatGateway(client)


@pytest.fixture
async def mocked(clock: ManualClock) -> AsyncIterator[Callable[..., SendbirdClient]]:
    """Builds clients whose HTTP goes to a MockTransport handler instead of the network."""
    opened: list[httpx.AsyncClient] = []

    def make(handler: Handler, **options: Any) -> SendbirdClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        opened.append(http)
        options.setdefault("clock", clock)
        options.setdefault("sleep", clock.sleep)
        return SendbirdClient(http, base_url=MOCK_BASE_URL, api_token=API_TOKEN, **options)

    yield make
    for http in opened:
        await http.aclose()
