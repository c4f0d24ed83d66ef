"""Consents in the console over plain HTTP: a patient's consents (``consent.list``), one recorded
through the form (``consent.create``, each error next to its field), one revoked with a reason
(``consent.revoke``); every form with the CSRF token."""

from __future__ import annotations

from tests.support.api import Api, Person
from tests.support.console import CSRF, audit_records, sign_in


async def a_patient(api: Api) -> tuple[Person, int, int]:
    """An organization's officer and patient, and a partner organization. (officer, patient, partner)"""
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    officer = await api.person("compliance_officer", org)
    return officer, await api.patient(nurse), await api.organization()


async def token_of(api: Api, patient: int) -> str:
    page = await api.client.get("/console/consents", params={"patientId": str(patient)})
    assert page.status == 200
    match = CSRF.search(await page.text())
    assert match is not None
    return match.group(1)


async def test_a_consent_is_recorded_listed_and_revoked_with_a_reason(api: Api) -> None:
    officer, patient, partner = await a_patient(api)
    assert (await sign_in(api, officer)).status == 303
    token = await token_of(api, patient)

    recorded = await api.client.post(
        "/console/consents",
        data={
            "csrf_token": token,
            "patientId": str(patient),
            "organizationId": str(partner),
            "purpose": "treatment",
            "scope": ["read", "message"],
        },
        allow_redirects=False,
    )
    assert recorded.status == 303, await recorded.text()
    status, listed = await api.call("GET", f"/api/patients/{patient}/consents", officer)
    assert status == 200
    [consent] = listed["items"]
    assert (consent["organizationId"], consent["purpose"], sorted(consent["scope"])) == (
        partner,
        "treatment",
        ["message", "read"],
    )
    page = await (await api.client.get(recorded.headers["Location"])).text()
    assert "The consent was recorded." in page
    assert f"organization {partner}" in page

    path = f"/console/consents/{consent['id']}/revoke"
    blank = await api.client.post(path, data={"csrf_token": token, "patientId": str(patient), "reason": " "})
    assert blank.status == 422
    assert f'id="re-{consent["id"]}"' in await blank.text()
    forged = await api.client.post(path, data={"csrf_token": "x", "patientId": str(patient), "reason": "r"})
    assert forged.status == 403
    revoked = await api.client.post(
        path,
        data={"csrf_token": token, "patientId": str(patient), "reason": "Patient withdrew it"},
        allow_redirects=False,
    )
    assert revoked.status == 303
    page = await (await api.client.get(revoked.headers["Location"])).text()
    assert "Patient withdrew it" in page
    assert "revoked by user" in page
    again = await api.client.post(
        path, data={"csrf_token": token, "patientId": str(patient), "reason": "again"}
    )
    assert again.status == 409
    records = await audit_records(api, officer, workflow="consent.revoke", actorId=officer.id)
    # The revocation, then the refused second one (allowed by the policy, failed: revoked already).
    assert [(r["outcome"], r["resourceId"]) for r in records] == [
        ("success", str(consent["id"])),
        ("failure", str(consent["id"])),
    ]


async def test_the_record_forms_errors_are_shown_next_to_their_fields(api: Api) -> None:
    officer, patient, partner = await a_patient(api)
    assert (await sign_in(api, officer)).status == 303
    token = await token_of(api, patient)
    no_purpose = await api.client.post(
        "/console/consents",
        data={"csrf_token": token, "patientId": str(patient), "organizationId": str(partner)},
    )
    html = await no_purpose.text()
    assert no_purpose.status == 422
    assert 'id="ce-purpose"' in html
    assert f'value="{partner}"' in html  # what was typed stays
    two_recipients = await api.client.post(
        "/console/consents",
        data={
            "csrf_token": token,
            "patientId": str(patient),
            "organizationId": str(partner),
            "phoneNumber": "+12025550143",
            "name": "A neighbour",
            "purpose": "treatment",
            "scope": "read",
        },
    )
    assert two_recipients.status == 422
    assert "exactly one of" in await two_recipients.text()
    bad_phone = await api.client.post(
        "/console/consents",
        data={
            "csrf_token": token,
            "patientId": str(patient),
            "phoneNumber": "call me",
            "name": "A neighbour",
            "purpose": "treatment",
            "scope": "sms",
        },
    )
    assert bad_phone.status == 422
    assert 'id="ce-phoneNumber"' in await bad_phone.text()
    status, listed = await api.call("GET", f"/api/patients/{patient}/consents", officer)
    assert (status, listed["items"]) == (200, [])


async def test_another_organizations_patient_and_consent_answer_as_nonexistent(api: Api) -> None:
    officer, patient, partner = await a_patient(api)
    consent = await api.consent(officer, patient, organizationId=partner, purpose="treatment")
    stranger = await api.person("compliance_officer", await api.organization())
    assert (await sign_in(api, stranger)).status == 303
    page = await api.client.get("/console/consents", params={"patientId": str(patient)})
    assert page.status == 404
    html = await page.text()
    assert "No patient with this id" in html
    match = CSRF.search(html)
    assert match is not None
    revoke = await api.client.post(
        f"/console/consents/{consent['id']}/revoke",
        data={"csrf_token": match.group(1), "patientId": str(patient), "reason": "not mine"},
    )
    assert revoke.status == 404
    status, listed = await api.call("GET", f"/api/patients/{patient}/consents", officer)
    assert (status, [c["status"] for c in listed["items"]]) == (200, ["active"])


async def test_each_consent_lists_the_disclosures_that_rested_on_it(api: Api) -> None:
    org, partner = await api.organization(), await api.organization()
    nurse = await api.person("care_team_member", org)
    officer = await api.person("compliance_officer", org)
    outsider = await api.person("care_team_member", partner)
    patient = await api.patient(nurse)
    used = await api.consent(officer, patient, organizationId=partner, purpose="care_coordination")
    unused = await api.consent(officer, patient, organizationId=await api.organization(), purpose="treatment")
    _, team = await api.call("GET", f"/api/patients/{patient}/care-team", nurse)
    status, _ = await api.call(
        "POST", f"/api/care-teams/{team['id']}/members", nurse, json={"userId": outsider.id}
    )
    assert status == 201
    assert (await api.call("GET", f"/api/patients/{patient}", outsider))[0] == 200
    _, accounting = await api.call("GET", f"/api/patients/{patient}/disclosures", officer)
    expected = [
        (d["auditEventId"], d["recipient"]["userId"])
        for d in accounting["items"]
        if d["consentId"] == used["id"]
    ]
    assert expected
    assert all(d["consentId"] != unused["id"] for d in accounting["items"])

    assert (await sign_in(api, officer)).status == 303
    listing = await api.client.get("/console/consents", params={"patientId": str(patient)})
    html = await listing.text()
    assert f"consent={used['id']}#rested" in html
    assert "Disclosures that rested on" not in html  # only when asked for
    page = await api.client.get(
        "/console/consents", params={"patientId": str(patient), "consent": str(used["id"])}
    )
    html = await page.text()
    assert page.status == 200
    assert f"Disclosures that rested on consent {used['id']}" in html
    section = html.split('id="rested"')[1].split("</section>")[0]
    assert section.count("<tr>") == len(expected) + 1  # the header row and one per disclosure
    for event_id, user_id in expected:
        assert f"<td>{event_id}</td>" in section
        assert f"user {user_id}" in section
    none = await api.client.get(
        "/console/consents", params={"patientId": str(patient), "consent": str(unused["id"])}
    )
    assert "nothing was disclosed under this consent" in await none.text()
    # An unrelated organization's officer: the patient, and so its consents' disclosures, do not exist.
    stranger = await api.person("compliance_officer", await api.organization())
    assert (await sign_in(api, stranger)).status == 303
    theirs = await api.client.get(
        "/console/consents", params={"patientId": str(patient), "consent": str(used["id"])}
    )
    assert theirs.status == 404
    assert "Disclosures that rested on" not in await theirs.text()
