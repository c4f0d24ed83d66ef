"""Legal holds and the legal record in the console over plain HTTP: the organization's holds
(``legal_hold.list``), one placed through the form (``legal_hold.place``, each error next to its
field) and lifted with a reason (``legal_hold.lift``); a recalled message's legal record and its
file (``message.read_recalled``, every read audited); every form with the CSRF token."""

from __future__ import annotations

from tests.support.api import Api, Person
from tests.support.console import CSRF, audit_records, sign_in
from tests.support.messaging import PDF, care_team, recalled_with_a_file


async def a_patient(api: Api) -> tuple[Person, int]:
    """An organization's officer and one of its patients."""
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    officer = await api.person("compliance_officer", org)
    return officer, await api.patient(nurse)


async def token_of(api: Api) -> str:
    page = await api.client.get("/console/legal-holds")
    assert page.status == 200, await page.text()
    match = CSRF.search(await page.text())
    assert match is not None
    return match.group(1)


async def test_an_officer_places_a_hold_and_lifts_it_with_a_reason(api: Api) -> None:
    officer, patient = await a_patient(api)
    assert (await sign_in(api, officer)).status == 303
    home = (await (await api.client.get("/console/")).text()).split('<main id="main">')[1]
    assert 'href="/console/legal-holds"' in home
    token = await token_of(api)

    placed = await api.client.post(
        "/console/legal-holds",
        data={"csrf_token": token, "patientId": str(patient), "reason": "Litigation 2026-114"},
        allow_redirects=False,
    )
    assert placed.status == 303, await placed.text()
    status, listed = await api.call("GET", "/api/legal-holds", officer)
    assert status == 200
    [hold] = listed["holds"]
    assert (hold["patientId"], hold["reason"], hold["active"]) == (patient, "Litigation 2026-114", True)
    page = await (await api.client.get(placed.headers["Location"])).text()
    assert "The hold was placed." in page
    assert "Litigation 2026-114" in page
    assert f"Lift hold {hold['id']}" in page

    path = f"/console/legal-holds/{hold['id']}/lift"
    blank = await api.client.post(path, data={"csrf_token": token, "reason": " "})
    assert blank.status == 422
    assert f'id="le-{hold["id"]}"' in await blank.text()
    forged = await api.client.post(path, data={"csrf_token": "x", "reason": "settled"})
    assert forged.status == 403
    lifted = await api.client.post(
        path, data={"csrf_token": token, "reason": "Case settled"}, allow_redirects=False
    )
    assert lifted.status == 303
    page = await (await api.client.get(lifted.headers["Location"])).text()
    assert "The hold was lifted." in page
    assert f"lifted by user {officer.id}" in page
    assert "Case settled" in page
    assert f"Lift hold {hold['id']}" not in page
    again = await api.client.post(path, data={"csrf_token": token, "reason": "again"})
    assert again.status == 409
    assert "lifted already" in await again.text()

    placements = await audit_records(api, officer, workflow="legal_hold.place", actorId=officer.id)
    assert [(r["outcome"], r["patientId"]) for r in placements] == [("success", patient)]
    lifts = await audit_records(api, officer, workflow="legal_hold.lift", actorId=officer.id)
    # The lift, then the refused second one (allowed by the policy, failed: lifted already).
    assert [(r["outcome"], r["resourceId"]) for r in lifts] == [
        ("success", str(hold["id"])),
        ("failure", str(hold["id"])),
    ]


async def test_the_place_forms_errors_are_shown_next_to_their_fields(api: Api) -> None:
    officer, patient = await a_patient(api)
    assert (await sign_in(api, officer)).status == 303
    token = await token_of(api)

    async def place(**fields: str) -> tuple[int, str]:
        response = await api.client.post("/console/legal-holds", data={"csrf_token": token, **fields})
        return response.status, await response.text()

    status, html = await place(reason="Litigation")
    assert status == 422
    assert 'id="he-patientId"' in html
    assert "a patient id or a conversation id" in html
    status, html = await place(patientId=str(patient), reason=" ")
    assert status == 422
    assert 'id="he-reason"' in html
    assert f'value="{patient}"' in html  # what was typed stays
    status, html = await place(patientId="twelve", reason="Litigation")
    assert status == 422
    assert 'id="he-patientId"' in html
    assert "positive whole number" in html
    status, html = await place(patientId=str(patient), conversationId="7", reason="Litigation")
    assert status == 422
    assert "not both" in html
    status, listed = await api.call("GET", "/api/legal-holds", officer)
    assert (status, listed["holds"]) == (200, [])
    forged = await api.client.post(
        "/console/legal-holds", data={"csrf_token": "x", "patientId": str(patient), "reason": "r"}
    )
    assert forged.status == 403
    assert (await api.call("GET", "/api/legal-holds", officer))[1]["holds"] == []


async def test_another_organizations_patient_and_hold_answer_as_nonexistent(api: Api) -> None:
    officer, patient = await a_patient(api)
    status, hold = await api.call(
        "POST", "/api/legal-holds", officer, json={"patientId": patient, "reason": "Litigation"}
    )
    assert status == 201, hold
    stranger = await api.person("compliance_officer", await api.organization())
    assert (await sign_in(api, stranger)).status == 303
    page = await api.client.get("/console/legal-holds")
    html = await page.text()
    assert "No legal holds yet." in html
    assert "Litigation" not in html
    token = await token_of(api)
    theirs = await api.client.post(
        "/console/legal-holds", data={"csrf_token": token, "patientId": str(patient), "reason": "mine"}
    )
    assert theirs.status == 404
    assert "No patient with this id in your organization." in await theirs.text()
    lift = await api.client.post(
        f"/console/legal-holds/{hold['id']}/lift", data={"csrf_token": token, "reason": "not mine"}
    )
    assert lift.status == 404
    _, listed = await api.call("GET", "/api/legal-holds", officer)
    assert [h["active"] for h in listed["holds"]] == [True]


async def test_an_auditor_is_refused_legal_holds_and_legal_records(api: Api) -> None:
    auditor = await api.person("auditor", await api.organization())
    assert (await sign_in(api, auditor)).status == 303
    home = (await (await api.client.get("/console/")).text()).split('<main id="main">')[1]
    assert 'href="/console/legal-holds"' not in home
    refused = await api.client.get("/console/legal-holds")
    assert refused.status == 403
    assert "role_not_permitted" in await refused.text()
    # An id no message has: the role is refused before any record is looked up, and a small id is
    # some later test's message, whose audit trail would then hold this refused read.
    record = await api.client.get("/console/messages/2147483646/legal-record")
    assert record.status == 403
    records = await audit_records(api, auditor, workflow="legal_hold.list", actorId=auditor.id)
    assert [(r["decision"], r["reason"]) for r in records] == [("deny", "role_not_permitted")]


async def test_an_officer_reads_a_recalled_messages_legal_record_and_downloads_its_file(api: Api) -> None:
    team, sent = await recalled_with_a_file(api)
    [attachment] = sent["attachments"]
    assert (await sign_in(api, team.officer)).status == 303

    opened = await api.client.get("/console/legal-record", params={"messageId": str(sent["id"])})
    assert opened.status == 200
    assert str(opened.url).endswith(f"/console/messages/{sent['id']}/legal-record")
    html = await opened.text()
    assert "see the discharge letter" in html
    assert "wrong patient" in html
    assert f"by user {team.peer.id}" in html
    assert "none sent" in html  # no correction
    assert attachment["sha256"] in html
    link = f"/console/messages/{sent['id']}/legal-record/attachments/{attachment['id']}"
    assert f'href="{link}"' in html

    download = await api.client.get(link)
    assert (download.status, download.content_type, await download.read()) == (200, "application/pdf", PDF)
    name = f"attachment-{attachment['id']}.pdf"
    assert download.headers["Content-Disposition"] == f'attachment; filename="{name}"'
    assert download.headers["Cache-Control"] == "no-store"

    reads = await audit_records(api, team.officer, workflow="message.read_recalled", actorId=team.officer.id)
    assert [(r["outcome"], r["resourceId"]) for r in reads] == [("success", str(sent["id"]))] * 2
    assert [r["details"].get("attachmentSha256") for r in reads] == [None, attachment["sha256"]]
    # The recall's own audit record links to the legal record.
    recalls = await audit_records(api, team.officer, workflow="message.recall", actorId=team.peer.id)
    [recall] = [r for r in recalls if r["resourceId"] == str(sent["id"]) and r["outcome"] == "success"]
    record_page = await (await api.client.get(f"/console/audit/{recall['id']}")).text()
    assert f'href="/console/messages/{sent["id"]}/legal-record"' in record_page


async def test_the_legal_record_names_the_correction(api: Api) -> None:
    team, sent = await recalled_with_a_file(api)
    status, correction = await api.call(
        "POST", f"/api/messages/{sent['id']}/correct", team.peer, json={"message": "the right letter"}
    )
    assert status == 202, correction
    assert (await sign_in(api, team.officer)).status == 303
    html = await (await api.client.get(f"/console/messages/{sent['id']}/legal-record")).text()
    assert f"<dt>Correction</dt><dd>message {correction['id']}</dd>" in html


async def test_a_message_not_recalled_or_of_another_organization_answers_like_a_missing_one(
    api: Api,
) -> None:
    team, sent = await recalled_with_a_file(api)
    status, kept = await api.call(
        "POST",
        "/api/conversations/send-message",
        team.peer,
        json={"conversationId": team.conversation_id, "message": "still here"},
    )
    assert status == 202, kept
    attachment_id = sent["attachments"][0]["id"]
    assert (await sign_in(api, team.officer)).status == 303
    not_recalled = await api.client.get(f"/console/messages/{kept['id']}/legal-record")
    missing = await api.client.get("/console/messages/2147483647/legal-record")
    nonsense = await api.client.get("/console/messages/abc/legal-record")
    assert [not_recalled.status, missing.status, nonsense.status] == [404, 404, 404]
    bad_form = await api.client.get("/console/legal-record", params={"messageId": "abc"})
    assert bad_form.status == 422
    assert 'id="me-messageId"' in await bad_form.text()

    stranger = await api.person("compliance_officer", await api.organization())
    assert (await sign_in(api, stranger)).status == 303
    theirs = await api.client.get(f"/console/messages/{sent['id']}/legal-record")
    assert theirs.status == 404
    html = await theirs.text()
    assert "see the discharge letter" not in html
    assert html == await (await api.client.get("/console/messages/2147483647/legal-record")).text()
    file = await api.client.get(f"/console/messages/{sent['id']}/legal-record/attachments/{attachment_id}")
    assert file.status == 404
    assert PDF not in await file.read()


async def test_a_hold_on_a_conversation_is_listed_with_its_patient_and_active_holds_come_first(
    api: Api,
) -> None:
    team = await care_team(api)
    assert (await sign_in(api, team.officer)).status == 303
    token = await token_of(api)
    for subject in ({"patientId": str(team.patient_id)}, {"conversationId": str(team.conversation_id)}):
        placed = await api.client.post(
            "/console/legal-holds",
            data={"csrf_token": token, "reason": f"Matter {len(subject)}", **subject},
            allow_redirects=False,
        )
        assert placed.status == 303, await placed.text()
    _, listed = await api.call("GET", "/api/legal-holds", team.officer)
    newer, older = listed["holds"]
    assert newer["conversationId"] == team.conversation_id
    lifted = await api.client.post(
        f"/console/legal-holds/{newer['id']}/lift",
        data={"csrf_token": token, "reason": "Released"},
        allow_redirects=False,
    )
    assert lifted.status == 303
    html = await (await api.client.get("/console/legal-holds")).text()
    assert f"conversation {team.conversation_id} (patient {team.patient_id})" in html
    # The API lists newest first; the page puts the active (older) hold before the lifted one.
    assert html.index(f"<td>{older['id']}</td>") < html.index(f"<td>{newer['id']}</td>")
