"""Integration fixtures: a SQLAlchemy engine on the session's database (the administrator's login,
as ``db`` is), for tests that drive repositories and units of work directly, without an app; and,
for tests of the relay that hold the emulator's answer until they release it, an app and a chat
client that wait that long (``patient_api``, ``patient_chat``; the module's own ``api`` fixture is
the app they wait on)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from engine.ports import ChatGateway
from handlers.app import create_app
from handlers.keys import emulator_key
from handlers.settings import Settings
from integrations.db.array_codecs import prime_each_connection
from integrations.http_clients import http_client
from integrations.sendbird import SendbirdChatGateway, SendbirdClient
from tests.support.api import Api
from tests.support.messaging import UNTIL_RELEASED, emulator


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    prime_each_connection(engine)  # as the service's engine: no catalog lookup of array types
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def patient_api(aiohttp_client: Any, settings: Settings) -> Api:
    """The app, its chat and SMS clients waiting out a hang until the test releases it."""
    sendbird = settings.sendbird.model_copy(update={"timeout_seconds": UNTIL_RELEASED})
    return Api(await aiohttp_client(create_app(settings.model_copy(update={"sendbird": sendbird}))))


@pytest.fixture
async def patient_chat(api: Api) -> AsyncIterator[ChatGateway]:
    """The app's emulator through a chat client that waits out a hang until the test releases it."""
    async with http_client() as http:
        client = SendbirdClient(
            http,
            base_url=api.app[emulator_key].base_url,
            api_token=emulator(api).api_token,
            timeout=UNTIL_RELEASED,
        )
        yield SendbirdChatGateway(client)
