"""What a consent means at decision time (issue 9): a read-only consent never allows a change
(defect 9), a stated purpose of use must be one the workflow and the covering consent allow, and the
send path computes break_glass like every other path (defect 3)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import pytest

from tests.api.conftest import Api, Person, new_request_id
from tests.api.messaging_support import send


@dataclass
class Partner:
    peer: Person
    officer: Person
    admin: Person
    outsider: Person
    patient_id: int
    partner_org: int


async def _partner_on_care_team(api: Api, **consent: object) -> Partner:
    """A care-team member of a partner organization, on the patient's care team under a consent."""
    org, partner_org = await api.organization(), await api.organization()
    peer = await api.person("peer_support", org)
    officer = await api.person("compliance_officer", org)
    admin = await api.person("admin", org)
    outsider = await api.person("care_team_member", partner_org)
    patient_id = await api.patient(peer)
    await api.consent(officer, patient_id, organizationId=partner_org, **consent)
    _, team = await api.call("GET", f"/api/patients/{patient_id}/care-team", admin)
    status, body = await api.call(
        "POST", f"/api/care-teams/{team['id']}/members", admin, json={"userId": outsider.id}
    )
    assert status == 201, body
    return Partner(peer, officer, admin, outsider, patient_id, partner_org)


async def test_a_read_only_consent_lets_the_partner_read_but_never_change_the_record(
    api: Api, db: asyncpg.Connection
) -> None:
    p = await _partner_on_care_team(api, scope=["read"])
    assert (await api.call("GET", f"/api/patients/{p.patient_id}", p.outsider))[0] == 200

    status, body = await api.call(
        "PUT", f"/api/patients/{p.patient_id}", p.outsider, json={"riskLevel": "low"}
    )

    assert (status, body["reason"]) == (403, "no_active_consent")
    assert await db.fetchval("SELECT risk_level FROM patients WHERE id = $1", p.patient_id) == "high"


async def test_a_consent_that_names_write_lets_the_partner_change_the_record(api: Api) -> None:
    p = await _partner_on_care_team(api, scope=["read", "write"])

    status, body = await api.call(
        "PUT", f"/api/patients/{p.patient_id}", p.outsider, json={"riskLevel": "low"}
    )

    assert status == 200, body
    assert body["riskLevel"] == "low"


async def test_a_consent_without_a_stated_scope_never_implies_write(api: Api) -> None:
    p = await _partner_on_care_team(api)
    colleague = await api.person("care_team_member", p.partner_org)
    _, team = await api.call("GET", f"/api/patients/{p.patient_id}/care-team", p.admin)

    status, body = await api.call(
        "POST", f"/api/care-teams/{team['id']}/members", p.outsider, json={"userId": colleague.id}
    )

    assert (status, body["reason"]) == (403, "no_active_consent")


@pytest.mark.parametrize(
    ("stated", "expected"),
    [
        pytest.param("treatment", 200, id="the-consents-purpose"),
        pytest.param("care_coordination", 403, id="another-purpose-the-workflow-serves"),
        pytest.param("payment", 403, id="a-purpose-the-workflow-does-not-serve"),
    ],
)
async def test_a_stated_purpose_of_use_must_be_one_the_consent_and_the_workflow_allow(
    api: Api, db: asyncpg.Connection, stated: str, expected: int
) -> None:
    p = await _partner_on_care_team(api, purpose="treatment")
    rid = new_request_id()

    status, body = await api.call(
        "GET",
        f"/api/patients/{p.patient_id}",
        p.outsider,
        headers={"X-Purpose-Of-Use": stated, "X-Request-ID": rid},
    )

    assert status == expected, body
    row = await db.fetchrow(
        "SELECT decision, reason, purpose FROM audit_events"
        " WHERE request_id = $1 AND workflow = 'patient.read'",
        rid,
    )
    assert row["purpose"] == stated
    if expected == 403:
        assert (body["reason"], row["reason"]) == ("purpose_not_permitted", "purpose_not_permitted")


async def test_a_purpose_the_workflow_does_not_serve_is_refused_even_for_ones_own_patient(api: Api) -> None:
    nurse = await api.person("care_team_member", await api.organization())
    patient_id = await api.patient(nurse)

    status, body = await api.call(
        "GET", f"/api/patients/{patient_id}", nurse, headers={"X-Purpose-Of-Use": "payment"}
    )

    assert (status, body["reason"]) == (403, "purpose_not_permitted")


async def test_the_send_path_computes_break_glass_and_flags_the_audit_record(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    peer = await api.person("peer_support", org)
    patient_id = await api.patient(peer)
    status, conversation = await api.call(
        "POST", "/api/conversations", peer, json={"title": "t", "patientId": patient_id, "memberIds": []}
    )
    assert status == 201, conversation
    status, session = await api.call(
        "POST",
        f"/api/patients/{patient_id}/break-glass",
        peer,
        json={"reason": "Patient unresponsive, checking history"},
    )
    assert status == 201, session
    rid = new_request_id()

    status, sent = await send(api, peer, conversation["id"], "checking in", headers={"X-Request-ID": rid})

    assert status == 202, sent
    row = await db.fetchrow(
        "SELECT break_glass, details FROM audit_events WHERE request_id = $1 AND workflow = 'message.send'",
        rid,
    )
    assert row["break_glass"] is True
    assert '"break_glass_session_id": ' + str(session["id"]) in row["details"]
