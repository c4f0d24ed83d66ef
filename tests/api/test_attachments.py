"""Attachments over HTTP, end to end: the real app, PostgreSQL, the outbox relay and the Sendbird
emulator (the channel holds a FILE message with the file's bytes), the external participant texted
only the notification, 413/415/422 as problem+json naming the field with nothing written, the
download decided as conversation.read (404 for another organization's), and a recall deleting the
file message. tests/unit/test_attachment_workflows_on_fakes.py covers the checks on fakes.

Longer than 400 lines because the upload's checks, the download, the recall and the Idempotency-Key
retries are all cases of one endpoint, posted as the same multipart form (``_form``) into the same
care team's conversation; split, each part would need its own copy of the form builder.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from typing import Any

import aiohttp
import asyncpg

from handlers.api_messaging import messaging_key
from integrations.idempotency import Claim, request_hash
from tests.support.api import Api, new_request_id
from tests.support.audit import request_records
from tests.support.messaging import CareTeam, care_team, emulator, settled_deliveries, texts
from tests.support.polling import eventually, settled

PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def _form(
    data: bytes | None,
    content_type: str = "application/pdf",
    message: str | None = None,
    filename: str = "Ann Lee discharge.pdf",
) -> aiohttp.FormData:
    form = aiohttp.FormData()
    if data is not None:
        form.add_field("file", io.BytesIO(data), filename=filename, content_type=content_type)
    if message is not None:
        form.add_field("message", message)
    return form


async def _attach(api: Api, who: Any, conversation_id: int, form: aiohttp.FormData) -> tuple[int, Any]:
    return await api.call("POST", f"/api/conversations/{conversation_id}/attachments", who, data=form)


async def test_a_pdf_reaches_the_channel_as_a_file_message_and_the_external_participant_only_a_notice(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)

    status, sent = await _attach(api, team.peer, team.conversation_id, _form(PDF, message="see attached"))

    assert status == 202, sent
    [attachment] = sent["attachments"]
    assert attachment["sha256"] == hashlib.sha256(PDF).hexdigest()
    assert (attachment["contentType"], attachment["size"]) == ("application/pdf", len(PDF))
    deliveries = await settled_deliveries(api, team.peer, sent["id"])
    assert {d["state"] for d in deliveries} == {"sent"}, deliveries
    channel = emulator(api).channels[team.conversation["channelUrl"]]
    [posted] = [m for m in channel.messages if json.loads(m.data or "{}").get("message_id") == sent["id"]]
    assert posted.type == "FILE"
    assert posted.file is not None
    assert (posted.file.content, posted.file.type) == (PDF, "application/pdf")
    assert "Ann Lee" not in posted.file.name
    [text] = await eventually(lambda: settled(texts(api, team.phone)), "the notification")
    assert "see attached" not in text.text
    assert "%PDF" not in text.text
    # the message's read lists its attachment; the download gives the bytes back
    status, one = await api.call("GET", f"/api/messages/{sent['id']}", team.nurse)
    assert (status, one["attachments"]) == (200, [attachment])
    resp = await api.client.get(
        f"/api/messages/{sent['id']}/attachments/{attachment['id']}", headers=team.nurse.auth
    )
    assert (resp.status, resp.content_type, await resp.read()) == (200, "application/pdf", PDF)
    # the audit record: hash, size, type; never the file's name (of this organization's upload: a
    # refused or missing-conversation upload elsewhere is audited under the conversation id it named)
    details = await db.fetchval(
        "SELECT details::text FROM audit_events WHERE workflow = 'message.attach' AND resource_id = $1"
        " AND organization_id = $2",
        str(team.conversation_id),
        team.organization_id,
    )
    assert attachment["sha256"] in details
    assert "Ann Lee" not in details


async def test_a_file_over_the_limit_is_413_and_nothing_is_written(api: Api, db: asyncpg.Connection) -> None:
    team = await care_team(api)
    before = await db.fetchval("SELECT count(*) FROM messages")
    limit = 5 * 1024 * 1024

    status, problem = await _attach(api, team.peer, team.conversation_id, _form(PDF + b"0" * limit))

    assert status == 413, problem
    assert (problem["code"], [e["field"] for e in problem["errors"]]) == ("payload_too_large", ["file"])
    assert await db.fetchval("SELECT count(*) FROM messages") == before


async def test_a_type_not_allowed_or_bytes_that_are_not_it_are_415(api: Api, db: asyncpg.Connection) -> None:
    team = await care_team(api)
    before = await db.fetchval("SELECT count(*) FROM message_attachments")

    for form in (_form(b"MZ\x90\x00", "application/x-msdownload"), _form(b"MZ\x90\x00", "application/pdf")):
        status, problem = await _attach(api, team.peer, team.conversation_id, form)
        assert status == 415, problem
        assert (problem["code"], [e["field"] for e in problem["errors"]]) == (
            "unsupported_media_type",
            ["file"],
        )
    status, png = await _attach(api, team.peer, team.conversation_id, _form(PNG, "image/png"))
    assert status == 202, png
    assert await db.fetchval("SELECT count(*) FROM message_attachments") == before + 1


async def test_no_file_an_empty_one_or_too_long_a_text_is_422_naming_the_field(api: Api) -> None:
    team = await care_team(api)

    for form in (_form(None, message="no file"), _form(b"")):
        status, problem = await _attach(api, team.peer, team.conversation_id, form)
        assert status == 422, problem
        assert [e["field"] for e in problem["errors"]] == ["file"]
    status, problem = await api.call(
        "POST", f"/api/conversations/{team.conversation_id}/attachments", team.peer, json={"file": "x"}
    )
    assert status == 422, problem
    assert [e["field"] for e in problem["errors"]] == ["file"]
    status, problem = await _attach(api, team.peer, team.conversation_id, _form(PDF, message="x" * 20_000))
    assert status == 422, problem
    assert [e["field"] for e in problem["errors"]] == ["message"]


async def test_a_nul_in_the_text_or_an_unknown_part_is_422_without_echo_and_writes_nothing(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    before = await db.fetchval("SELECT count(*) FROM messages")

    # PostgreSQL refuses NUL in text: this was a 500 at the insert.
    status, problem = await _attach(api, team.peer, team.conversation_id, _form(PDF, message="hi\u0000there"))
    assert status == 422, problem
    assert [(e["field"], e["type"]) for e in problem["errors"]] == [("message", "control_character")]

    form = _form(PDF)
    form.add_field("Ann Lee", "x")  # a part name the client chose is not repeated
    status, problem = await _attach(api, team.peer, team.conversation_id, form)
    assert status == 422, problem
    assert [e["field"] for e in problem["errors"]] == ["body"]
    assert "Ann Lee" not in json.dumps(problem)

    assert await db.fetchval("SELECT count(*) FROM messages") == before


async def test_a_second_file_or_text_part_is_422_and_writes_nothing(api: Api, db: asyncpg.Connection) -> None:
    # Each part is held to its limit as it is read: a second part of the same name would let one
    # request stream without end (and keep only its last file, silently).
    team = await care_team(api)
    before = await db.fetchval("SELECT count(*) FROM messages")
    big = PDF + b"0" * (4 * 1024 * 1024)

    twice = _form(big)
    twice.add_field("file", io.BytesIO(big), filename="x.pdf", content_type="application/pdf")
    texts = _form(PDF, message="first")
    texts.add_field("message", "second")
    for field, form in (("file", twice), ("message", texts)):
        status, problem = await _attach(api, team.peer, team.conversation_id, form)
        assert status == 422, problem
        assert [(e["field"], e["type"]) for e in problem["errors"]] == [(field, "repeated")]

    assert await db.fetchval("SELECT count(*) FROM messages") == before


async def test_a_multipart_body_that_cannot_be_read_is_400_naming_the_file(api: Api) -> None:
    team = await care_team(api)
    path = f"/api/conversations/{team.conversation_id}/attachments"

    for content_type in ("multipart/form-data", "multipart/form-data; boundary=x"):
        status, problem = await api.call(
            "POST", path, team.peer, data=b'{"file": ""}', headers={"Content-Type": content_type}
        )
        assert status == 400, problem
        assert [e["field"] for e in problem["errors"]] == ["file"]


async def test_another_organizations_staff_get_404_and_an_auditor_403(api: Api) -> None:
    team = await care_team(api)
    status, sent = await _attach(api, team.peer, team.conversation_id, _form(PDF))
    assert status == 202, sent
    other = await api.person("care_team_member", await api.organization())
    auditor = await api.person("auditor", team.organization_id)

    status, _ = await _attach(api, other, team.conversation_id, _form(PDF))
    assert status == 404
    status, _ = await _attach(api, auditor, team.conversation_id, _form(PDF))
    assert status == 403
    download = f"/api/messages/{sent['id']}/attachments/{sent['attachments'][0]['id']}"
    assert (await api.call("GET", download, other))[0] == 404
    assert (await api.call("GET", f"/api/messages/{sent['id']}/attachments/999999", team.nurse))[0] == 404


async def test_a_recalled_attachment_leaves_the_channel_and_is_no_longer_downloaded(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    status, sent = await _attach(api, team.peer, team.conversation_id, _form(PDF))
    assert status == 202, sent
    await settled_deliveries(api, team.peer, sent["id"])
    channel = emulator(api).channels[team.conversation["channelUrl"]]
    [posted] = [m for m in channel.messages if json.loads(m.data or "{}").get("message_id") == sent["id"]]

    status, recalled = await api.call(
        "POST", f"/api/messages/{sent['id']}/recall", team.peer, json={"reason": "wrong patient"}
    )

    assert status == 200, recalled
    await eventually(lambda: settled(posted.is_removed), "the file message to be deleted")
    download = f"/api/messages/{sent['id']}/attachments/{sent['attachments'][0]['id']}"
    assert (await api.call("GET", download, team.peer))[0] == 404
    # kept only in caremsg's table, for the legal record
    assert await db.fetchval("SELECT data FROM message_attachments WHERE message_id = $1", sent["id"]) == PDF


async def _recalled_attachment(api: Api, team: Any) -> tuple[dict[str, Any], Any]:
    """A PDF sent to the channel and then recalled by its sender; the message and the channel's copy."""
    status, sent = await _attach(api, team.peer, team.conversation_id, _form(PDF, message="see attached"))
    assert status == 202, sent
    await settled_deliveries(api, team.peer, sent["id"])
    channel = emulator(api).channels[team.conversation["channelUrl"]]
    [posted] = [m for m in channel.messages if json.loads(m.data or "{}").get("message_id") == sent["id"]]
    status, recalled = await api.call(
        "POST", f"/api/messages/{sent['id']}/recall", team.peer, json={"reason": "wrong patient"}
    )
    assert status == 200, recalled
    return sent, posted


async def test_a_compliance_officer_reads_a_recalled_file_from_the_legal_record_each_read_audited(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    sent, posted = await _recalled_attachment(api, team)
    [attachment] = sent["attachments"]

    # the channel's copy is deleted; the bytes stay, for the legal record only
    await eventually(lambda: settled(posted.is_removed), "the file message to be deleted")
    read_ids = [new_request_id() for _ in range(3)]
    status, record = await api.call(
        "GET", f"/api/messages/{sent['id']}/legal-record", team.officer, headers={"X-Request-ID": read_ids[0]}
    )
    assert status == 200, record
    assert record["attachments"] == [attachment]
    path = f"/api/messages/{sent['id']}/legal-record/attachments/{attachment['id']}"
    for read_id in read_ids[1:]:
        resp = await api.client.get(path, headers={**team.officer.auth, "X-Request-ID": read_id})
        assert (resp.status, resp.content_type, await resp.read()) == (200, "application/pdf", PDF)
        assert resp.headers["Content-Disposition"].startswith("attachment;")
        assert "Ann Lee" not in resp.headers["Content-Disposition"]
        assert resp.headers["Cache-Control"] == "no-store"

    # By request: a refused or missing-message read elsewhere is audited under the id it asked for.
    reads = await request_records(db, *read_ids, workflow="message.read_recalled")
    assert [(r["actor_id"], r["outcome"], r["resource_id"]) for r in reads] == [
        (team.officer.id, "success", str(sent["id"]))
    ] * 3
    files = [json.loads(r["details"]) for r in reads if "attachment_sha256" in json.loads(r["details"])]
    assert [(d["attachment_id"], d["attachment_sha256"]) for d in files] == [
        (attachment["id"], hashlib.sha256(PDF).hexdigest())
    ] * 2
    assert await db.fetchval("SELECT data FROM message_attachments WHERE message_id = $1", sent["id"]) == PDF


async def test_a_recalled_file_is_concealed_from_other_organizations_and_not_read_before_a_recall(
    api: Api,
) -> None:
    team = await care_team(api)
    sent, _ = await _recalled_attachment(api, team)
    attachment_id = sent["attachments"][0]["id"]
    status, kept = await _attach(api, team.peer, team.conversation_id, _form(PNG, "image/png"))
    assert status == 202, kept
    stranger = await api.person("compliance_officer", await api.organization())

    def path(message_id: int, attachment: int) -> str:
        return f"/api/messages/{message_id}/legal-record/attachments/{attachment}"

    # another organization's officer: as for a message that does not exist
    other = await api.call("GET", path(sent["id"], attachment_id), stranger)
    missing = await api.call("GET", path(2_000_000_000, attachment_id), stranger)
    assert (other[0], missing[0]) == (404, 404)
    assert other[1]["detail"] == missing[1]["detail"]
    # a message that was not recalled: its file is downloaded the ordinary way, not from the record
    status, _ = await api.call("GET", path(kept["id"], kept["attachments"][0]["id"]), team.officer)
    assert status == 404
    # an attachment the recalled message does not have
    status, _ = await api.call("GET", path(sent["id"], kept["attachments"][0]["id"]), team.officer)
    assert status == 404
    # the sender, like any member, may not read the legal record
    status, refused = await api.call("GET", path(sent["id"], attachment_id), team.peer)
    assert (status, refused["reason"]) == (403, "role_not_permitted")


# --- Idempotency-Key on the upload ------------------------------------------------------------------


def _key() -> dict[str, str]:
    return {"Idempotency-Key": f"k-{uuid.uuid4()}"}


async def _written(db: asyncpg.Connection, team: CareTeam) -> tuple[int, int, int]:
    """What uploads to the team's conversation wrote: messages, attachments, and message.attach
    audit records of the team's organization (an upload refused elsewhere, or one naming a
    conversation that did not exist yet, is audited under the conversation id it named)."""
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM messages WHERE conversation_id = $1) AS messages,"
        " (SELECT count(*) FROM message_attachments a JOIN messages m ON m.id = a.message_id"
        "  WHERE m.conversation_id = $1) AS files,"
        " (SELECT count(*) FROM audit_events WHERE workflow = 'message.attach'"
        "  AND resource_id = CAST($1 AS text) AND organization_id = $2) AS audited",
        team.conversation_id,
        team.organization_id,
    )
    return int(row["messages"]), int(row["files"]), int(row["audited"])


async def test_a_retried_upload_with_the_same_key_replays_the_first_message_and_attaches_once(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    headers = _key()
    path = f"/api/conversations/{team.conversation_id}/attachments"

    # each form has its own multipart boundary; the retry names the file differently too
    first = await api.send("POST", path, team.peer, data=_form(PDF, message="see"), headers=headers)
    retry = _form(PDF, message="see", filename="retry.pdf")
    second = await api.send("POST", path, team.peer, data=retry, headers=headers)

    assert first[0] == 202, first
    # the same message, read again (its delivery state moves on)
    same = ("id", "conversationId", "senderId", "message", "createdAt", "attachments")
    assert (second[0], {k: second[2][k] for k in same}) == (first[0], {k: first[2][k] for k in same})
    assert second[1].get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first[1]
    assert await _written(db, team) == (1, 1, 1)
    await settled_deliveries(api, team.peer, first[2]["id"])
    channel = emulator(api).channels[team.conversation["channelUrl"]]
    assert [m.type for m in channel.messages if m.custom_type == "caremsg_message"] == ["FILE"]


async def test_the_same_key_with_another_file_or_text_is_422_and_writes_nothing(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    headers = _key()
    status, first = await _attach_with(api, team, _form(PDF, message="see"), headers)
    assert status == 202, first

    for other in (_form(PNG, "image/png", message="see"), _form(PDF, message="other text")):
        status, problem = await _attach_with(api, team, other, headers)
        assert status == 422, problem
        assert problem["code"] == "idempotency_key_reused"
        assert "other text" not in str(problem)
    assert await _written(db, team) == (1, 1, 1)


async def test_the_same_upload_while_the_first_is_still_running_is_409(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    headers = _key()
    # The first upload has claimed the key and is still working: the key is held for what identifies
    # an upload (the conversation, the file's type and SHA-256, the text).
    identity = json.dumps(
        {
            "conversationId": team.conversation_id,
            "file": {"contentType": "application/pdf", "sha256": hashlib.sha256(PDF).hexdigest()},
            "message": "",
        }
    ).encode()
    claimed = await api.app[messaging_key].idempotency.claim(
        team.peer.id, headers["Idempotency-Key"], "message.attach", request_hash("message.attach", identity)
    )
    assert isinstance(claimed, Claim)

    status, problem = await _attach_with(api, team, _form(PDF), headers)

    assert (status, problem["code"]) == (409, "conflict")
    assert await _written(db, team) == (0, 0, 0)


async def test_a_refused_upload_does_not_use_up_its_key(api: Api, db: asyncpg.Connection) -> None:
    team = await care_team(api)
    headers = _key()

    status, _ = await _attach_with(api, team, _form(b"MZ\x90\x00", "application/pdf"), headers)
    assert status == 415
    status, sent = await _attach_with(api, team, _form(PDF), headers)

    assert status == 202, sent
    assert await _written(db, team) == (1, 1, 1)


async def test_a_completed_upload_key_keeps_its_message_id_and_none_of_its_text(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    headers, text = _key(), f"Potassium {uuid.uuid4().hex}"

    status, sent = await _attach_with(api, team, _form(PDF, message=text), headers)

    assert status == 202, sent
    row = await db.fetchrow(
        "SELECT state, resource_id, t::text AS whole FROM idempotency_keys t WHERE key = $1",
        headers["Idempotency-Key"],
    )
    assert row is not None
    assert (row["state"], row["resource_id"]) == ("completed", sent["id"])
    assert text not in row["whole"]


async def test_an_upload_whose_request_died_after_committing_is_answered_from_its_message(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    headers = _key()
    status, first = await _attach_with(api, team, _form(PDF), headers)
    assert status == 202, first
    # The process died after the commit and before the response was stored, long enough ago.
    await db.execute(
        "UPDATE idempotency_keys SET state = 'in_progress', response_status = NULL,"
        " lease_until = now() - interval '1 second' WHERE key = $1",
        headers["Idempotency-Key"],
    )

    status, again = await _attach_with(api, team, _form(PDF), headers)

    assert status == 202, again
    assert (again["id"], again["attachments"]) == (first["id"], first["attachments"])
    assert await _written(db, team) == (1, 1, 1)


async def _attach_with(
    api: Api, team: Any, form: aiohttp.FormData, headers: dict[str, str]
) -> tuple[int, Any]:
    return await api.call(
        "POST",
        f"/api/conversations/{team.conversation_id}/attachments",
        team.peer,
        data=form,
        headers=headers,
    )
