"""Idempotency-Key on send-message and POST /api/conversations, over HTTP against the real app."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine.errors import Conflict
from handlers.api_messaging import messaging_key
from handlers.keys import sessions_key
from handlers.settings import Settings
from integrations.idempotency import Claim, IdempotencyStore, request_hash
from tests.support.api import PASSWORD, Api, Person
from tests.support.messaging import CareTeam, care_team, emulator
from tests.support.polling import eventually

SEND = "/api/conversations/send-message"
PROJECT = Path(__file__).resolve().parents[2]

#: A request that has claimed a key and is still running: it holds the lease until killed.
RUNNING_REQUEST = """
import asyncio, sys
from datetime import timedelta
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from integrations.idempotency import IdempotencyStore

async def main(url, user, key, lease):
    engine = create_async_engine(url)
    store = IdempotencyStore(
        async_sessionmaker(engine), ttl=timedelta(hours=1), lease=timedelta(seconds=float(lease))
    )
    claim = await store.claim(int(user), key, "message.send", "digest")
    async with store.held(claim):
        print("claimed", flush=True)
        await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
"""


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"k-{uuid.uuid4()}"}


async def send(api: Api, who: Person, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    return await api.call("POST", SEND, who, json=body, headers=headers)


def message(team: CareTeam, text: str = "hello") -> dict[str, Any]:
    return {"conversationId": team.conversation_id, "message": text}


def same_message(body: dict[str, Any]) -> dict[str, Any]:
    """What a replay repeats of a sending: the same message (its delivery state is read again, and
    moves on)."""
    return {k: body[k] for k in ("id", "conversationId", "senderId", "message", "createdAt", "priority")}


async def test_the_same_key_and_body_replay_the_first_message_and_send_once(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    headers = key()

    first = await send(api, team.peer, message(team), headers)
    second = await send(api, team.peer, message(team), headers)

    assert first[0] == 202, first
    assert (second[0], same_message(second[1])) == (202, same_message(first[1]))
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
    assert (second[0], same_message(second[1])) == (202, same_message(first[1]))


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


async def _key_row(db: asyncpg.Connection, person: Person, headers: dict[str, str]) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT state, response_status, resource_id, t::text AS whole FROM idempotency_keys t"
        " WHERE user_id = $1 AND key = $2",
        person.id,
        headers["Idempotency-Key"],
    )
    assert row is not None
    return row


async def test_a_completed_key_keeps_what_it_created_and_no_text_of_the_answer(
    api: Api, db: asyncpg.Connection
) -> None:
    """A message's text and a conversation's title are PHI: the key row holds the first status and
    the id of what the request created (a replay reads it again), never a copy of the answer."""
    team = await care_team(api)
    text, title = (f"Potassium {uuid.uuid4().hex}" for _ in range(2))
    sent_with, created_with = key(), key()

    sent = await send(api, team.peer, message(team, text), sent_with)
    created = await api.call(
        "POST", "/api/conversations", team.peer, json={"title": title, "patientId": team.patient_id},
        headers=created_with,
    )  # fmt: skip

    assert (sent[0], created[0]) == (202, 201), (sent, created)
    for headers, (status, body), secret in ((sent_with, sent, text), (created_with, created, title)):
        row = await _key_row(db, team.peer, headers)
        assert (row["state"], row["response_status"], row["resource_id"]) == ("completed", status, body["id"])
        assert secret not in row["whole"]


async def test_a_key_whose_request_died_after_committing_is_answered_from_what_it_created(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    headers = key()
    first = await send(api, team.peer, message(team), headers)
    # The process died after the commit and before the response was stored, long enough ago.
    await db.execute(
        "UPDATE idempotency_keys SET state = 'in_progress', response_status = NULL,"
        " lease_until = now() - interval '1 second' WHERE key = $1",
        headers["Idempotency-Key"],
    )

    status, body = await send(api, team.peer, message(team), headers)

    assert status == 202, body
    assert body["id"] == first[1]["id"]
    assert (
        await db.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1", team.conversation_id)
        == 1
    )


async def test_a_key_whose_request_was_killed_is_usable_again_within_seconds(
    api: Api, settings: Settings, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    key, lease = f"k-{uuid.uuid4()}", 0.6
    request = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RUNNING_REQUEST, settings.database.url, str(team.peer.id), key, str(lease),
        cwd=PROJECT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    store = IdempotencyStore(api.app[sessions_key], ttl=timedelta(hours=1), lease=timedelta(seconds=lease))

    async def repeat() -> object:
        return await store.claim(team.peer.id, key, "message.send", "digest")

    try:
        assert request.stdout is not None
        assert await request.stdout.readline() == b"claimed\n"

        # Alive, it renews its lease: the lease reaches two leases past where its claim set it, and a
        # repeat then, when the claim's own lease would long have run out, is refused. Renewals are
        # checked, not an unbroken lease: a subprocess starved for longer than a lease on a busy machine
        # lets it lapse for a moment (a repeat in that moment takes the key over, as it should).
        leased = (
            "SELECT lease_until, lease_until - now() AS remaining FROM idempotency_keys"
            " WHERE user_id = $1 AND key = $2 AND state = 'in_progress'"
        )
        claimed = await db.fetchrow(leased, team.peer.id, key)
        assert claimed is not None

        async def renewed() -> bool:
            row = await db.fetchrow(leased, team.peer.id, key)
            assert row is not None, "the running request keeps its key"
            return bool(
                row["lease_until"] >= claimed["lease_until"] + timedelta(seconds=2 * lease)
                and row["remaining"] > timedelta(seconds=lease / 2)
            )

        await eventually(renewed, "the running request to renew its lease", within=30)
        with pytest.raises(Conflict):
            await repeat()
    finally:
        with contextlib.suppress(ProcessLookupError):
            request.kill()  # SIGKILL: nothing releases the key (nor is it left running if a check failed)
        await request.wait()

    async def taken_over() -> Claim | None:
        try:
            taken = await repeat()
        except Conflict:
            return None
        assert isinstance(taken, Claim)
        return taken

    # Free again about one lease after the last renewal, where it used to take a whole minute.
    await eventually(taken_over, "the killed request's key to be free", within=3 * lease + 2)


async def _async(value: Any) -> Any:
    return value


# --- a replay answers what the caller may read now --------------------------------------------------


async def test_a_replay_after_the_message_was_recalled_does_not_show_its_text(api: Api) -> None:
    team = await care_team(api)
    headers = key()
    sent = await send(api, team.peer, message(team, "wrong patient's dose"), headers)
    assert sent[0] == 202, sent
    recall = f"/api/messages/{sent[1]['id']}/recall"
    assert (await api.call("POST", recall, team.peer, json={"reason": "wrong patient"}))[0] == 200

    status, replayed = await send(api, team.peer, message(team, "wrong patient's dose"), headers)

    assert status == 202, replayed
    assert replayed["id"] == sent[1]["id"]
    assert (replayed["message"], replayed["recalled"]) == (None, True)
    assert "dose" not in str(replayed)


async def test_a_replay_after_the_sender_lost_access_is_decided_again(api: Api) -> None:
    team = await care_team(api)
    admin = await api.person("admin", team.organization_id)
    headers = key()
    assert (await send(api, team.peer, message(team, "the dose is 5mg"), headers))[0] == 202
    changed = await api.call("PUT", f"/api/users/{team.peer.id}/role", admin, json={"role": "auditor"})
    assert changed[0] == 200, changed
    login = {"email": team.peer.email, "password": PASSWORD}
    status, session = await api.call("POST", "/api/auth/login", json=login)
    assert (status, session["user"]["role"]) == (200, "auditor"), session
    auditor = replace(team.peer, token=session["token"], role="auditor")

    status, problem = await send(api, auditor, message(team, "the dose is 5mg"), headers)

    assert status in (403, 404), problem
    assert "5mg" not in str(problem)
