"""Idempotency-Key on send-message and POST /api/conversations, over HTTP against the real app."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from handlers.api_messaging import messaging_key
from integrations.idempotency import Claim, request_hash
from tests.support.api import Api, Person
from tests.support.messaging import CareTeam, care_team, emulator, eventually

SEND = "/api/conversations/send-message"


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"k-{uuid.uuid4()}"}


async def send(api: Api, who: Person, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    return await api.call("POST", SEND, who, json=body, headers=headers)


def message(team: CareTeam, text: str = "hello") -> dict[str, Any]:
    return {"conversationId": team.conversation_id, "message": text}


async def test_the_same_key_and_body_replay_the_first_response_and_send_once(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    headers = key()

    first = await send(api, team.peer, message(team), headers)
    second = await send(api, team.peer, message(team), headers)

    assert first[0] == 202, first
    assert second == first
    count = "SELECT count(*) FROM messages WHERE conversation_id = $1"
    assert await db.fetchval(count, team.conversation_id) == 1
    channel = team.conversation["channelUrl"]
    await eventually(lambda: _async(emulator(api).messages(channel)), "delivery")
    assert len(emulator(api).messages(channel)) == 1


async def test_a_replay_is_the_same_even_with_keys_in_another_order(api: Api) -> None:
    team = await care_team(api)
    headers = {**key(), "Content-Type": "application/json"}
    one = f'{{"conversationId": {team.conversation_id}, "message": "x"}}'.encode()
    other = f'{{"message":"x","conversationId":{team.conversation_id}}}'.encode()

    first = await api.call("POST", SEND, team.peer, data=one, headers=headers)
    second = await api.call("POST", SEND, team.peer, data=other, headers=headers)

    assert first[0] == 202
    assert second == first


async def test_the_same_key_with_a_different_body_is_422(api: Api, db: asyncpg.Connection) -> None:
    team = await care_team(api)
    headers = key()
    first = await send(api, team.peer, message(team, "one"), headers)
    assert first[0] == 202, first

    status, problem = await send(api, team.peer, message(team, "two"), headers)

    assert status == 422, problem
    assert problem["code"] == "idempotency_key_reused"
    assert "two" not in str(problem)
    assert (
        await db.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1", team.conversation_id)
        == 1
    )


async def test_a_duplicate_while_the_first_request_is_still_running_is_409(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    headers = key()
    body = message(team)
    # The first request has claimed the key and is still working (its row is in_progress).
    store = api.app[messaging_key].idempotency
    raw = f'{{"conversationId": {team.conversation_id}, "message": "hello"}}'.encode()
    claimed = await store.claim(
        team.peer.id, headers["Idempotency-Key"], "message.send", request_hash("message.send", raw)
    )
    assert isinstance(claimed, Claim)

    status, problem = await send(api, team.peer, body, headers)

    assert status == 409, problem
    assert problem["code"] == "conflict"
    assert (
        await db.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1", team.conversation_id)
        == 0
    )


async def test_an_expired_key_may_be_used_again(api: Api, db: asyncpg.Connection) -> None:
    team = await care_team(api)
    headers = key()
    assert (await send(api, team.peer, message(team, "one"), headers))[0] == 202
    await db.execute(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = $1",
        headers["Idempotency-Key"],
    )

    status, accepted = await send(api, team.peer, message(team, "two"), headers)

    assert status == 202, accepted
    assert accepted["message"] == "two"


async def test_keys_are_per_user(api: Api) -> None:
    team = await care_team(api)
    headers = key()

    first = await send(api, team.peer, message(team, "from peer"), headers)
    second = await send(api, team.nurse, message(team, "from nurse"), headers)

    assert (first[0], second[0]) == (202, 202)
    assert first[1]["id"] != second[1]["id"]


async def test_a_refused_request_does_not_use_up_its_key(api: Api) -> None:
    team = await care_team(api)
    outsider = await api.person("care_team_member", team.organization_id)
    headers = key()

    status, _ = await send(api, outsider, message(team), headers)
    assert status == 403
    status, _ = await send(api, outsider, message(team), headers)
    assert status == 403  # decided again, not replayed from a stored refusal


async def test_a_malformed_key_is_422_naming_the_header(api: Api) -> None:
    team = await care_team(api)

    status, problem = await send(api, team.peer, message(team), {"Idempotency-Key": "x" * 256})

    assert status == 422, problem
    assert [e["field"] for e in problem["errors"]] == ["Idempotency-Key"]


async def test_creating_a_conversation_with_a_key_twice_creates_it_once(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    peer = await api.person("peer_support", org)
    patient_id = await api.patient(peer)
    headers = key()
    body = {"title": "Once", "patientId": patient_id}

    first = await api.call("POST", "/api/conversations", peer, json=body, headers=headers)
    second = await api.call("POST", "/api/conversations", peer, json=body, headers=headers)

    assert first[0] == 201, first
    assert second == first
    assert await db.fetchval("SELECT count(*) FROM conversations WHERE patient_id = $1", patient_id) == 1


async def test_a_key_whose_request_died_after_committing_is_answered_from_what_it_created(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    headers = key()
    first = await send(api, team.peer, message(team), headers)
    # The process died after the commit and before the response was stored, long enough ago.
    await db.execute(
        "UPDATE idempotency_keys SET state = 'in_progress', response_body = NULL, response_status = NULL,"
        " created_at = now() - interval '1 hour' WHERE key = $1",
        headers["Idempotency-Key"],
    )

    status, body = await send(api, team.peer, message(team), headers)

    assert status == 202, body
    assert body["id"] == first[1]["id"]
    assert (
        await db.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1", team.conversation_id)
        == 1
    )


async def _async(value: Any) -> Any:
    return value
