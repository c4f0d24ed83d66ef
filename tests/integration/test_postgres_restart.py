"""A PostgreSQL restart under the real app and the emulator: requests during the gap get 503
problem+json, and the service recovers by itself.

The module runs a PostgreSQL server of its own, from the embedded package's binaries, which the test
stops and starts; each run gets a fresh database on it, cloned from a migrated template. The test
runs once per way Sendbird may answer a repeated ``dedup_id`` (as test_outage.py's do): the messages
sent around the restart are still delivered once.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from handlers.app import create_app
from handlers.keys import sessions_key
from handlers.settings import Settings
from integrations.db.embedded import RestartablePostgres
from integrations.db.migrate import upgrade_async
from integrations.sendbird_emulator import DEDUP_MODES, DedupMode
from tests.support.api import Api
from tests.support.database import admin
from tests.support.messaging import care_team, emulator, send, settled_deliveries
from tests.support.polling import eventually


@pytest.fixture(params=DEDUP_MODES)
def dedup_mode(request: pytest.FixtureRequest) -> DedupMode:
    mode: DedupMode = request.param
    return mode


MIGRATED = "caremsg_migrated"


@pytest.fixture(scope="module")
def own_postgres_server() -> Iterator[RestartablePostgres]:
    """One server for the module (initdb is the slow part), with a migrated template database."""
    directory = Path(tempfile.mkdtemp(prefix="caremsg-pg-"))
    server = RestartablePostgres(directory, max_connections=50)
    server.init()
    server.start()
    try:
        asyncio.run(admin(server.url(), f'CREATE DATABASE "{MIGRATED}"'))
        asyncio.run(upgrade_async(server.url(MIGRATED)))
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def own_postgres(own_postgres_server: RestartablePostgres) -> str:
    """A fresh migrated database on that server, running (a failed test may have left it stopped)."""
    server = own_postgres_server
    if not await asyncio.to_thread(server.running):
        await asyncio.to_thread(server.start)
    name = f"caremsg_restart_{secrets.token_hex(4)}"
    await admin(server.url(), f'CREATE DATABASE "{name}" TEMPLATE "{MIGRATED}"')
    return server.url(name)


@pytest.mark.slow
async def test_requests_during_a_postgresql_restart_get_503_and_the_service_recovers_by_itself(
    aiohttp_client: Any,
    settings: Settings,
    own_postgres_server: RestartablePostgres,
    own_postgres: str,
    dedup_mode: DedupMode,
) -> None:
    restartable = settings.model_copy(
        update={"database": settings.database.model_copy(update={"url": own_postgres})}
    )
    api = Api(await aiohttp_client(create_app(restartable)))
    emulator(api).dedup_mode = dedup_mode
    team = await care_team(api)
    status, before = await send(api, team.peer, team.conversation_id, "before the restart")
    assert status == 202, before

    await asyncio.to_thread(own_postgres_server.stop)
    status, problem = await send(api, team.peer, team.conversation_id, "during the restart")
    resp = await api.client.get("/ready")  # /health says alive; /ready says able to serve
    alive = await api.client.get("/health")
    await asyncio.to_thread(own_postgres_server.start)

    assert status == 503, problem
    assert problem["code"] == "service_unavailable"
    assert "during the restart" not in str(problem)
    assert resp.status == 503
    assert resp.headers["Content-Type"].startswith("application/")
    assert (await resp.json())["checks"]["database"]["ok"] is False
    assert alive.status == 200

    async def accepted() -> dict[str, Any] | None:
        status, body = await send(api, team.peer, team.conversation_id, "after the restart")
        return body if status == 202 else None

    after = await eventually(accepted, "the service to accept messages again", within=20)
    for message_id in (before["id"], after["id"]):
        await settled_deliveries(api, team.peer, message_id)
    in_chat = [m.message for m in emulator(api).messages(team.conversation["channelUrl"])]
    assert in_chat == ["before the restart", "after the restart"]
    async with api.app[sessions_key]() as session:
        stored = (await session.execute(text("SELECT count(*) FROM messages"))).scalar()
    assert stored == 2
