"""Hostile input answers a 4xx problem+json naming the field, never a 500 or a partial write.

The inputs are the ones an attack from outside found (issue 10, item 5): JSON nested a thousand deep,
NUL and other control characters in stored strings, non-ASCII digits in path ids, bidirectional and
zero-width characters in names, numbers that cannot be texted, and a PostgreSQL that refuses new
connections while it shuts down. Issue 13's endpoints (recall, correction, the legal record, legal
holds, attachments, Part 2 patients and consents) get the same inputs from one table, which also
checks that the name and text a request carries reach neither a log line nor the answer.

Longer than 400 lines because the table at the end gives the later endpoints the same hostile inputs
(deep JSON, NUL and control characters, ids that are not ASCII digits) that the tests above try one
at a time, held to the same answer: a 4xx naming the field and nothing written.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from structlog.testing import capture_logs

from handlers.middleware import request_context
from integrations.db.base import is_unavailable
from integrations.twilio import sign_request
from tests.api.conftest import Api, Person
from tests.api.messaging_support import PHONE, care_team, emulator, send, twilio

PROBLEM_JSON = "application/problem+json"


def field_names(body: dict[str, Any]) -> list[str]:
    return [e["field"] for e in body.get("errors", [])]


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


# --- issue 13's endpoints: recall, correction, the legal record, legal holds, attachments, Part 2 -----

#: A name and a message text that must never reach a log line or an error body, whatever the input.
MARK_NAME = "Zebulon Quartermaine"
MARK_TEXT = "Potassium 6.1 Zebulon"
DEEP = "[" * 1_000 + "]" * 1_000
PART2 = {
    "discloser": "Riverside Recovery Program",
    "information": "Diagnosis and treatment dates",
    "signedBy": "The patient",
    "signedOn": "2026-11-30",
    "revocationRightStated": True,
}


@dataclass(frozen=True)
class Records:
    """One organization's records the hostile requests name: a message of a conversation, its
    attachment, a recalled message, a legal hold; and the people who may act on them."""

    team: Any
    message: int
    attached: int
    attachment: int
    recalled: int
    hold: int


async def issue13_records(api: Api) -> Records:
    team = await care_team(api)
    status, sent = await send(api, team.peer, team.conversation_id, MARK_TEXT)
    assert status == 202, sent
    status, gone = await send(api, team.peer, team.conversation_id, MARK_TEXT)
    assert status == 202, gone
    status, body = await api.call(
        "POST", f"/api/messages/{gone['id']}/recall", team.officer, json={"reason": MARK_NAME}
    )
    assert status == 200, body
    form = aiohttp.FormData()
    form.add_field("file", b"%PDF-1.7\n%%EOF\n", content_type="application/pdf", filename="lab.pdf")
    status, attached = await api.call(
        "POST", f"/api/conversations/{team.conversation_id}/attachments", team.peer, data=form
    )
    assert status == 202, attached
    status, hold = await api.call(
        "POST", "/api/legal-holds", team.officer, json={"patientId": team.patient_id, "reason": MARK_NAME}
    )
    assert status == 201, hold
    return Records(team, sent["id"], attached["id"], attached["attachments"][0]["id"], gone["id"], hold["id"])


@dataclass(frozen=True)
class Hostile:
    """One hostile request: who sends it (``peer`` or ``officer``), where, with what; the answer's
    status and the field it must name."""

    who: str
    method: str
    path: Callable[[Records], str]
    status: int
    field: str
    json: Any = None
    raw: str | None = None  # a JSON body sent as it is
    form: Callable[[], aiohttp.FormData | bytes] | None = None
    content_type: str | None = None


def _form(*parts: tuple[str, bytes | str, str | None]) -> Callable[[], aiohttp.FormData]:
    def build() -> aiohttp.FormData:
        form = aiohttp.FormData()
        for name, value, content_type in parts:
            filename = "upload" if isinstance(value, bytes) else None  # bytes: a file part
            form.add_field(name, value, content_type=content_type, filename=filename)
        return form

    return build


_PDF = ("file", b"%PDF-1.7\n%%EOF\n", "application/pdf")


def _ids(
    who: str,
    method: str,
    template: str,
    name: str,
    body: Any = None,
    *,
    other: str | None = None,
    form: Callable[[], aiohttp.FormData] | None = None,
) -> list[Any]:
    """The path id ``name`` of ``template`` (``{id}``; ``{other}`` filled with the record ``other``)
    as non-ASCII digits, a number past any id, zero and negative: 422 naming it."""
    rows = []
    for label, raw in (
        ("arabic-indic", "%D9%A1"),
        ("superscript", "1%C2%B9"),
        ("huge", "99999999999"),
        ("zero", "0"),
        ("negative", "-1"),
    ):

        def path(r: Records, raw: str = raw) -> str:
            filled = template.replace("{other}", str(getattr(r, other))) if other else template
            return filled.replace(f"{{{name}}}", raw)

        rows.append(
            pytest.param(
                Hostile(who, method, path, 422, name, json=body, form=form), id=f"{template} {name} {label}"
            )
        )
    return rows


def _message(r: Records) -> str:
    return f"/api/messages/{r.message}"


HOSTILE: list[Any] = [
    # recall: the id, then the reason
    *_ids("peer", "POST", "/api/messages/{id}/recall", "id", {"reason": "wrong patient"}),
    *[
        pytest.param(
            Hostile("peer", "POST", lambda r: f"{_message(r)}/recall", status, field, json=body),
            id=f"recall {label}",
        )
        for label, body, status, field in (
            ("nul", {"reason": f"{MARK_NAME}\u0000"}, 422, "reason"),
            ("escape", {"reason": f"\u001b[31m{MARK_NAME}"}, 422, "reason"),
            ("oversize", {"reason": MARK_NAME * 40}, 422, "reason"),
            ("blank", {"reason": "   "}, 422, "reason"),
            ("number", {"reason": 12}, 422, "reason"),
            ("list", {"reason": [MARK_NAME]}, 422, "reason"),
            ("object", {"reason": {"text": MARK_NAME}}, 422, "reason"),
            ("missing", {}, 422, "reason"),
            ("unknown-field", {"reason": "wrong", "patientName": MARK_NAME}, 422, "patientName"),
        )
    ],
    pytest.param(
        Hostile(
            "peer", "POST", lambda r: f"{_message(r)}/recall", 400, "body", raw='{"reason": ' + DEEP + "}"
        ),
        id="recall deep",
    ),
    # correction
    *_ids("peer", "POST", "/api/messages/{id}/correct", "id", {"message": "fixed"}),
    *[
        pytest.param(
            Hostile("peer", "POST", lambda r: f"{_message(r)}/correct", status, field, json=body),
            id=f"correct {label}",
        )
        for label, body, status, field in (
            ("nul", {"message": f"{MARK_TEXT}\u0000"}, 422, "message"),
            ("oversize", {"message": MARK_TEXT * 300}, 422, "message"),
            ("empty", {"message": ""}, 422, "message"),
            ("number", {"message": 6.1}, 422, "message"),
            ("null", {"message": None}, 422, "message"),
        )
    ],
    pytest.param(
        Hostile(
            "peer", "POST", lambda r: f"{_message(r)}/correct", 400, "body", raw='{"message": ' + DEEP + "}"
        ),
        id="correct deep",
    ),
    # the legal record
    *_ids("officer", "GET", "/api/messages/{id}/legal-record", "id"),
    # legal holds: placing (on a patient or a conversation), lifting, listing
    *[
        pytest.param(
            Hostile("officer", "POST", lambda r: "/api/legal-holds", status, field, json=body),
            id=f"hold {label}",
        )
        for label, body, status, field in (
            ("patient-string", {"patientId": "1", "reason": "matter"}, 422, "patientId"),
            ("patient-huge", {"patientId": 99_999_999_999, "reason": "matter"}, 422, "patientId"),
            ("patient-zero", {"patientId": 0, "reason": "matter"}, 422, "patientId"),
            ("patient-float", {"patientId": 1.5, "reason": "matter"}, 422, "patientId"),
            ("patient-bool", {"patientId": True, "reason": "matter"}, 422, "patientId"),
            (
                "conversation-arabic-digits",
                {"conversationId": "\u0661", "reason": "matter"},
                422,
                "conversationId",
            ),
            ("conversation-list", {"conversationId": [1], "reason": "matter"}, 422, "conversationId"),
            ("both", {"patientId": 1, "conversationId": 1, "reason": "matter"}, 422, "patientId"),
            ("neither", {"reason": "matter"}, 422, "patientId"),
            ("reason-nul", {"patientId": 1, "reason": f"{MARK_NAME}\u0000"}, 422, "reason"),
            ("reason-oversize", {"patientId": 1, "reason": MARK_NAME * 40}, 422, "reason"),
            ("reason-missing", {"patientId": 1}, 422, "reason"),
        )
    ],
    pytest.param(
        Hostile(
            "officer", "POST", lambda r: "/api/legal-holds", 400, "body", raw='{"patientId": ' + DEEP + "}"
        ),
        id="hold deep",
    ),
    *_ids("officer", "POST", "/api/legal-holds/{id}/lift", "id", {"reason": "matter closed"}),
    *[
        pytest.param(
            Hostile("officer", "POST", lambda r: f"/api/legal-holds/{r.hold}/lift", 422, "reason", json=body),
            id=f"lift {label}",
        )
        for label, body in (
            ("nul", {"reason": f"{MARK_NAME}\u0000"}),
            ("oversize", {"reason": MARK_NAME * 40}),
            ("number", {"reason": 1}),
            ("missing", {}),
        )
    ],
    pytest.param(
        Hostile("officer", "GET", lambda r: "/api/legal-holds?active=%00", 422, "active"),
        id="holds active nul",
    ),
    pytest.param(
        Hostile("officer", "GET", lambda r: "/api/legal-holds?active=maybe", 422, "active"),
        id="holds active word",
    ),
    # attachments: the conversation id, the multipart body; the download's two ids
    *_ids("peer", "POST", "/api/conversations/{id}/attachments", "id", form=_form(_PDF)),
    *[
        pytest.param(
            Hostile(
                "peer",
                "POST",
                lambda r: f"/api/conversations/{r.team.conversation_id}/attachments",
                status,
                field,
                form=form,
            ),
            id=f"attach {label}",
        )
        for label, form, status, field in (
            ("message-nul", _form(_PDF, ("message", f"{MARK_TEXT}\u0000", "text/plain")), 422, "message"),
            ("message-oversize", _form(_PDF, ("message", MARK_TEXT * 300, "text/plain")), 422, "message"),
            (
                "message-not-utf8",
                _form(_PDF, ("message", "Zebulon \udcff".encode("utf-8", "surrogateescape"), "text/plain")),
                422,
                "message",
            ),
            ("no-file", _form(("message", MARK_TEXT, "text/plain")), 422, "file"),
            ("empty-file", _form(("file", b"", "application/pdf")), 422, "file"),
            ("unknown-part", _form(_PDF, ("patientName", MARK_NAME, "text/plain")), 422, "patientName"),
            (
                "executable-as-pdf",
                _form(("file", b"MZ\x90\x00" + MARK_NAME.encode(), "application/pdf")),
                415,
                "file",
            ),
            ("type-not-allowed", _form(("file", MARK_NAME.encode(), "text/html")), 415, "file"),
        )
    ],
    pytest.param(
        Hostile(
            "peer",
            "POST",
            lambda r: f"/api/conversations/{r.team.conversation_id}/attachments",
            422,
            "file",
            json={"file": MARK_TEXT},
        ),
        id="attach json",
    ),
    pytest.param(
        Hostile(
            "peer",
            "POST",
            lambda r: f"/api/conversations/{r.team.conversation_id}/attachments",
            400,
            "file",
            form=lambda: b"--nowhere\r\n" + MARK_TEXT.encode(),
            content_type="multipart/form-data",
        ),
        id="attach no boundary",
    ),
    *_ids("peer", "GET", "/api/messages/{id}/attachments/{other}", "id", other="attachment"),
    *[
        pytest.param(
            Hostile(
                "peer",
                "GET",
                lambda r, raw=raw: f"/api/messages/{r.attached}/attachments/{raw}",
                422,
                "attachmentId",
            ),
            id=f"download attachmentId {raw}",
        )
        for raw in ("%D9%A1", "99999999999", "0")
    ],
    # a patient marked as having Part 2 records
    *[
        pytest.param(Hostile("peer", method, path, 422, "part2", json=body), id=f"patient part2 {label}")
        for label, method, path, body in (
            (
                "create-string",
                "POST",
                lambda r: "/api/patients",
                {"firstName": MARK_NAME, "lastName": "Smith", "riskLevel": "low", "part2": "true"},
            ),
            ("update-null", "PUT", lambda r: f"/api/patients/{r.team.patient_id}", {"part2": None}),
            ("update-number", "PUT", lambda r: f"/api/patients/{r.team.patient_id}", {"part2": 1}),
        )
    ],
    # Part 2 consent elements
    *[
        pytest.param(
            Hostile(
                "officer",
                "POST",
                lambda r: "/api/consents",
                422,
                field,
                json={
                    "purpose": "treatment",
                    "organizationId": 1,
                    "expiresAt": "2099-01-01T00:00:00+00:00",
                    "part2": part2,
                },
            ),
            id=f"part2 {label}",
        )
        for label, part2, field in (
            ("discloser-nul", {**PART2, "discloser": f"{MARK_NAME}\u0000"}, "part2.discloser"),
            ("information-oversize", {**PART2, "information": MARK_TEXT * 40}, "part2.information"),
            ("information-bidi", {**PART2, "information": f"\u202e{MARK_TEXT}"}, "part2.information"),
            ("signed-by-number", {**PART2, "signedBy": 7}, "part2.signedBy"),
            ("signed-on-not-a-date", {**PART2, "signedOn": MARK_NAME}, "part2.signedOn"),
            (
                "signed-on-arabic-digits",
                {**PART2, "signedOn": "\u0662\u0660\u0662\u0666-11-30"},
                "part2.signedOn",
            ),
            ("revocation-string", {**PART2, "revocationRightStated": "true"}, "part2.revocationRightStated"),
            ("not-an-object", [MARK_NAME], "part2"),
        )
    ],
]


#: The records the hostile requests name, built once per run of this module (~130 ms each: a care
#: team, two sends, a recall, an upload, a hold). They can be shared because no hostile request
#: writes anything, which every one of them checks.
_shared_records: dict[str, Records] = {}


async def shared_issue13_records(api: Api) -> Records:
    if "records" not in _shared_records:
        _shared_records["records"] = await issue13_records(api)
    return _shared_records["records"]


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_hostile_input_to_an_issue13_endpoint_is_a_4xx_naming_the_field_and_logs_no_phi(
    api: Api, db: asyncpg.Connection, hostile: Hostile
) -> None:
    records = await shared_issue13_records(api)
    who = records.team.peer if hostile.who == "peer" else records.team.officer
    path = hostile.path(records)
    json_body = hostile.json
    if isinstance(json_body, dict) and path == "/api/consents":
        json_body = {**json_body, "patientId": records.team.patient_id}
    before = await db.fetchval(
        "SELECT (SELECT count(*) FROM messages) + (SELECT count(*) FROM legal_holds)"
        " + (SELECT count(*) FROM consents) + (SELECT count(*) FROM message_recalls)"
        " + (SELECT count(*) FROM patients WHERE part2)"
    )
    headers = dict(who.auth)
    kwargs: dict[str, Any] = {}
    if hostile.raw is not None:
        kwargs["data"] = hostile.raw
        headers["Content-Type"] = "application/json"
    elif hostile.form is not None:
        kwargs["data"] = hostile.form()
        if hostile.content_type is not None:
            headers["Content-Type"] = hostile.content_type
    elif json_body is not None:
        kwargs["json"] = json_body

    with capture_logs() as logs:
        resp = await api.client.request(hostile.method, path, headers=headers, **kwargs)
        text_body = await resp.text()

    assert resp.status == hostile.status, text_body
    assert resp.content_type == PROBLEM_JSON, text_body
    assert field_names(json.loads(text_body)) == [hostile.field], text_body
    # Nothing was written, and neither the name nor the text the requests carry reached a log line
    # (as the app passed them to structlog, before any scrubbing) or the answer.
    after = await db.fetchval(
        "SELECT (SELECT count(*) FROM messages) + (SELECT count(*) FROM legal_holds)"
        " + (SELECT count(*) FROM consents) + (SELECT count(*) FROM message_recalls)"
        " + (SELECT count(*) FROM patients WHERE part2)"
    )
    assert after == before
    assert [line["status"] for line in logs if line["event"] == "http.request"] == [hostile.status]
    logged = json.dumps(logs, default=str)
    for mark in ("Zebulon", "Potassium", "Quartermaine"):
        assert mark not in logged
        assert mark not in text_body
