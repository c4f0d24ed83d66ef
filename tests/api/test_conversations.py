"""Conversations over HTTP: create, list, read and send, against the real app, PostgreSQL and the
Sendbird emulator that the app runs on loopback. Delivery is asynchronous (the outbox relay), so
tests wait for it by polling with a deadline, never by sleeping a fixed time.

Longer than 400 lines because create, list, read and send share the Team fixtures and the helpers
that wait for the relay (``settled``, ``ready``, ``sent``): every send needs a conversation made
ready the same way, and the cases of a failing chat service reuse them.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import pytest

from handlers.keys import emulator_key
from integrations.sendbird_emulator import EmulatorState
from tests.support.api import Api, Person
from tests.support.polling import eventually

T = TypeVar("T")

CONVERSATION_KEYS = {
    "id",
    "title",
    "patientId",
    "channelUrl",
    "channelState",
    "memberIds",
    "externalMembers",
    "createdBy",
    "createdAt",
}
MESSAGE_KEYS = {"id", "conversationId", "senderId", "message", "state", "createdAt"}
CAMEL_CASE = re.compile(r"^[a-z][a-zA-Z0-9]*$")
EXTERNAL_PHONE = "+12025550143"
DEADLINE_SECONDS = 5.0


@dataclass
class Team:
    """One organization with a patient registered by a peer support specialist (on the care team)
    and a nurse of the same organization who is not on the care team."""

    organization_id: int
    peer: Person
    nurse: Person
    patient_id: int


@pytest.fixture
async def team(api: Api) -> Team:
    org = await api.organization()
    peer = await api.person("peer_support", org)
    nurse = await api.person("care_team_member", org)
    patient_id = await api.patient(peer)
    return Team(org, peer, nurse, patient_id)


@pytest.fixture
async def solo(api: Api) -> Team:
    """A lighter team for tests that never need the nurse: the nurse is the peer themself."""
    org = await api.organization()
    peer = await api.person("peer_support", org)
    patient_id = await api.patient(peer)
    return Team(org, peer, peer, patient_id)


def emulator(api: Api) -> EmulatorState:
    return api.app[emulator_key].state


def assert_camel_case(body: dict[str, Any], required: set[str]) -> None:
    """Every field the schema promises is there, and every field is named in camelCase."""
    assert required <= set(body), required - set(body)
    assert all(CAMEL_CASE.fullmatch(key) for key in body), sorted(body)


def request_id() -> dict[str, str]:
    return {"X-Request-ID": uuid.uuid4().hex}


async def create(api: Api, who: Person, body: dict[str, Any], **kw: Any) -> tuple[int, Any]:
    return await api.call("POST", "/api/conversations", who, json=body, **kw)


async def conversation(api: Api, team: Team, **extra: Any) -> dict[str, Any]:
    body = {"title": "Care coordination", "patientId": team.patient_id, "memberIds": [team.nurse.id], **extra}
    status, created = await create(api, team.peer, body)
    assert status == 201, created
    return created  # type: ignore[no-any-return]


async def settled(api: Api, who: Person, conversation_id: int) -> dict[str, Any]:
    """The conversation once the relay has finished with its chat channel (ready or failed)."""

    async def probe() -> dict[str, Any] | None:
        status, body = await api.call("GET", f"/api/conversations/{conversation_id}", who)
        assert status == 200, body
        return body if body["channelState"] != "pending" else None

    return await eventually(probe, "the channel to leave the pending state")


async def ready(api: Api, who: Person, conversation_id: int) -> dict[str, Any]:
    """The conversation once the relay has created its chat channel."""
    detail = await settled(api, who, conversation_id)
    assert detail["channelState"] == "ready", detail
    return detail


async def sent(api: Api, who: Person, conversation_id: int, message_id: int) -> dict[str, Any]:
    """The message once the relay has delivered it."""

    async def probe() -> dict[str, Any] | None:
        status, body = await api.call("GET", f"/api/conversations/{conversation_id}", who)
        assert status == 200, body
        found = [m for m in body["messages"] if m["id"] == message_id]
        assert len(found) == 1, body["messages"]
        assert found[0]["state"] != "failed", found
        return found[0] if found[0]["state"] == "sent" else None

    return await eventually(probe, f"message {message_id} sent")


async def send(api: Api, who: Person, conversation_id: int, text: str) -> tuple[int, Any]:
    body = {"conversationId": conversation_id, "message": text}
    return await api.call("POST", "/api/conversations/send-message", who, json=body)


async def chat_ids(db: asyncpg.Connection, user_ids: list[int]) -> set[str]:
    rows = await db.fetch("SELECT chat_user_id FROM users WHERE id = ANY($1::int[])", user_ids)
    assert len(rows) == len(user_ids)
    return {r["chat_user_id"] for r in rows}


async def outbox_high_water(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT coalesce(max(id), 0) FROM outbox"))


async def decisions(db: asyncpg.Connection, rid: str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT workflow, decision, outcome, reason, resource_id, patient_id, actor_id, details"
        " FROM audit_events WHERE request_id = $1 AND event = 'decision' ORDER BY id",
        rid,
    )
    return [{**dict(r), "details": json.loads(r["details"])} for r in rows]


# --- creating ------------------------------------------------------------------------------------


async def test_creating_a_conversation_answers_201_with_the_conversation_in_camel_case(
    api: Api, team: Team
) -> None:
    status, body = await create(
        api,
        team.peer,
        {"title": "  Weekly check-in  ", "patientId": team.patient_id, "memberIds": [team.nurse.id]},
    )
    assert status == 201, body
    assert_camel_case(body, CONVERSATION_KEYS)
    assert body["title"] == "Weekly check-in"
    assert body["patientId"] == team.patient_id
    assert body["memberIds"] == sorted([team.peer.id, team.nurse.id])
    assert body["externalMembers"] == []
    assert body["createdBy"] == team.peer.id
    assert body["channelState"] == "pending"
    assert body["channelUrl"].startswith("caremsg_")


async def test_the_relay_creates_the_channel_with_exactly_the_members_and_the_conversation_becomes_ready(
    api: Api, team: Team, db: asyncpg.Connection
) -> None:
    created = await conversation(api, team)
    detail = await ready(api, team.peer, created["id"])

    assert detail["channelUrl"] == created["channelUrl"]
    channel = emulator(api).channels[created["channelUrl"]]
    expected = await chat_ids(db, [team.peer.id, team.nurse.id])
    assert sorted(channel.members) == sorted(expected)
    assert channel.name == "Care coordination"
    assert json.loads(channel.data) == {"conversation_id": created["id"]}
    assert emulator(api).messages(created["channelUrl"]) == []


async def test_a_sent_message_is_accepted_then_delivered_to_the_channel_exactly_once(
    api: Api, team: Team, db: asyncpg.Connection
) -> None:
    created = await conversation(api, team)
    await ready(api, team.peer, created["id"])

    status, accepted = await send(api, team.peer, created["id"], "Checking in after discharge.")
    assert status == 202, accepted
    assert_camel_case(accepted, MESSAGE_KEYS)
    assert accepted["conversationId"] == created["id"]
    assert accepted["senderId"] == team.peer.id
    assert accepted["message"] == "Checking in after discharge."
    assert accepted["state"] == "queued"

    delivered = await sent(api, team.peer, created["id"], accepted["id"])
    assert delivered["message"] == "Checking in after discharge."
    in_chat = emulator(api).messages(created["channelUrl"])
    assert len(in_chat) == 1
    assert in_chat[0].message == "Checking in after discharge."
    assert in_chat[0].sender_id == (await chat_ids(db, [team.peer.id])).pop()
    assert in_chat[0].dedup_id == f"caremsg_msg_{accepted['id']}"
    row = await db.fetchrow("SELECT state, chat_message_id FROM messages WHERE id = $1", accepted["id"])
    assert row["state"] == "sent"
    assert row["chat_message_id"] == in_chat[0].message_id


async def test_a_message_sent_before_the_channel_is_ready_is_delivered_once_it_is(
    api: Api, team: Team
) -> None:
    created = await conversation(api, team)
    status, accepted = await send(api, team.nurse, created["id"], "First!")
    assert status == 202, accepted

    await sent(api, team.nurse, created["id"], accepted["id"])
    in_chat = emulator(api).messages(created["channelUrl"])
    assert [m.message for m in in_chat] == ["First!"]


async def test_a_message_of_exactly_4000_characters_is_accepted(api: Api, team: Team) -> None:
    created = await conversation(api, team)
    status, accepted = await send(api, team.peer, created["id"], "x" * 4000)
    assert status == 202, accepted
    assert len(accepted["message"]) == 4000


async def test_listing_the_creator_or_a_member_twice_makes_each_a_member_once(api: Api, team: Team) -> None:
    created = await conversation(api, team, memberIds=[team.nurse.id, team.peer.id, team.nurse.id])
    assert created["memberIds"] == sorted([team.peer.id, team.nurse.id])


# --- reading -------------------------------------------------------------------------------------


async def test_a_member_reads_the_conversation_with_its_messages_in_camel_case(api: Api, team: Team) -> None:
    created = await conversation(api, team)
    status, accepted = await send(api, team.peer, created["id"], "Hello team")
    assert status == 202, accepted

    status, body = await api.call("GET", f"/api/conversations/{created['id']}", team.nurse)
    assert status == 200, body
    assert_camel_case(body, CONVERSATION_KEYS | {"messages"})
    assert body["id"] == created["id"]
    assert body["memberIds"] == created["memberIds"]
    assert len(body["messages"]) == 1
    assert_camel_case(body["messages"][0], MESSAGE_KEYS)
    assert body["messages"][0]["id"] == accepted["id"]


async def test_listing_conversations_shows_only_those_the_person_is_a_member_of(api: Api, team: Team) -> None:
    outsider = await api.person("care_team_member", team.organization_id)
    created = await conversation(api, team)

    status, listed = await api.call("GET", "/api/conversations", team.nurse)
    assert status == 200, listed
    assert set(listed) == {"items", "nextCursor"}
    assert [c["id"] for c in listed["items"]] == [created["id"]]
    assert_camel_case(listed["items"][0], CONVERSATION_KEYS)

    status, theirs = await api.call("GET", "/api/conversations", outsider)
    assert status == 200, theirs
    assert theirs == {"items": [], "nextCursor": None}


async def test_reading_a_conversation_that_does_not_exist_is_404(api: Api, solo: Team) -> None:
    team = solo
    status, body = await api.call("GET", f"/api/conversations/{2**31 - 1}", team.peer)
    assert status == 404, body
    assert body["code"] == "not_found"


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"title": None}, "title", id="missing title"),
        pytest.param({"title": "   "}, "title", id="blank title"),
        pytest.param({"title": "t" * 201}, "title", id="title over 200 characters"),
        pytest.param({"patientId": "1"}, "patientId", id="patientId as a string"),
        pytest.param({"patientId": None}, "patientId", id="missing patientId"),
        pytest.param({"memberIds": "2,3"}, "memberIds", id="memberIds not a list"),
        pytest.param({"memberIds": ["2"]}, "memberIds[0]", id="memberIds of strings"),
        pytest.param({"memberIds": [0]}, "memberIds[0]", id="memberIds with id 0"),
        pytest.param(
            {"externalMembers": [{"phoneNumber": "555-0143", "name": "Dr. External"}]},
            "externalMembers[0].phoneNumber",
            id="external phone not E.164",
        ),
        pytest.param(
            {"externalMembers": [{"phoneNumber": EXTERNAL_PHONE}]},
            "externalMembers[0].name",
            id="external member without a name",
        ),
        pytest.param({"member_ids": []}, "member_ids", id="snake_case field"),
    ],
)
async def test_an_invalid_conversation_is_422_naming_the_field_and_nothing_is_created(
    api: Api, solo: Team, db: asyncpg.Connection, change: dict[str, Any], field: str
) -> None:
    team = solo
    body: dict[str, Any] = {"title": "Care coordination", "patientId": team.patient_id, "memberIds": []}
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}

    status, problem = await create(api, team.peer, body)

    assert status == 422, problem
    assert problem["code"] == "validation_error"
    assert field in [e["field"] for e in problem["errors"]]
    assert await db.fetchval("SELECT count(*) FROM conversations WHERE patient_id = $1", team.patient_id) == 0


async def test_a_bad_external_phone_number_is_not_echoed_in_the_422(api: Api, solo: Team) -> None:
    team = solo
    body = {
        "title": "Care coordination",
        "patientId": team.patient_id,
        "externalMembers": [{"phoneNumber": "+999123456789", "name": "Dr. External"}],
    }
    status, problem = await create(api, team.peer, body)
    assert status == 422, problem
    assert [e["field"] for e in problem["errors"]] == ["externalMembers[0].phoneNumber"]
    assert "999123456789" not in json.dumps(problem)


async def test_the_same_external_phone_number_listed_twice_is_422(
    api: Api, team: Team, db: asyncpg.Connection
) -> None:
    officer = await api.person("compliance_officer", team.organization_id)
    await api.consent(
        officer, team.patient_id, externalParty={"phoneNumber": EXTERNAL_PHONE, "name": "Dr. A"}
    )
    body = {
        "title": "Care coordination",
        "patientId": team.patient_id,
        "externalMembers": [
            {"phoneNumber": EXTERNAL_PHONE, "name": "Dr. A"},
            {"phoneNumber": EXTERNAL_PHONE, "name": "Dr. A again"},
        ],
    }
    status, problem = await create(api, team.peer, body)
    assert status == 422, problem
    assert problem["errors"] == [
        {"field": "externalMembers[1].phoneNumber", "message": "Listed twice.", "type": "duplicate"}
    ]
    assert await db.fetchval("SELECT count(*) FROM conversations WHERE patient_id = $1", team.patient_id) == 0


async def test_a_nonexistent_member_id_is_422_naming_its_position(
    api: Api, team: Team, db: asyncpg.Connection
) -> None:
    body = {
        "title": "Care coordination",
        "patientId": team.patient_id,
        "memberIds": [team.nurse.id, 2**31 - 1],
    }
    status, problem = await create(api, team.peer, body)
    assert status == 422, problem
    assert problem["errors"] == [
        {"field": "memberIds[1]", "message": "No such active user.", "type": "not_found"}
    ]
    assert await db.fetchval("SELECT count(*) FROM conversations WHERE patient_id = $1", team.patient_id) == 0


async def test_a_conversation_about_a_patient_that_does_not_exist_is_404(api: Api, solo: Team) -> None:
    team = solo
    status, problem = await create(api, team.peer, {"title": "Care coordination", "patientId": 2**31 - 1})
    assert status == 404, problem
    assert problem["code"] == "not_found"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        pytest.param("x" * 4001, "message", id="over 4000 characters"),
        pytest.param("", "message", id="empty"),
        pytest.param(" \n\t ", "message", id="only whitespace"),
        pytest.param(None, "message", id="missing"),
    ],
)
async def test_an_invalid_message_is_422_and_nothing_is_queued(
    api: Api, team: Team, db: asyncpg.Connection, text: str | None, field: str
) -> None:
    created = await conversation(api, team)
    body: dict[str, Any] = {"conversationId": created["id"]}
    if text is not None:
        body["message"] = text

    status, problem = await api.call("POST", "/api/conversations/send-message", team.peer, json=body)

    assert status == 422, problem
    assert [e["field"] for e in problem["errors"]] == [field]
    assert await db.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1", created["id"]) == 0


async def test_a_message_with_conversation_id_as_a_string_is_422(api: Api, team: Team) -> None:
    created = await conversation(api, team)
    body = {"conversationId": str(created["id"]), "message": "hi"}
    status, problem = await api.call("POST", "/api/conversations/send-message", team.peer, json=body)
    assert status == 422, problem
    assert [e["field"] for e in problem["errors"]] == ["conversationId"]


# --- authentication and roles --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("POST", "/api/conversations", {"title": "t", "patientId": 1}, id="create"),
        pytest.param("GET", "/api/conversations", None, id="list"),
        pytest.param("GET", "/api/conversations/1", None, id="read"),
        pytest.param(
            "POST", "/api/conversations/send-message", {"conversationId": 1, "message": "hi"}, id="send"
        ),
    ],
)
async def test_every_conversation_endpoint_needs_a_bearer_token(
    api: Api, method: str, path: str, body: Any
) -> None:
    resp = await api.client.request(method, path, json=body)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await resp.json(content_type=None))["code"] == "unauthenticated"

    status, problem = await api.call(method, path, json=body, headers={"Authorization": "Bearer not-a-jwt"})
    assert status == 401, problem


@pytest.mark.parametrize("role", ["admin", "auditor"])
@pytest.mark.parametrize("action", ["create", "list", "read", "send"])
async def test_admins_and_auditors_may_not_use_conversations(
    api: Api, team: Team, db: asyncpg.Connection, role: str, action: str
) -> None:
    created = await conversation(api, team)
    other = await api.person(role, team.organization_id)
    requests: dict[str, tuple[str, str, Any]] = {
        "create": ("POST", "/api/conversations", {"title": "t", "patientId": team.patient_id}),
        "list": ("GET", "/api/conversations", None),
        "read": ("GET", f"/api/conversations/{created['id']}", None),
        "send": (
            "POST",
            "/api/conversations/send-message",
            {"conversationId": created["id"], "message": "hi"},
        ),
    }
    method, path, body = requests[action]

    status, problem = await api.call(method, path, other, json=body)

    assert status == 403, problem
    assert problem["code"] == "forbidden"
    assert problem["reason"] == "role_not_permitted"
    assert await db.fetchval("SELECT count(*) FROM conversations WHERE patient_id = $1", team.patient_id) == 1
    assert await db.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1", created["id"]) == 0


async def test_a_colleague_who_is_not_a_member_may_neither_read_nor_send(
    api: Api, team: Team, db: asyncpg.Connection
) -> None:
    created = await conversation(api, team)
    colleague = await api.person("care_team_member", team.organization_id)

    status, problem = await api.call("GET", f"/api/conversations/{created['id']}", colleague)
    assert status == 403, problem
    assert problem["reason"] == "not_conversation_member"

    status, problem = await send(api, colleague, created["id"], "Let me in")
    assert status == 403, problem
    assert problem["reason"] == "not_conversation_member"
    assert await db.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1", created["id"]) == 0


async def test_a_staff_member_not_on_the_care_team_may_not_start_a_conversation(
    api: Api, team: Team, db: asyncpg.Connection
) -> None:
    status, problem = await create(api, team.nurse, {"title": "t", "patientId": team.patient_id})
    assert status == 403, problem
    assert problem["reason"] == "not_on_care_team"
    assert problem["field"] == "patientId"
    assert await db.fetchval("SELECT count(*) FROM conversations WHERE patient_id = $1", team.patient_id) == 0


# --- every member is checked -----------------------------------------------------------------------


async def test_a_member_from_an_unrelated_organization_is_answered_as_no_such_user_and_nothing_is_created(
    api: Api, team: Team, db: asyncpg.Connection
) -> None:
    elsewhere = await api.person("care_team_member", await api.organization())
    before = await outbox_high_water(db)
    headers = request_id()

    status, problem = await create(
        api,
        team.peer,
        {"title": "t", "patientId": team.patient_id, "memberIds": [team.nurse.id, elsewhere.id]},
        headers=headers,
    )
    _, unknown = await create(
        api, team.peer, {"title": "t", "patientId": team.patient_id, "memberIds": [team.nurse.id, 2**31 - 1]}
    )

    # Neither the person's existence nor their role shows: the answer for an id nobody has.
    assert status == 422, problem
    assert (
        problem["errors"]
        == unknown["errors"]
        == [{"field": "memberIds[1]", "message": "No such active user.", "type": "not_found"}]
    )
    assert {k: v for k, v in problem.items() if k != "requestId"} == {
        k: v for k, v in unknown.items() if k != "requestId"
    }
    assert await db.fetchval("SELECT count(*) FROM conversations WHERE patient_id = $1", team.patient_id) == 0
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE id > $1", before) == 0
    assert (
        await db.fetchval("SELECT count(*) FROM conversation_members WHERE user_id = $1", elsewhere.id) == 0
    )
    denied = [d for d in await decisions(db, headers["X-Request-ID"]) if d["decision"] == "deny"]
    assert len(denied) == 1
    assert denied[0]["workflow"] == "conversation.join"
    assert denied[0]["outcome"] == "denied"
    assert denied[0]["reason"] == "no_active_consent"
    assert denied[0]["patient_id"] == team.patient_id
    assert denied[0]["details"]["subject_user_id"] == elsewhere.id


async def test_a_member_from_another_organization_joins_once_a_consent_discloses_the_patient_to_it(
    api: Api, team: Team
) -> None:
    other_org = await api.organization()
    elsewhere = await api.person("care_team_member", other_org)
    officer = await api.person("compliance_officer", team.organization_id)
    await api.consent(officer, team.patient_id, organizationId=other_org)

    created = await conversation(api, team, memberIds=[elsewhere.id])

    assert created["memberIds"] == sorted([team.peer.id, elsewhere.id])
    status, body = await api.call("GET", f"/api/conversations/{created['id']}", elsewhere)
    assert status == 200, body


async def test_an_external_participant_without_consent_is_403_without_their_number_and_nothing_is_created(
    api: Api, team: Team, db: asyncpg.Connection
) -> None:
    before = await outbox_high_water(db)
    resp = await api.client.post(
        "/api/conversations",
        json={
            "title": "t",
            "patientId": team.patient_id,
            "memberIds": [team.nurse.id],
            "externalMembers": [{"phoneNumber": EXTERNAL_PHONE, "name": "Dr. External"}],
        },
        headers=team.peer.auth,
    )
    raw = await resp.text()
    problem = json.loads(raw)

    assert resp.status == 403, raw
    assert resp.content_type == "application/problem+json"
    assert problem["field"] == "externalMembers[0]"
    assert problem["reason"] == "no_external_consent"
    assert EXTERNAL_PHONE.lstrip("+") not in raw
    assert "Dr. External" not in raw
    assert await db.fetchval("SELECT count(*) FROM conversations WHERE patient_id = $1", team.patient_id) == 0
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE id > $1", before) == 0


async def test_an_external_consent_for_another_number_does_not_admit_a_participant(
    api: Api, team: Team
) -> None:
    officer = await api.person("compliance_officer", team.organization_id)
    await api.consent(
        officer, team.patient_id, externalParty={"phoneNumber": "+12025550199", "name": "Dr. B"}
    )
    status, problem = await create(
        api,
        team.peer,
        {
            "title": "t",
            "patientId": team.patient_id,
            "externalMembers": [{"phoneNumber": EXTERNAL_PHONE, "name": "Dr. External"}],
        },
    )
    assert status == 403, problem
    assert problem["field"] == "externalMembers[0]"


async def test_an_external_participant_with_consent_joins_the_conversation_and_the_channel(
    api: Api, team: Team, db: asyncpg.Connection
) -> None:
    officer = await api.person("compliance_officer", team.organization_id)
    consent = await api.consent(
        officer, team.patient_id, externalParty={"phoneNumber": EXTERNAL_PHONE, "name": "Dr. External"}
    )

    created = await conversation(
        api, team, externalMembers=[{"phoneNumber": EXTERNAL_PHONE, "name": "Dr. External"}]
    )

    assert [{k: v for k, v in e.items() if k != "id"} for e in created["externalMembers"]] == [
        {"phoneNumber": EXTERNAL_PHONE, "name": "Dr. External", "removedAt": None}
    ]
    participant = await db.fetchrow(
        "SELECT chat_user_id, consent_id FROM external_participants WHERE conversation_id = $1", created["id"]
    )
    assert participant["consent_id"] == consent["id"]
    await ready(api, team.peer, created["id"])
    state = emulator(api)
    channel = state.channels[created["channelUrl"]]
    expected = await chat_ids(db, [team.peer.id, team.nurse.id]) | {participant["chat_user_id"]}
    assert sorted(channel.members) == sorted(expected)
    assert state.users[participant["chat_user_id"]].phone_number == EXTERNAL_PHONE
    assert state.users[participant["chat_user_id"]].nickname == "External participant"


# --- delivery survives an outage ------------------------------------------------------------------


async def test_a_message_sent_while_the_chat_service_fails_is_delivered_once_after_it_recovers(
    api: Api, team: Team, db: asyncpg.Connection
) -> None:
    created = await conversation(api, team)
    await ready(api, team.peer, created["id"])
    state = emulator(api)
    path = f"/v3/group_channels/{created['channelUrl']}/messages"
    state.faults.fail_for(60)

    status, accepted = await send(api, team.peer, created["id"], "Are you there?")
    assert status == 202, accepted

    async def failed_attempt() -> int:
        return len(state.requests("POST", path))

    await eventually(failed_attempt, "a failed delivery attempt")
    assert state.messages(created["channelUrl"]) == []
    row = await db.fetchrow("SELECT state FROM messages WHERE id = $1", accepted["id"])
    assert row["state"] == "queued"
    assert await db.fetchval("SELECT status FROM outbox WHERE message_id = $1", accepted["id"]) == "pending"

    state.faults.clear()
    await sent(api, team.peer, created["id"], accepted["id"])
    assert [m.message for m in state.messages(created["channelUrl"])] == ["Are you there?"]
    assert await db.fetchval("SELECT status FROM outbox WHERE message_id = $1", accepted["id"]) == "done"


async def test_a_message_whose_reply_was_lost_is_retried_without_posting_it_twice(
    api: Api, team: Team
) -> None:
    created = await conversation(api, team)
    await ready(api, team.peer, created["id"])
    state = emulator(api)
    path = f"/v3/group_channels/{created['channelUrl']}/messages"
    state.faults.drop_next(1)

    status, accepted = await send(api, team.peer, created["id"], "Did this arrive?")
    assert status == 202, accepted

    await sent(api, team.peer, created["id"], accepted["id"])
    # Not posted again: the relay read the channel, found the post there and took it as delivered.
    assert len(state.requests("POST", path)) == 1
    assert len(state.requests("GET", path)) >= 1
    assert [m.message for m in state.messages(created["channelUrl"])] == ["Did this arrive?"]


async def test_a_conversation_created_while_the_chat_service_fails_becomes_ready_after_it_recovers(
    api: Api, team: Team, db: asyncpg.Connection
) -> None:
    state = emulator(api)
    state.faults.fail_for(60)
    created = await conversation(api, team)

    async def attempted() -> int:
        return int(await db.fetchval("SELECT attempts FROM outbox WHERE conversation_id = $1", created["id"]))

    await eventually(attempted, "a failed channel creation attempt")
    assert created["channelUrl"] not in state.channels

    state.faults.clear()
    await ready(api, team.peer, created["id"])
    assert sorted(state.channels[created["channelUrl"]].members) == sorted(
        await chat_ids(db, [team.peer.id, team.nurse.id])
    )


# --- what the API accepts, the chat service must be able to hold -------------------------------------
# sendbird-api.md: a channel name is at most 191 characters, a nickname at most 80, and a channel
# holds at most 100 members (100 user_ids per call). A request the API answers 201 must not leave a
# channel that can never be created. The limits are read from the API's own OpenAPI document.


async def max_length(api: Api, schema: str, field: str) -> int:
    status, document = await api.call("GET", "/api/openapi.json")
    assert status == 200
    return int(document["components"]["schemas"][schema]["properties"][field]["maxLength"])


async def test_a_conversation_with_the_longest_title_the_api_accepts_gets_its_chat_channel(
    api: Api, team: Team
) -> None:
    title = "T" * await max_length(api, "ConversationCreate", "title")
    status, created = await create(api, team.peer, {"title": title, "patientId": team.patient_id})
    assert status == 201, created

    detail = await settled(api, team.peer, created["id"])

    assert detail["channelState"] == "ready"


async def test_a_member_with_the_longest_first_name_the_api_accepts_gets_into_the_chat_channel(
    api: Api, team: Team
) -> None:
    first_name = "A" * await max_length(api, "CreateUserRequest", "firstName")
    long_named = await api.person("care_team_member", team.organization_id, first_name=first_name)
    created = await conversation(api, team, memberIds=[long_named.id])

    detail = await settled(api, team.peer, created["id"])

    assert detail["channelState"] == "ready"


async def test_a_conversation_with_more_members_than_a_chat_channel_holds_is_refused(
    api: Api, team: Team, db: asyncpg.Connection
) -> None:
    # 99 staff (the schema's maximum) + the creator + one external participant = 101 members.
    staff = await db.fetch(
        "INSERT INTO users (organization_id, email, password_hash, first_name, last_name, role, chat_user_id)"
        " SELECT $1, 'bulk.' || $2 || '.' || n || '@example.org', 'not-a-hash', 'Bulk', 'Member',"
        " 'care_team_member', 'bulk_' || $2 || '_' || n FROM generate_series(1, 99) AS n RETURNING id",
        team.organization_id,
        uuid.uuid4().hex[:12],
    )
    officer = await api.person("compliance_officer", team.organization_id)
    await api.consent(
        officer, team.patient_id, externalParty={"phoneNumber": EXTERNAL_PHONE, "name": "Dr. X"}
    )
    body = {
        "title": "Everyone",
        "patientId": team.patient_id,
        "memberIds": [r["id"] for r in staff],
        "externalMembers": [{"phoneNumber": EXTERNAL_PHONE, "name": "Dr. X"}],
    }

    status, problem = await create(api, team.peer, body)

    assert status == 422, problem
    assert await db.fetchval("SELECT count(*) FROM conversations WHERE patient_id = $1", team.patient_id) == 0


# --- audit ---------------------------------------------------------------------------------------


async def test_creating_a_conversation_audits_the_creation_and_each_members_join(
    api: Api, team: Team, db: asyncpg.Connection
) -> None:
    colleague = await api.person("peer_support", team.organization_id)
    headers = request_id()
    status, created = await create(
        api,
        team.peer,
        {"title": "t", "patientId": team.patient_id, "memberIds": [team.nurse.id, colleague.id]},
        headers=headers,
    )
    assert status == 201, created

    rows = await decisions(db, headers["X-Request-ID"])
    assert [(r["workflow"], r["decision"], r["outcome"]) for r in rows] == [
        ("conversation.create", "allow", "success"),
        ("conversation.join", "allow", "success"),
        ("conversation.join", "allow", "success"),
    ]
    assert all(r["actor_id"] == team.peer.id and r["patient_id"] == team.patient_id for r in rows)
    assert [r["details"]["subject_user_id"] for r in rows[1:]] == [team.nurse.id, colleague.id]
    assert rows[0]["resource_id"] == str(created["id"])


async def test_a_refused_conversation_leaves_the_deny_row_and_marks_the_creation_as_denied(
    api: Api, team: Team, db: asyncpg.Connection
) -> None:
    headers = request_id()
    status, problem = await create(
        api,
        team.peer,
        {
            "title": "t",
            "patientId": team.patient_id,
            "externalMembers": [{"phoneNumber": EXTERNAL_PHONE, "name": "Dr. External"}],
        },
        headers=headers,
    )
    assert status == 403, problem

    rows = await decisions(db, headers["X-Request-ID"])
    assert [(r["workflow"], r["decision"], r["outcome"], r["reason"]) for r in rows] == [
        ("conversation.create", "allow", "denied", "allowed"),
        ("conversation.join", "deny", "denied", "no_external_consent"),
    ]
    assert rows[0]["details"]["ended_by"] == "no_external_consent"
    # The facts it was decided on (none held) are recorded, so `policy diff` can replay the denial.
    assert rows[1]["details"] == {
        "external_index": 0,
        "consent_id": None,
        "facts": "",
        "subject_role": "external",
    }
    assert EXTERNAL_PHONE not in json.dumps(rows, default=str)
