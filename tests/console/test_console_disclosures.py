"""A patient's accounting of disclosures in the console over plain HTTP: the API's own workflow
(``patient.disclosures``) and query model, shown as a printable table."""

from __future__ import annotations

import re

from tests.support.api import Api, Person
from tests.support.console import audit_records, sign_in


async def a_disclosure(api: Api) -> tuple[Person, Person, int, int]:
    """Staff of a partner organization, on the care team under a consent, read the patient's record.
    Returns (officer, outsider, patient, consent)."""
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    officer = await api.person("compliance_officer", org)
    patient = await api.patient(nurse)
    partner = await api.organization()
    outsider = await api.person("care_team_member", partner)
    consent = await api.consent(officer, patient, organizationId=partner, purpose="care_coordination")
    _, team = await api.call("GET", f"/api/patients/{patient}/care-team", nurse)
    status, body = await api.call(
        "POST", f"/api/care-teams/{team['id']}/members", nurse, json={"userId": outsider.id}
    )
    assert status == 201, body
    assert (await api.call("GET", f"/api/patients/{patient}", outsider))[0] == 200
    return officer, outsider, patient, int(consent["id"])


def rows(html: str) -> list[list[str]]:
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


async def test_the_accounting_lists_what_the_api_lists_for_the_patient(api: Api) -> None:
    officer, outsider, patient, consent = await a_disclosure(api)
    status, listed = await api.call("GET", f"/api/patients/{patient}/disclosures", officer)
    assert status == 200
    assert (await sign_in(api, officer)).status == 303

    page = await api.client.get("/console/disclosures", params={"patientId": str(patient)})
    html = await page.text()

    assert page.status == 200
    assert f"Accounting of disclosures for patient {patient}" in html
    shown = rows(html)
    assert [r[-1] for r in shown] == [str(d["auditEventId"]) for d in listed["items"]]
    [read] = [r for r in shown if r[1] == "patient.read"]
    assert read[2] == f"user {outsider.id} (care team member)"
    assert read[5:7] == [str(consent), "care_coordination"]
    assert 'class="print-table"' in html
    records = await audit_records(api, officer, workflow="patient.disclosures", actorId=officer.id)
    assert [r["decision"] for r in records] == ["allow", "allow"]  # the API's call, then the page's


async def test_bad_fields_are_named_next_to_them_and_another_organizations_patient_is_not_found(
    api: Api,
) -> None:
    officer, _, patient, _ = await a_disclosure(api)
    stranger = await api.person("compliance_officer", await api.organization())
    assert (await sign_in(api, officer)).status == 303
    bad = await api.client.get("/console/disclosures", params={"patientId": "x¹"})
    assert bad.status == 422
    assert 'id="e-patientId"' in await bad.text()
    backwards = await api.client.get(
        "/console/disclosures",
        params={"patientId": str(patient), "from": "2026-01-02T00:00", "to": "2026-01-01T00:00"},
    )
    assert backwards.status == 422
    assert 'id="e-from"' in await backwards.text()
    assert (await sign_in(api, stranger)).status == 303
    elsewhere = await api.client.get("/console/disclosures", params={"patientId": str(patient)})
    assert elsewhere.status == 404
    assert "No patient with this id" in await elsewhere.text()


async def test_an_auditor_may_not_open_an_accounting(api: Api) -> None:
    officer, _, patient, _ = await a_disclosure(api)
    auditor = await api.person("auditor", officer.organization_id)
    assert (await sign_in(api, auditor)).status == 303
    page = await api.client.get("/console/disclosures", params={"patientId": str(patient)})
    assert page.status == 403
    assert "role_not_permitted" in await page.text()
