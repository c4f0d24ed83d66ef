"""A relay that dies mid-delivery (SIGKILL) holds up its conversations for one short lease, not a
minute: while it lives its heartbeat keeps the lease, however long a delivery takes; once it is
gone another relay delivers within seconds."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from datetime import timedelta
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
    leased = "SELECT lease_until, attempts FROM outbox WHERE message_id = $1 AND status = 'pending'"

    stuck = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STUCK_RELAY, settings.database.url, str(LEASE), cwd=PROJECT
    )
    try:

        async def claimed() -> asyncpg.Record | None:
            row = await db.fetchrow(leased, accepted["id"])
            return row if row is not None and row["lease_until"] is not None else None

        # A fresh interpreter importing the relay: seconds on a loaded 2-core machine, so a long deadline.
        claim = await eventually(claimed, "the stuck relay to claim the entry", within=30)

        # Alive, it keeps renewing while its delivery never ends: on the same claim (the attempt it
        # counted), the lease reaches two leases past where the claim set it. Renewals are checked,
        # not an unbroken lease: a subprocess starved for longer than a lease on a busy machine lets
        # it lapse for a moment (the next renewal takes it back, while no other relay claimed it).
        async def renewed() -> bool:
            row = await db.fetchrow(leased, accepted["id"])
            assert row is not None, "the entry stays pending while the stuck relay lives"
            assert row["attempts"] == claim["attempts"], "the stuck relay kept its claim"
            return row["lease_until"] is not None and bool(
                row["lease_until"] >= claim["lease_until"] + timedelta(seconds=2 * LEASE)
            )

        await eventually(renewed, "the stuck relay to renew its lease", within=30)
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
