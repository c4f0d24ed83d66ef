"""The break-glass review list over plain HTTP: the organization's sessions (the API's
``break_glass.list``), one session with the records it produced (the API's audit search), and "mark
reviewed with a note" (``break_glass.review``): once, CSRF-protected, audited; another
organization's session answers as one that does not exist."""

from __future__ import annotations

import re
from typing import Any

from tests.support.api import Api, Person
from tests.support.console import CSRF, audit_records, sign_in

REASON = "Unresponsive patient in the ED, care team unreachable"
NOTE = "Checked with the ED lead: justified, records read match the emergency."


async def an_emergency(api: Api) -> tuple[Person, Person, int, dict[str, Any]]:
    """A clinician of one organization breaks the glass on its patient and reads the record; the
    officer of that organization reviews it. Returns (clinician, officer, patient, session)."""
    org = await api.organization()
    peer = await api.person("peer_support", org)
    officer = await api.person("compliance_officer", org)
    clinician = await api.person("care_team_member", org)
    patient_id = await api.patient(peer)
    status, opened = await api.call(
        "POST", f"/api/patients/{patient_id}/break-glass", clinician, json={"reason": REASON}
    )
    assert status == 201, opened
    status, _ = await api.call("GET", f"/api/patients/{patient_id}", clinician)
    assert status == 200
    return clinician, officer, patient_id, opened


async def test_the_review_list_shows_the_organizations_sessions_and_their_records(api: Api) -> None:
    clinician, officer, patient_id, opened = await an_emergency(api)
    session = opened["id"]
    assert (await sign_in(api, officer)).status == 303

    listing = await api.client.get("/console/break-glass")
    text = await listing.text()
    assert listing.status == 200
    assert f'href="/console/break-glass/{session}"' in text
    assert "to review" in text

    one = await api.client.get(f"/console/break-glass/{session}")
    text = await one.text()
    assert one.status == 200
    assert REASON in text
    # The records it produced: the read of the record, flagged break-glass, by this clinician, while
    # it was open: the API's audit search with the same filters finds the same ones.
    rows = re.findall(r"<td><code>([a-z_.]+)</code></td>", text)
    assert "patient.read" in rows
    flagged = await audit_records(
        api,
        officer,
        breakGlass="true",
        actorId=clinician.id,
        patientId=patient_id,
        **{"from": opened["openedAt"], "to": opened["expiresAt"]},
    )
    assert rows == [r["workflow"] for r in flagged]


async def test_a_session_is_reviewed_once_with_a_note_and_the_review_is_audited(api: Api) -> None:
    _, officer, _, opened = await an_emergency(api)
    session = opened["id"]
    assert (await sign_in(api, officer)).status == 303
    form = await api.client.get(f"/console/break-glass/{session}")
    match = CSRF.search(await form.text())
    assert match is not None
    path = f"/console/break-glass/{session}/review"

    empty = await api.client.post(path, data={"csrf_token": match.group(1), "note": "  "})
    assert empty.status == 422
    assert 'id="e-note"' in await empty.text()

    forged = await api.client.post(path, data={"csrf_token": "forged", "note": NOTE})
    assert forged.status == 403

    done = await api.client.post(
        path, data={"csrf_token": match.group(1), "note": NOTE}, allow_redirects=False
    )
    assert done.status == 303
    shown = await api.client.get(done.headers["Location"])
    text = await shown.text()
    assert f"Reviewed for your organization by user {officer.id}" in text
    assert NOTE in text
    assert "Mark reviewed" not in text

    again = await api.client.post(path, data={"csrf_token": match.group(1), "note": "twice"})
    assert again.status == 409
    assert "already reviewed" in await again.text()
    records = await audit_records(api, officer, workflow="break_glass.review", actorId=officer.id)
    # The review, then the refused second one (allowed by the policy, failed: already reviewed).
    assert [(r["decision"], r["outcome"], r["resourceId"]) for r in records] == [
        ("allow", "success", str(session)),
        ("allow", "failure", str(session)),
    ]
    # The note is kept with the session, not copied into the audit trail.
    assert all(NOTE not in str(r) for r in records)
    listing = await (await api.client.get("/console/break-glass")).text()
    assert "to review" not in listing


async def test_another_organizations_session_answers_as_nonexistent(api: Api) -> None:
    _, _, _, opened = await an_emergency(api)
    session = opened["id"]
    stranger = await api.person("compliance_officer", await api.organization())
    assert (await sign_in(api, stranger)).status == 303
    listing = await (await api.client.get("/console/break-glass")).text()
    assert f'href="/console/break-glass/{session}"' not in listing
    assert (await api.client.get(f"/console/break-glass/{session}")).status == 404
    for missing in ("2000000000", "99999999999", "\u00b9", "-1"):
        assert (await api.client.get(f"/console/break-glass/{missing}")).status == 404, missing
    home = await (await api.client.get("/console/")).text()
    token = CSRF.search(home)
    assert token is not None
    review = await api.client.post(
        f"/console/break-glass/{session}/review", data={"csrf_token": token.group(1), "note": NOTE}
    )
    assert review.status == 404
    records = await audit_records(api, stranger, workflow="break_glass.review", actorId=stranger.id)
    assert [(r["outcome"], r["reason"]) for r in records] == [("failure", "not_found")]


async def test_an_auditor_may_not_review_break_glass_sessions(api: Api) -> None:
    _, officer, _, opened = await an_emergency(api)
    session = opened["id"]
    auditor = await api.person("auditor", officer.organization_id)
    assert (await sign_in(api, auditor)).status == 303
    assert (await api.client.get("/console/break-glass")).status == 403
    page = await api.client.get(f"/console/break-glass/{session}")
    assert page.status == 403
    assert "role_not_permitted" in await page.text()


async def test_the_api_reviews_the_same_way_and_lists_the_review(api: Api) -> None:
    """POST /api/break-glass/{sessionId}/review is the same workflow as the console's form."""
    _, officer, _, opened = await an_emergency(api)
    path = f"/api/break-glass/{opened['id']}/review"
    status, body = await api.call("POST", path, officer, json={"note": ""})
    assert (status, [e["field"] for e in body["errors"]]) == (422, ["note"])
    status, body = await api.call("POST", path, officer, json={"note": "Checked\u0000 by the lead"})
    assert (status, [e["field"] for e in body["errors"]]) == (422, ["note"])
    nested: Any = "x"
    for _ in range(200):
        nested = {"note": nested}
    status, body = await api.call("POST", path, officer, json=nested)
    assert (status, body["detail"]) == (400, "The request body is nested too deeply."), body
    arabic_digits = "".join(chr(0x0660 + int(d)) for d in str(opened["id"]))
    status, body = await api.call(
        "POST", f"/api/break-glass/{arabic_digits}/review", officer, json={"note": NOTE}
    )
    assert (status, [e["field"] for e in body["errors"]]) == (422, ["sessionId"])
    status, reviewed = await api.call("POST", path, officer, json={"note": NOTE})
    assert status == 200, reviewed
    assert (reviewed["reviewedBy"], reviewed["reviewNote"]) == (officer.id, NOTE)
    assert (await api.call("POST", path, officer, json={"note": "again"}))[0] == 409
    _, listed = await api.call("GET", "/api/break-glass", officer)
    [session] = [s for s in listed["items"] if s["id"] == opened["id"]]
    assert session["reviewedAt"] is not None
    stranger = await api.person("compliance_officer", await api.organization())
    elsewhere = await api.call("POST", path, stranger, json={"note": NOTE})
    missing = await api.call("POST", "/api/break-glass/2000000000/review", stranger, json={"note": NOTE})
    assert elsewhere[0] == missing[0] == 404
    peer = await api.person("peer_support", officer.organization_id)
    status, refused = await api.call("POST", path, peer, json={"note": NOTE})
    assert (status, refused["reason"]) == (403, "role_not_permitted")
