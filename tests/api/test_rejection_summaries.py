"""Unauthenticated requests are audited as one counted summary per source and window, not one
permanent row each (issue 10: 500 requests without a token had written 500 audit rows)."""

from __future__ import annotations

import json

import asyncpg

from tests.api.conftest import Api, new_request_id


async def test_a_flood_of_refused_tokens_leaves_one_counted_record_per_source_and_window(
    api: Api, db: asyncpg.Connection
) -> None:
    first = new_request_id()
    before = await db.fetchval("SELECT count(*) FROM audit_events WHERE workflow = 'auth.token'")
    await api.call("GET", "/api/patients", headers={"X-Request-ID": first})
    for i in range(30):
        await api.call("GET", "/api/patients", headers={"Authorization": f"Bearer forged.{i}"})
    for _ in range(9):
        await api.call("GET", "/api/conversations")

    assert await db.fetchval("SELECT count(*) FROM audit_events WHERE workflow = 'auth.token'") == before
    await api.flush_rejections()

    rows = await db.fetch(
        "SELECT * FROM audit_events WHERE workflow = 'auth.token' ORDER BY id OFFSET $1", before
    )
    [row] = rows
    assert (row["request_id"], row["reason"], row["source_address"], row["actor_id"]) == (
        first,
        "token_missing",
        "127.0.0.1",
        None,
    )
    details = json.loads(row["details"])
    assert (details["count"], details["token_missing"], details["token_invalid"]) == (40, 10, 30)
    assert details["route"] == "/api/patients"


async def test_the_next_window_starts_a_new_record(api: Api, db: asyncpg.Connection) -> None:
    ids = [new_request_id(), new_request_id()]
    await api.call("GET", "/api/patients", headers={"X-Request-ID": ids[0]})
    await api.flush_rejections()
    await api.call("GET", "/api/patients", headers={"X-Request-ID": ids[1]})
    await api.call("GET", "/api/patients")
    await api.flush_rejections()

    counts = [
        json.loads(await db.fetchval("SELECT details FROM audit_events WHERE request_id = $1", rid))["count"]
        for rid in ids
    ]
    assert counts == [1, 2]
