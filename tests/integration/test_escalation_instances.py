"""Two escalation schedulers, each on its own connection pool (as two service instances would be), on
the same PostgreSQL and the same fake time: every due step is taken exactly once, with one outbox
entry and one audit record, however their rounds interleave."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from engine.consent_index import ConsentIndex
from handlers.app import create_app
from handlers.keys import policy_key
from handlers.settings import Settings
from integrations.escalation import EscalationScheduler
from tests.support.api import Api
from tests.support.fakes import FakeClock
from tests.support.messaging import care_team
from tests.support.polling import eventually

MESSAGES = 24


@pytest.fixture
async def api(aiohttp_client: Any, settings: Settings) -> Api:
    return Api(await aiohttp_client(create_app(settings)))


@pytest.fixture
async def instances(database_url: str) -> AsyncIterator[list[async_sessionmaker[AsyncSession]]]:
    engines = [create_async_engine(database_url) for _ in range(2)]
    try:
        yield [async_sessionmaker(e, expire_on_commit=False) for e in engines]
    finally:
        for engine in engines:
            await engine.dispose()


async def test_two_schedulers_take_each_due_step_once(
    api: Api, db: asyncpg.Connection, instances: list[async_sessionmaker[AsyncSession]]
) -> None:
    team = await care_team(api)
    ids = []
    for n in range(MESSAGES):
        body = {"conversationId": team.conversation_id, "message": f"urgent {n}", "priority": "urgent"}
        status, sent = await api.call("POST", "/api/conversations/send-message", team.peer, json=body)
        assert status == 202, sent
        ids.append(sent["id"])

    async def posted() -> bool:
        states = await db.fetch("SELECT state FROM messages WHERE id = ANY($1::int[])", ids)
        return all(r["state"] != "queued" for r in states)

    await eventually(posted, "the urgent messages to be posted")
    latest = await db.fetchval("SELECT max(created_at) FROM messages WHERE id = ANY($1::int[])", ids)
    clock = FakeClock(latest + timedelta(minutes=5, seconds=1))  # re-alerts 1 and 2 due, and the text
    policy = api.app[policy_key]
    schedulers = [
        EscalationScheduler(sessions, lambda: policy.current, ConsentIndex(), clock=clock, batch_size=5)
        for sessions in instances
    ]

    async def rounds() -> None:
        while await db.fetchval(
            "SELECT count(*) FROM messages WHERE id = ANY($1::int[]) AND escalation_due_at <= $2",
            ids,
            clock(),
        ):
            await asyncio.gather(*(s.run_once() for s in schedulers), *(s.run_once() for s in schedulers))

    await asyncio.wait_for(rounds(), 60)

    taken = await db.fetch(
        "SELECT message_id, step, round, count(*) AS n FROM escalation_steps"
        " WHERE message_id = ANY($1::int[]) GROUP BY 1, 2, 3",
        ids,
    )
    assert sorted((r["message_id"], r["step"], r["round"], r["n"]) for r in taken) == sorted(
        [(m, "realert", 2, 1) for m in ids] + [(m, "text", 1, 1) for m in ids]
    )
    entries = await db.fetch(
        "SELECT kind, count(*) AS n FROM outbox WHERE message_id = ANY($1::int[])"
        " AND kind LIKE 'urgent_%' GROUP BY 1",
        ids,
    )
    assert {r["kind"]: r["n"] for r in entries} == {"urgent_realert": MESSAGES, "urgent_text": MESSAGES}
    audited = await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE workflow = 'message.escalate' AND event = 'escalation_step'"
        " AND resource_id = ANY($1::text[])",
        [str(m) for m in ids],
    )
    assert audited == 2 * MESSAGES
