"""A relay that dies mid-delivery (SIGKILL) holds up its conversations for one short lease, not a
minute: while it lives its heartbeat keeps the lease, however long a delivery takes; once it is
gone another relay delivers within seconds."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from handlers.api_messaging import messaging_key
from handlers.app import create_app
from handlers.keys import chat_key, sessions_key
from handlers.settings import Settings
from integrations.relay import OutboxRelay, RelaySettings
from tests.support.api import Api
from tests.support.messaging import emulator, send, stop_app_relay
from tests.support.polling import eventually

PROJECT = Path(__file__).resolve().parents[2]
LEASE = 0.6

#: A relay whose chat provider never answers: it claims the entry and stays in its delivery.
STUCK_RELAY = """
import asyncio, sys
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from integrations.relay import OutboxRelay, RelaySettings

class UnansweringChat:
    def __getattr__(self, name):
        async def call(*args, **kwargs):
            await asyncio.Event().wait()
        return call

async def main(url, lease):
    engine = create_async_engine(url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    settings = RelaySettings(poll_interval=0.05, lease_seconds=float(lease))
    await OutboxRelay(sessions, UnansweringChat(), settings).run()

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.fixture
async def api(aiohttp_client: Any, settings: Settings) -> Api:
    return Api(await aiohttp_client(create_app(settings)))


async def test_a_killed_relays_entries_are_delivered_by_another_within_seconds(
    api: Api, settings: Settings, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    patient_id = await api.patient(nurse)
    status, conversation = await api.call(
        "POST", "/api/conversations", nurse, json={"title": "Rounds", "patientId": patient_id}
    )
    assert status == 201, conversation

    async def channel_ready() -> bool:
        _, body = await api.call("GET", f"/api/conversations/{conversation['id']}", nurse)
        return bool(body["channelState"] == "ready")

    await eventually(channel_ready, "the channel to be ready")
    await stop_app_relay(api.app)
    status, accepted = await send(api, nurse, conversation["id"], "Vitals are stable.")
    assert status == 202, accepted
    lease = "SELECT lease_until > now() FROM outbox WHERE message_id = $1 AND status = 'pending'"

    stuck = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STUCK_RELAY, settings.database.url, str(LEASE), cwd=PROJECT
    )
    try:
        # A fresh interpreter importing the relay: seconds on a loaded 2-core machine, so a long deadline.
        await eventually(
            lambda: db.fetchval(lease, accepted["id"]), "the stuck relay to claim the entry", within=30
        )
        # Alive, it keeps renewing: the entry stays leased two leases long (one renewal at least).
        loop = asyncio.get_running_loop()
        until = loop.time() + 2 * LEASE
        while loop.time() < until:
            assert await db.fetchval(lease, accepted["id"]) is True
            await asyncio.sleep(LEASE / 4)
    finally:
        stuck.kill()  # SIGKILL: nothing gives the lease back
        await stuck.wait()

    relay = OutboxRelay(
        api.app[sessions_key],
        api.app[chat_key],
        RelaySettings(poll_interval=0.05, lease_seconds=LEASE),
        executors=api.app[messaging_key].outbox_kinds,
    )
    running = asyncio.create_task(relay.run())
    try:

        async def posted() -> bool:
            channel = emulator(api).messages(conversation["channelUrl"])
            return [m.message for m in channel] == ["Vitals are stable."]

        await eventually(posted, "another relay to deliver the message", within=3 * LEASE + 3)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
