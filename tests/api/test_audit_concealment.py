"""What an organization's own audit trail shows of its staff's probe of another organization's record:
what it shows of a probe of an id that does not exist, whatever it is searched or counted by. The
stored record keeps the real decision, which the organization whose patient it concerns sees.
(tests/api/test_cross_tenant_matrix.py compares the two trails for every id-taking endpoint.)"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import asyncpg

from tests.support.api import Api, Person
from tests.support.console import sign_in


async def _probed(api: Api) -> tuple[Person, Person, Person, int, int]:
    """Organization A's message to its patient, and B's compliance officer who tried to recall it
    (answered 404, as for a message that does not exist); B's and A's auditors."""
    a_org, b_org = await api.organization(), await api.organization()
    peer = await api.person("peer_support", a_org)
    colleague = await api.person("care_team_member", a_org)
    patient = await api.patient(peer)
    conversation = await api.conversation(peer, patient, colleague.id)
    status, message = await api.call(
        "POST",
        "/api/conversations/send-message",
        peer,
        json={"conversationId": conversation["id"], "message": "hi"},
    )
    assert status == 202, message
    officer = await api.person("compliance_officer", b_org)
    status, body = await api.call(
        "POST", f"/api/messages/{message['id']}/recall", officer, json={"reason": "x"}
    )
    assert status == 404, body
    b_auditor, a_auditor = await api.person("auditor", b_org), await api.person("auditor", a_org)
    return officer, b_auditor, a_auditor, patient, message["id"]


async def _search(api: Api, who: Person, **params: Any) -> list[dict[str, Any]]:
    status, page = await api.call(
        "GET", "/api/audit-events", who, params={k: str(v) for k, v in params.items()}
    )
    assert status == 200, page
    return list(page["items"])


async def test_the_probing_organization_finds_only_the_lookup_of_a_missing_message(api: Api) -> None:
    officer, b_auditor, _, patient, message_id = await _probed(api)

    mine = await _search(api, b_auditor, actorId=officer.id, workflow="message.recall")

    assert [(i["event"], i["resourceId"], i["patientId"], i["reason"], i["details"]) for i in mine] == [
        ("lookup", str(message_id), None, "not_found", {"endedBy": "not_found"})
    ]
    assert await _search(api, b_auditor, patientId=patient) == []
    assert await _search(api, b_auditor, reason="other_organization") == []
    assert await _search(api, b_auditor, actorId=officer.id, decision="deny") == []


async def test_the_organization_whose_patient_it_concerns_sees_the_real_decision(
    api: Api, db: asyncpg.Connection
) -> None:
    officer, _, a_auditor, patient, _ = await _probed(api)

    theirs = await _search(api, a_auditor, patientId=patient, workflow="message.recall")

    assert [(i["actorId"], i["decision"], i["reason"], i["details"]["answered"]) for i in theirs] == [
        (officer.id, "deny", "other_organization", "not_found")
    ]
    stored = await db.fetch(
        "SELECT event, patient_id, details FROM audit_events WHERE actor_id = $1 ORDER BY id", officer.id
    )
    assert [(r["event"], r["patient_id"]) for r in stored] == [("decision", patient), ("lookup", None)]
    assert json.loads(stored[0]["details"])["conversation_id"]  # the truth is kept, not rewritten


async def test_the_probing_organizations_charts_count_no_decision_it_was_not_told(api: Api) -> None:
    _, b_auditor, _, _, _ = await _probed(api)
    assert (await sign_in(api, b_auditor)).status == 303
    today = datetime.now(UTC).date().isoformat()

    page = await api.client.get("/console/audit/charts", params={"from": today, "to": today, "per": "day"})

    html = await page.text()
    assert page.status == 200, html
    assert "other_organization" not in html
