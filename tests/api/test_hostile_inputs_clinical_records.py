"""Hostile input to the clinical-record endpoints (recall, correction, the legal record, legal holds,
attachments, Part 2 patients and consents), from one table: JSON nested a thousand deep, NUL and
control characters, ids that are not ASCII digits, malformed uploads. Each answers a 4xx
problem+json naming the field, writes nothing, and neither the name nor the text the request
carries reaches a log line or the answer. The same inputs, one at a time, on the other endpoints:
tests/api/test_input_robustness.py; generated for every endpoint: test_hostile_inputs_everywhere.py.

Longer than 400 lines because the hostile requests are one table, a row per endpoint and input, read
together with the records they name (:class:`Records`) and held to one answer by the one test.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest
from structlog.testing import capture_logs

from tests.api.conftest import Api
from tests.api.messaging_support import care_team, send
from tests.support.api import PROBLEM_JSON, field_names

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


async def clinical_records(api: Api) -> Records:
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


async def shared_clinical_records(api: Api) -> Records:
    if "records" not in _shared_records:
        _shared_records["records"] = await clinical_records(api)
    return _shared_records["records"]


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_hostile_input_to_a_clinical_record_endpoint_is_a_4xx_naming_the_field_and_logs_no_phi(
    api: Api, db: asyncpg.Connection, hostile: Hostile
) -> None:
    records = await shared_clinical_records(api)
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
