"""GET /api/patients/{patientId}/disclosures: a patient's accounting of disclosures (HIPAA)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from engine.audit_trail import DISCLOSED, AuditFilter
from handlers.keys import sessions_key
from integrations.audit_export import fhir_audit_event
from integrations.db.audit import stream_search
from tests.support.api import Api, Person

EXTERNAL_PHONE = "+12025550143"


@dataclass
class Disclosed:
    """A patient of one organization, its care team, and a partner organization under consent."""

    org: int
    nurse: Person
    officer: Person
    patient: int
    partner: int
    outsider: Person
    consent_id: int


def path(patient: int) -> str:
    return f"/api/patients/{patient}/disclosures"


@pytest.fixture
async def disclosed(api: Api) -> Disclosed:
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
    return Disclosed(org, nurse, officer, patient, partner, outsider, consent["id"])


async def test_a_read_by_staff_of_another_organization_is_a_disclosure_with_its_consent(
    api: Api, disclosed: Disclosed
) -> None:
    d = disclosed
    status, _ = await api.call("GET", f"/api/patients/{d.patient}", d.outsider)
    assert status == 200

    status, body = await api.call("GET", path(d.patient), d.officer)

    assert status == 200, body
    reads = [x for x in body["items"] if x["workflow"] == "patient.read"]
    assert len(reads) == 1
    [read] = reads
    assert read["actor"] == {
        "kind": "person",
        "userId": d.outsider.id,
        "role": "care_team_member",
        "organizationId": d.partner,
    }
    assert read["recipient"] == read["actor"]
    assert read["consentId"] == d.consent_id
    assert read["purpose"] == "care_coordination"
    assert datetime.fromisoformat(read["occurredAt"]).tzinfo is not None


async def test_adding_staff_of_another_organization_to_the_care_team_discloses_to_them(
    api: Api, disclosed: Disclosed
) -> None:
    d = disclosed
    _, body = await api.call("GET", path(d.patient), d.officer)

    [join] = [x for x in body["items"] if x["workflow"] == "care_team.join"]
    assert join["actor"]["userId"] == d.nurse.id
    assert join["recipient"] == {
        "kind": "person",
        "userId": d.outsider.id,
        "role": "care_team_member",
        "organizationId": d.partner,
    }
    assert join["consentId"] == d.consent_id


async def test_reads_by_the_patients_own_organization_are_not_disclosures(
    api: Api, disclosed: Disclosed
) -> None:
    d = disclosed
    for _ in range(3):
        await api.call("GET", f"/api/patients/{d.patient}", d.nurse)

    _, body = await api.call("GET", path(d.patient), d.officer)

    assert all(x["actor"]["organizationId"] != d.org or x["recipient"]["kind"] == "external" or
               x["recipient"]["organizationId"] != d.org for x in body["items"])  # fmt: skip
    assert d.nurse.id not in [x["recipient"]["userId"] for x in body["items"]]


async def test_a_refused_read_by_another_organization_is_not_a_disclosure(
    api: Api, disclosed: Disclosed
) -> None:
    d = disclosed
    stranger = await api.person("care_team_member", await api.organization())
    status, _ = await api.call("GET", f"/api/patients/{d.patient}", stranger)
    assert status == 404  # no relation to the patient: as if there were none

    _, body = await api.call("GET", path(d.patient), d.officer)

    assert stranger.id not in {x["actor"]["userId"] for x in body["items"]}


async def test_an_external_party_admitted_to_a_conversation_is_a_disclosure(
    api: Api, disclosed: Disclosed
) -> None:
    d = disclosed
    consent = await api.consent(
        d.officer, d.patient, externalParty={"phoneNumber": EXTERNAL_PHONE, "name": "Dr. External"}
    )
    status, body = await api.call(
        "POST",
        "/api/conversations",
        d.nurse,
        json={
            "title": "Coordination",
            "patientId": d.patient,
            "externalMembers": [{"phoneNumber": EXTERNAL_PHONE, "name": "Dr. External"}],
        },
    )
    assert status == 201, body

    _, body = await api.call("GET", path(d.patient), d.officer)

    [external] = [x for x in body["items"] if x["recipient"]["kind"] == "external"]
    assert external["workflow"] == "conversation.join"
    assert external["actor"]["userId"] == d.nurse.id
    assert external["consentId"] == consent["id"]
    assert external["purpose"] == "treatment"
    assert EXTERNAL_PHONE not in str(body)
    assert "Dr. External" not in str(body)


async def test_a_message_to_another_organizations_staff_names_the_consent_in_its_record_report_and_export(
    api: Api, disclosed: Disclosed, db: asyncpg.Connection
) -> None:
    d = disclosed
    colleague = await api.person("care_team_member", d.org)
    members = {"title": "Coordination", "patientId": d.patient, "memberIds": [d.outsider.id, colleague.id]}
    status, conversation = await api.call("POST", "/api/conversations", d.nurse, json=members)
    assert status == 201, conversation
    status, own = await api.call(
        "POST", "/api/conversations", d.nurse, json={**members, "memberIds": [colleague.id]}
    )
    assert status == 201, own
    sent_ids = []
    for conversation_id in (conversation["id"], own["id"]):
        status, sent = await api.call(
            "POST",
            "/api/conversations/send-message",
            d.nurse,
            json={"conversationId": conversation_id, "message": "Dose changed"},
        )
        assert status == 202, sent
        sent_ids.append(sent["id"])

    # the send's own record names the consent and the organization it rests on
    decisions = await db.fetch(
        "SELECT resource_id, details FROM audit_events WHERE workflow = 'message.send'"
        " AND event = 'decision' AND patient_id = $1 ORDER BY id",
        d.patient,
    )
    named = [
        (r["resource_id"], json.loads(r["details"]).get("disclosure_consent_ids"),
         json.loads(r["details"]).get("disclosed_to_organizations"))
        for r in decisions
    ]  # fmt: skip
    assert named == [
        (str(conversation["id"]), str(d.consent_id), str(d.partner)),
        (str(own["id"]), None, None),
    ]
    # the accounting of disclosures lists it: to the partner's staff, under the consent
    _, body = await api.call("GET", path(d.patient), d.officer)
    [item] = [x for x in body["items"] if x["workflow"] == "message.send"]
    assert item["recipient"] == {
        "kind": "organization",
        "userId": None,
        "role": None,
        "organizationId": d.partner,
    }
    assert (item["actor"]["userId"], item["consentId"], item["purpose"]) == (
        d.nurse.id,
        d.consent_id,
        "care_coordination",
    )
    # the FHIR export references the consent from the disclosure's AuditEvent
    async with api.app[sessions_key]() as session:
        found = AuditFilter(organization_id=d.org, patient_id=d.patient, workflow="message.send")
        records = [r async for r in stream_search(await session.connection(), found)]
    [disclosure] = [r for r in records if r.event.event == DISCLOSED]
    assert (disclosure.event.resource_id, disclosure.event.details["message_id"]) == (
        str(conversation["id"]),
        sent_ids[0],
    )
    fhir = fhir_audit_event(disclosure)
    assert {"reference": f"Consent/{d.consent_id}"} in [e.get("what") for e in fhir["entity"]]


async def test_the_period_defaults_to_six_years_and_bounds_what_is_listed(
    api: Api, disclosed: Disclosed
) -> None:
    d = disclosed
    await api.call("GET", f"/api/patients/{d.patient}", d.outsider)
    now = datetime.now(UTC)
    past = {"from": (now - timedelta(days=30)).isoformat(), "to": (now - timedelta(days=1)).isoformat()}

    _, everything = await api.call("GET", path(d.patient), d.officer)
    _, earlier = await api.call("GET", path(d.patient), d.officer, params=past)

    assert everything["items"]
    assert earlier["items"] == []


async def test_disclosures_page_with_a_cursor(api: Api, disclosed: Disclosed) -> None:
    d = disclosed
    for _ in range(3):
        await api.call("GET", f"/api/patients/{d.patient}", d.outsider)
    _, whole = await api.call("GET", path(d.patient), d.officer)

    ids: list[int] = []
    params: dict[str, Any] = {"limit": "2"}
    while True:
        status, page = await api.call("GET", path(d.patient), d.officer, params=params)
        assert status == 200
        ids += [x["auditEventId"] for x in page["items"]]
        if page["nextCursor"] is None:
            break
        params["cursor"] = str(page["nextCursor"])
    assert ids == [x["auditEventId"] for x in whole["items"]]
    assert len(ids) >= 4


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param(
            {"from": "2018-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from", id="over-six-years"
        ),
        pytest.param(
            {"from": "2026-01-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"}, "from", id="from-after-to"
        ),
        pytest.param({"from": "last year"}, "from", id="from-not-a-date"),
        pytest.param({"to": "2026-01-01"}, "to", id="to-without-time-and-offset"),
        pytest.param({"limit": "5000"}, "limit", id="limit-too-large"),
        pytest.param({"who": "me"}, "who", id="unknown-parameter"),
    ],
)
async def test_a_bad_period_is_a_422_naming_the_field(
    api: Api, disclosed: Disclosed, params: dict[str, str], field: str
) -> None:
    resp = await api.client.get(path(disclosed.patient), params=params, headers=disclosed.officer.auth)
    body = await resp.json(content_type=None)
    assert resp.status == 422, body
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert field in {e["field"] for e in body["errors"]}


async def test_exactly_six_years_is_accepted(api: Api, disclosed: Disclosed) -> None:
    params = {"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    status, body = await api.call("GET", path(disclosed.patient), disclosed.officer, params=params)
    assert status == 200, body


async def test_a_compliance_officer_of_another_organization_is_refused_and_audited(
    api: Api, db: asyncpg.Connection, disclosed: Disclosed
) -> None:
    other_officer = await api.person("compliance_officer", disclosed.partner)

    status, body = await api.call(
        "GET", path(disclosed.patient), other_officer, headers={"X-Request-ID": "test-disclosures-denied"}
    )

    assert status == 403
    assert body["reason"] == "other_organization"
    row = await db.fetchrow(
        "SELECT * FROM audit_events WHERE request_id = $1 AND workflow = 'patient.disclosures'",
        "test-disclosures-denied",
    )
    assert (row["decision"], row["outcome"], row["patient_id"]) == ("deny", "denied", disclosed.patient)


@pytest.mark.parametrize("role", ["care_team_member", "auditor", "admin"])
async def test_other_roles_may_not_read_the_accounting(api: Api, disclosed: Disclosed, role: str) -> None:
    person = disclosed.nurse if role == "care_team_member" else await api.person(role, disclosed.org)
    status, body = await api.call("GET", path(disclosed.patient), person)
    assert status == 403
    assert body["reason"] == "role_not_permitted"


async def test_the_accounting_of_a_patient_that_does_not_exist_is_a_404(
    api: Api, disclosed: Disclosed
) -> None:
    status, body = await api.call("GET", path(2_000_000_000), disclosed.officer)
    assert status == 404
    assert body["code"] == "not_found"
