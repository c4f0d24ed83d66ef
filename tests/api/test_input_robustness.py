"""Hostile input answers a 4xx problem+json naming the field, never a 500 or a partial write.

The inputs an attack from outside found: JSON nested a thousand deep, NUL and control characters in
stored strings, non-ASCII digits in path ids, bidirectional and zero-width characters in names,
numbers that cannot be texted, a PostgreSQL that refuses connections while it shuts down. The
clinical-record endpoints get them from one table (test_hostile_inputs_clinical_records.py), every
endpoint the generic ones (test_hostile_inputs_everywhere.py)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from handlers.middleware import request_context
from integrations.db.base import is_unavailable
from integrations.twilio import sign_request
from tests.api.conftest import Api, Person
from tests.api.messaging_support import PHONE, care_team, emulator, send, twilio
from tests.support.api import PROBLEM_JSON, field_names


async def staff(api: Api) -> tuple[Person, Person]:
    org = await api.organization()
    return await api.person("peer_support", org), await api.person("compliance_officer", org)


# --- JSON nesting -----------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [17, 1_000, 20_000])
async def test_deeply_nested_json_on_login_is_a_400_naming_the_body(api: Api, depth: int) -> None:
    raw = '{"email": "a@example.org", "password": ' + "[" * depth + "]" * depth + "}"

    status, headers, body = await api.send(
        "POST", "/api/auth/login", data=raw, headers={"Content-Type": "application/json"}
    )

    assert status == 400, body
    assert headers["Content-Type"].startswith(PROBLEM_JSON)
    assert body["code"] == "malformed_request"
    assert field_names(body) == ["body"]
    assert body["errors"][0]["type"] == "json_too_deep"


async def test_json_nested_within_the_limit_is_validated_as_usual(api: Api) -> None:
    raw = '{"email": "a@example.org", "password": ' + "[" * 15 + "]" * 15 + "}"

    status, body = await api.call(
        "POST", "/api/auth/login", data=raw, headers={"Content-Type": "application/json"}
    )

    assert status == 422, body
    assert field_names(body) == ["password"]


# --- control characters -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["\u0000", "\u0007", "\u001b[31m", "\u007f", "\u0085"])
async def test_control_characters_in_a_patient_name_are_refused_naming_the_field(
    api: Api, db: asyncpg.Connection, bad: str
) -> None:
    peer, _ = await staff(api)
    before = await db.fetchval("SELECT count(*) FROM patients")

    patient = {"firstName": f"Jo{bad}hn", "lastName": "Smith", "riskLevel": "low"}

    status, body = await api.call("POST", "/api/patients", peer, json=patient)

    assert status == 422, body
    assert field_names(body) == ["firstName"]
    assert body["errors"][0]["type"] == "control_character"
    assert await db.fetchval("SELECT count(*) FROM patients") == before


async def test_nul_in_login_and_registration_is_a_422_not_a_500(api: Api) -> None:
    status, body = await api.call(
        "POST", "/api/auth/login", json={"email": "a\u0000@example.org", "password": "x"}
    )
    assert status == 422, body
    assert field_names(body) == ["email"]

    register = {
        "email": "nul@example.org",
        "password": "long enough\u0000",
        "firstName": "A",
        "lastName": "B",
    }
    status, body = await api.call("POST", "/api/auth/register", json=register)
    assert status == 422, body
    assert field_names(body) == ["password"]


async def test_nul_in_a_message_is_a_422_not_a_503(api: Api, db: asyncpg.Connection) -> None:
    team = await care_team(api)
    before = await db.fetchval("SELECT count(*) FROM messages")

    status, body = await send(api, team.peer, team.conversation_id, "hello\u0000world")

    assert status == 422, body
    assert field_names(body) == ["message"]
    assert await db.fetchval("SELECT count(*) FROM messages") == before


async def test_line_breaks_and_tabs_stay_allowed_in_a_message(api: Api) -> None:
    team = await care_team(api)

    status, body = await send(api, team.peer, team.conversation_id, "line one\nline two\r\n\tindented")

    assert status == 202, body


async def test_nul_in_a_nested_external_party_name_names_the_nested_field(api: Api) -> None:
    peer, officer = await staff(api)
    patient_id = await api.patient(peer)
    consent = {
        "patientId": patient_id,
        "purpose": "treatment",
        "externalParty": {"phoneNumber": PHONE, "name": "Dr.\u0000 External"},
    }

    status, body = await api.call("POST", "/api/consents", officer, json=consent)

    assert status == 422, body
    assert field_names(body) == ["externalParty.name"]


async def test_nul_in_a_query_string_is_a_422(api: Api) -> None:
    _, officer = await staff(api)

    status, body = await api.call("GET", "/api/audit-events?email=a%00%40example.org", officer)

    assert status == 422, body
    assert field_names(body) == ["email"]


@pytest.mark.parametrize(
    ("path", "event", "field"),
    [
        ("/api/webhooks/sendbird", {"category": "group_channel:message_send\u0000"}, "category"),
    ],
)
async def test_nul_in_a_signed_webhooks_stored_keys_is_a_400_naming_the_key(
    api: Api, path: str, event: dict[str, str], field: str
) -> None:
    body = json.dumps(event).encode()
    signature = hmac.new(emulator(api).api_token.encode(), body, hashlib.sha256).hexdigest()

    status, body_out = await api.call(
        "POST",
        path,
        data=body,
        headers={"Content-Type": "application/json", "x-sendbird-signature": signature},
    )

    assert status == 400, body_out
    assert field_names(body_out) == [field]


@pytest.mark.parametrize("field", ["MessageSid", "From"])
async def test_nul_in_a_signed_twilio_webhooks_keys_is_a_400_naming_the_key(api: Api, field: str) -> None:
    state = twilio(api).state
    url = str(api.client.make_url("/api/webhooks/twilio"))
    form = {
        "MessageSid": "SM" + "2" * 32,
        "AccountSid": state.account_sid,
        "From": "+12025550143",
        "Body": "hi",
    }
    form[field] = form[field][:3] + "\u0000" + form[field][3:]

    reply = await api.client.post(
        "/api/webhooks/twilio",
        data=form,
        headers={"X-Twilio-Signature": sign_request(url, form, state.auth_token)},
    )

    assert reply.status == 400, await reply.text()
    assert field_names(await reply.json()) == [field]


# --- names: bidirectional and zero-width characters -------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Smith\u202ehtiws",  # RIGHT-TO-LEFT OVERRIDE
        "\u2066Smith\u2069",  # LEFT-TO-RIGHT ISOLATE ... POP DIRECTIONAL ISOLATE
        "Sm\u200bith",  # ZERO WIDTH SPACE
        "Smith\ufeff",  # ZERO WIDTH NO-BREAK SPACE (BOM)
        "Smi\u200dth",  # ZERO WIDTH JOINER
        "Smith\nJones",
    ],
)
async def test_invisible_characters_in_a_name_are_refused_naming_the_field(api: Api, name: str) -> None:
    peer, _ = await staff(api)

    status, body = await api.call(
        "POST", "/api/patients", peer, json={"firstName": "John", "lastName": name, "riskLevel": "low"}
    )

    assert status == 422, body
    assert field_names(body) == ["lastName"]


async def test_a_bidirectional_override_in_an_email_is_refused_at_registration(api: Api) -> None:
    register = {
        "email": "evil\u202egro.elpmaxe@example.org",
        "password": "long enough password",
        "firstName": "A",
        "lastName": "B",
    }

    status, body = await api.call("POST", "/api/auth/register", json=register)

    assert status == 422, body
    assert field_names(body) == ["email"]
    assert body["errors"][0]["type"] == "invisible_character"


async def test_names_in_other_scripts_are_accepted(api: Api) -> None:
    peer, _ = await staff(api)

    patient = {"firstName": "محمد", "lastName": "Ñúñez-Łukasz", "riskLevel": "low"}

    status, body = await api.call("POST", "/api/patients", peer, json=patient)

    assert status == 201, body
    assert body["firstName"] == "محمد"


# --- path ids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["%C2%B9", "%D9%A1", "%EF%BC%91", "1%C2%B9", "-1", "0", "99999999999"])
async def test_a_path_id_that_is_not_ascii_digits_is_a_422_naming_it(api: Api, raw: str) -> None:
    peer, _ = await staff(api)

    status, headers, body = await api.send("GET", f"/api/patients/{raw}", peer)

    assert status == 422, body
    assert headers["Content-Type"].startswith(PROBLEM_JSON)
    assert field_names(body) == ["id"]


async def test_a_non_ascii_digit_never_resolves_to_the_patient_of_that_number(api: Api) -> None:
    peer, _ = await staff(api)
    patient_id = await api.patient(peer)
    lookalike = "".join(chr(0x0660 + int(d)) for d in str(patient_id))  # ARABIC-INDIC digits, same value
    assert int(lookalike) == patient_id  # what str.isdigit() and int() made of it

    status, body = await api.call("GET", f"/api/patients/{lookalike}", peer)

    assert status == 422, body
    assert field_names(body) == ["id"]


# --- phone numbers ----------------------------------------------------------------------------------


async def test_a_number_with_a_country_code_but_no_valid_plan_is_refused_for_a_consent(api: Api) -> None:
    peer, officer = await staff(api)
    patient_id = await api.patient(peer)
    consent = {
        "patientId": patient_id,
        "purpose": "treatment",
        "externalParty": {"phoneNumber": "+1234567890", "name": "Dr. External"},
    }

    status, body = await api.call("POST", "/api/consents", officer, json=consent)

    assert status == 422, body
    assert field_names(body) == ["externalParty.phoneNumber"]


async def test_a_number_that_cannot_be_texted_is_refused_for_a_conversation(api: Api) -> None:
    peer, _ = await staff(api)
    patient_id = await api.patient(peer)
    conversation = {
        "title": "t",
        "patientId": patient_id,
        "externalMembers": [{"phoneNumber": "+1234567890", "name": "Dr. External"}],
    }

    status, body = await api.call("POST", "/api/conversations", peer, json=conversation)

    assert status == 422, body
    assert field_names(body) == ["externalMembers[0].phoneNumber"]


async def test_the_readme_example_number_is_accepted(api: Api) -> None:
    peer, officer = await staff(api)
    patient_id = await api.patient(peer)

    created = await api.consent(
        officer, patient_id, externalParty={"phoneNumber": "+12025550188", "name": "Dr. External"}
    )

    assert created["externalParty"]["phoneNumber"] == "+12025550188"


# --- PostgreSQL refusing new connections -----------------------------------------------------------

_SSL_REQUEST = 80877103


def _error_response(sqlstate: str, message: str) -> bytes:
    fields = b"SFATAL\0VFATAL\0C" + sqlstate.encode() + b"\0M" + message.encode() + b"\0\0"
    return b"E" + struct.pack("!i", len(fields) + 4) + fields


@pytest.fixture
async def shutting_down_postgres() -> AsyncIterator[str]:
    """A server on a free loopback port that answers every connection the way PostgreSQL does while
    it shuts down: FATAL 57P03 "the database system is shutting down"."""

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            length, code = struct.unpack("!ii", await reader.readexactly(8))
            if code == _SSL_REQUEST:
                writer.write(b"N")
                await writer.drain()
                length, code = struct.unpack("!ii", await reader.readexactly(8))
            await reader.readexactly(length - 8)
            writer.write(_error_response("57P03", "the database system is shutting down"))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"postgresql+asyncpg://caremsg@127.0.0.1:{port}/caremsg"
    finally:
        server.close()
        await server.wait_closed()


async def test_cannot_connect_now_through_sqlalchemy_counts_as_unavailable(
    shutting_down_postgres: str,
) -> None:
    engine = create_async_engine(shutting_down_postgres, connect_args={"ssl": False})
    try:
        with pytest.raises(DBAPIError) as raised:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()

    assert is_unavailable(raised.value)


async def test_cannot_connect_now_through_asyncpg_counts_as_unavailable(shutting_down_postgres: str) -> None:
    port = int(shutting_down_postgres.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(asyncpg.exceptions.CannotConnectNowError) as raised:
        await asyncpg.connect(host="127.0.0.1", port=port, user="caremsg", ssl=False)

    assert is_unavailable(raised.value)


async def test_a_request_during_a_database_shutdown_is_a_503_with_retry_after(
    aiohttp_client: Any, shutting_down_postgres: str
) -> None:
    engine = create_async_engine(shutting_down_postgres, connect_args={"ssl": False})

    async def reads_the_database(request: web.Request) -> web.Response:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return web.json_response({})

    app = web.Application(middlewares=[request_context(is_unavailable)])
    app.router.add_get("/reads", reads_the_database)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    try:
        resp = await client.get("/reads")
        body = await resp.json(content_type=None)
    finally:
        await engine.dispose()

    assert resp.status == 503, body
    assert resp.headers["Retry-After"].isdigit()
    assert resp.headers["Content-Type"].startswith(PROBLEM_JSON)
    assert body["code"] == "service_unavailable"
