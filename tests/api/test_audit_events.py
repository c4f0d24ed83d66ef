"""GET /api/audit-events: auditors and compliance officers search their organization's audit trail."""

from __future__ import annotations

import json
import secrets
from typing import Any

import asyncpg
import pytest

from handlers.keys import audit_sealer_key
from tests.support.api import PASSWORD, Api, Person, new_request_id

EVENTS = "/api/audit-events"


async def _clinic(api: Api) -> tuple[int, Person, Person, int]:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    auditor = await api.person("auditor", org)
    patient = await api.patient(nurse)
    return org, nurse, auditor, patient


async def _search(api: Api, who: Person, **params: Any) -> tuple[int, Any]:
    return await api.call("GET", EVENTS, who, params={k: str(v) for k, v in params.items()})


@pytest.mark.parametrize("role", ["auditor", "compliance_officer"])
async def test_auditors_and_compliance_officers_find_who_read_a_patient(api: Api, role: str) -> None:
    org, nurse, _, patient = await _clinic(api)
    reader = await api.person(role, org)
    rid = new_request_id()
    await api.call("GET", f"/api/patients/{patient}", nurse, headers={"X-Request-ID": rid})

    status, body = await _search(api, reader, patientId=patient, workflow="patient.read")

    assert status == 200, body
    [event] = [e for e in body["items"] if e["requestId"] == rid]
    assert event["actorId"] == nurse.id
    assert event["actorRole"] == "care_team_member"
    assert event["organizationId"] == org
    assert event["decision"] == "allow"
    assert event["outcome"] == "success"
    assert event["matchedRule"].startswith("roles.csv:")
    assert event["policyVersion"]
    assert event["sourceAddress"] == "127.0.0.1"
    assert event["breakGlass"] is False
    assert body["nextCursor"] is None


@pytest.mark.parametrize("role", ["peer_support", "care_team_member", "admin"])
async def test_other_roles_may_not_search_the_audit_trail(
    api: Api, db: asyncpg.Connection, role: str
) -> None:
    org = await api.organization()
    person = await api.person(role, org)
    rid = new_request_id()

    status, body = await api.call("GET", EVENTS, person, headers={"X-Request-ID": rid})

    assert status == 403
    assert body["reason"] == "role_not_permitted"
    assert "field" not in body  # the role is the cause, not a parameter
    row = await db.fetchrow("SELECT * FROM audit_events WHERE request_id = $1", rid)
    assert (row["workflow"], row["outcome"]) == ("audit.read", "denied")


async def test_an_auditor_may_not_search_another_organizations_trail_and_is_told_which_field(
    api: Api, db: asyncpg.Connection
) -> None:
    _, _, auditor, _ = await _clinic(api)
    other = await api.organization()
    rid = new_request_id()

    status, body = await api.call(
        "GET", EVENTS, auditor, params={"organizationId": str(other)}, headers={"X-Request-ID": rid}
    )

    assert status == 403
    assert (body["reason"], body["field"]) == ("other_organization", "organizationId")
    row = await db.fetchrow("SELECT * FROM audit_events WHERE request_id = $1", rid)
    assert (row["workflow"], row["decision"], row["outcome"]) == ("audit.read", "deny", "denied")


@pytest.mark.parametrize("path", [EVENTS, "/api/patients/1/disclosures"])
@pytest.mark.parametrize("written", ["0.5", "1700000000", "2026-12-06"])
async def test_a_time_filter_must_be_written_as_a_date_and_time_with_an_offset(
    api: Api, path: str, written: str
) -> None:
    """Not guessed at: lax parsing read ``0.5`` as half a second after 1970 and a date as midnight."""
    _, _, auditor, _ = await _clinic(api)

    status, body = await api.call("GET", path, auditor, params={"from": written})

    assert status == 422, body
    assert [e["field"] for e in body["errors"]] == ["from"]


async def test_an_auditor_never_sees_another_organizations_events(api: Api) -> None:
    _, _, auditor, _ = await _clinic(api)
    _, other_nurse, _, other_patient = await _clinic(api)
    await api.call("GET", f"/api/patients/{other_patient}", other_nurse)

    status, body = await _search(api, auditor, actorId=other_nurse.id)
    assert status == 200
    assert body["items"] == []
    status, body = await _search(api, auditor, patientId=other_patient)
    assert body["items"] == []


async def test_an_auditor_sees_staff_of_another_organization_reading_their_patient_under_consent(
    api: Api,
) -> None:
    org, nurse, auditor, patient = await _clinic(api)
    officer = await api.person("compliance_officer", org)
    partner = await api.organization()
    outsider = await api.person("care_team_member", partner)
    consent = await api.consent(officer, patient, organizationId=partner)
    status, team = await api.call("GET", f"/api/patients/{patient}/care-team", nurse)
    await api.call("POST", f"/api/care-teams/{team['id']}/members", nurse, json={"userId": outsider.id})
    rid = new_request_id()
    status, _ = await api.call("GET", f"/api/patients/{patient}", outsider, headers={"X-Request-ID": rid})
    assert status == 200

    status, body = await _search(api, auditor, actorId=outsider.id, workflow="patient.read")

    [event] = [e for e in body["items"] if e["requestId"] == rid]
    assert event["organizationId"] == partner
    assert event["details"]["consentId"] == consent["id"]


async def test_filters_combine_decision_time_range_and_break_glass(api: Api) -> None:
    org, _, auditor, patient = await _clinic(api)
    peer = await api.person("peer_support", org)
    status, _ = await api.call("GET", f"/api/patients/{patient}", peer)
    assert status == 403

    status, denied = await _search(api, auditor, decision="deny", patientId=patient)
    assert status == 200
    assert [(e["actorId"], e["reason"]) for e in denied["items"]] == [(peer.id, "not_on_care_team")]

    # Searching is audited too (workflow audit.read): look at the reads only. Compare ids: the
    # sealer may link a record into the chain (chainSeq, chainHash) between two searches.
    reads: dict[str, Any] = {"patientId": patient, "workflow": "patient.read"}
    _, everything = await _search(api, auditor, **reads)
    ids = [e["id"] for e in everything["items"]]
    first = everything["items"][0]["occurredAt"]
    _, before = await _search(api, auditor, **reads, to=first)
    assert before["items"] == []
    _, since = await _search(api, auditor, **reads, **{"from": first})
    assert [e["id"] for e in since["items"]] == ids
    _, glass = await _search(api, auditor, **reads, breakGlass="true")
    assert glass["items"] == []
    _, no_glass = await _search(api, auditor, **reads, breakGlass="false")
    assert [e["id"] for e in no_glass["items"]] == ids


async def test_filters_by_reason_and_by_purpose_of_use(api: Api) -> None:
    org, nurse, auditor, patient = await _clinic(api)
    peer = await api.person("peer_support", org)
    assert (await api.call("GET", f"/api/patients/{patient}", peer))[0] == 403
    stated = {"X-Purpose-Of-Use": "care_coordination"}
    assert (await api.call("GET", f"/api/patients/{patient}", nurse, headers=stated))[0] == 200
    assert (await api.call("GET", f"/api/patients/{patient}", nurse))[0] == 200

    status, refused = await _search(api, auditor, patientId=patient, reason="not_on_care_team")
    assert status == 200
    assert [(e["actorId"], e["decision"]) for e in refused["items"]] == [(peer.id, "deny")]
    _, none = await _search(api, auditor, patientId=patient, reason="no_active_consent")
    assert none["items"] == []

    _, coordinated = await _search(api, auditor, patientId=patient, purpose="care_coordination")
    assert [(e["actorId"], e["workflow"], e["purpose"]) for e in coordinated["items"]] == [
        (nurse.id, "patient.read", "care_coordination")
    ]
    _, paid = await _search(api, auditor, patientId=patient, purpose="payment")
    assert paid["items"] == []


async def test_pages_follow_the_cursor_in_a_stable_id_order_without_gaps_or_repeats(api: Api) -> None:
    _, nurse, auditor, patient = await _clinic(api)
    for _ in range(6):
        await api.call("GET", f"/api/patients/{patient}", nurse)
    _, whole = await _search(api, auditor, actorId=nurse.id, limit=100)

    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"actorId": nurse.id, "limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        status, page = await _search(api, auditor, **params)
        assert status == 200
        assert len(page["items"]) <= 2
        seen += [e["id"] for e in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [e["id"] for e in whole["items"]]
    assert seen == sorted(seen)
    assert len(seen) >= 7  # the registration and six reads: four pages, the last one short


async def test_a_cursor_past_two_to_the_31_is_a_page_as_the_ids_of_a_years_old_trail_are(api: Api) -> None:
    """Audit ids are bigints: a trail past 2**31 - 1 records pages on past it (no record here is)."""
    org, nurse, auditor, patient = await _clinic(api)
    officer = await api.person("compliance_officer", org)

    status, page = await _search(api, auditor, actorId=nurse.id, cursor=2**31)
    disclosures = f"/api/patients/{patient}/disclosures"
    disclosed = await api.call("GET", disclosures, officer, params={"cursor": str(2**62)})

    assert (status, page["items"], page["nextCursor"]) == (200, [], None)
    assert disclosed[0] == 200, disclosed


async def test_sealed_events_show_their_place_in_the_hash_chain(api: Api) -> None:
    _, nurse, auditor, patient = await _clinic(api)
    await api.call("GET", f"/api/patients/{patient}", nurse)
    await api.app[audit_sealer_key].seal_pending()

    _, body = await _search(api, auditor, patientId=patient)

    assert body["items"]
    assert all(isinstance(e["chainSeq"], int) and len(e["chainHash"]) == 64 for e in body["items"])


async def test_a_failed_login_is_found_by_email_though_the_email_is_never_stored(
    api: Api, db: asyncpg.Connection
) -> None:
    _, nurse, auditor, _ = await _clinic(api)
    rid = new_request_id()
    status, _ = await api.call(
        "POST", "/api/auth/login", json={"email": nurse.email, "password": "wrong-" + PASSWORD},
        headers={"X-Request-ID": rid},
    )  # fmt: skip
    assert status == 401

    status, body = await _search(api, auditor, email=nurse.email.upper(), workflow="auth.login")

    assert status == 200
    assert rid in [e["requestId"] for e in body["items"]]
    row = await db.fetchrow("SELECT * FROM audit_events WHERE request_id = $1", rid)
    assert len(row["subject_hash"] or "") == 64
    assert nurse.email not in str(dict(row))


async def test_a_failed_login_for_an_unknown_email_is_stored_as_a_keyed_hash(
    api: Api, db: asyncpg.Connection
) -> None:
    email = f"nobody.{secrets.token_hex(4)}@example.org"
    rid = new_request_id()
    await api.call(
        "POST",
        "/api/auth/login",
        json={"email": email, "password": "whatever1"},
        headers={"X-Request-ID": rid},
    )
    row = await db.fetchrow("SELECT * FROM audit_events WHERE request_id = $1", rid)
    assert row["subject_hash"] == api.services.identifiers.email(email)
    assert email not in str(dict(row))


async def test_no_auditor_tells_an_account_of_another_organization_from_an_email_without_one(
    api: Api, db: asyncpg.Connection
) -> None:
    # A failed login for an email without an account belongs to no organization: if one showed to
    # every auditor who searched the address, nothing showing would mean an account elsewhere.
    _, other_nurse, _, _ = await _clinic(api)
    _, _, auditor, _ = await _clinic(api)
    nobody = f"nobody.{secrets.token_hex(4)}@example.org"
    seen = {}
    for email in (other_nurse.email, nobody):
        rid = new_request_id()
        await api.call(
            "POST",
            "/api/auth/login",
            json={"email": email, "password": "wrong-" + PASSWORD},
            headers={"X-Request-ID": rid},
        )
        status, found = await _search(api, auditor, email=email, workflow="auth.login")
        assert status == 200
        seen[email] = found["items"]
        assert await db.fetchval("SELECT reason FROM audit_events WHERE request_id = $1", rid)  # stored

    assert seen == {other_nurse.email: [], nobody: []}


BAD_FILTERS = [
    pytest.param({"from": "yesterday"}, "from", id="from-not-a-date"),
    pytest.param({"from": "2026-01-01T00:00:00"}, "from", id="from-without-offset"),
    pytest.param({"to": "2026-13-01T00:00:00Z"}, "to", id="to-impossible"),
    pytest.param({"decision": "maybe"}, "decision", id="decision-unknown"),
    pytest.param({"outcome": "ok"}, "outcome", id="outcome-unknown"),
    pytest.param({"actorId": "abc"}, "actorId", id="actor-not-an-id"),
    pytest.param({"patientId": "0"}, "patientId", id="patient-zero"),
    pytest.param({"cursor": "-1"}, "cursor", id="cursor-negative"),
    pytest.param({"cursor": str(2**63)}, "cursor", id="cursor-past-bigint"),
    pytest.param({"limit": "0"}, "limit", id="limit-zero"),
    pytest.param({"breakGlass": "perhaps"}, "breakGlass", id="break-glass-not-a-boolean"),
    pytest.param({"workflow": "DROP TABLE"}, "workflow", id="workflow-not-a-name"),
    pytest.param({"email": "not-an-email"}, "email", id="email-not-an-address"),
    pytest.param({"reason": "Not A Code"}, "reason", id="reason-not-a-code"),
    pytest.param({"reason": "x" * 65}, "reason", id="reason-too-long"),
    pytest.param({"purpose": "curiosity"}, "purpose", id="purpose-unknown"),
    pytest.param({"actor": "1"}, "actor", id="unknown-parameter"),
    pytest.param({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from", id="from-after-to"),
]


@pytest.mark.parametrize(("params", "field"), BAD_FILTERS)
async def test_a_bad_filter_is_a_422_problem_naming_it(api: Api, params: dict[str, str], field: str) -> None:
    _, _, auditor, _ = await _clinic(api)

    resp = await api.client.get(EVENTS, params=params, headers=auditor.auth)
    body = await resp.json(content_type=None)

    assert resp.status == 422, body
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert field in {e["field"] for e in body["errors"]}


# --- refused tokens are on the audit record -------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        pytest.param({}, "token_missing", id="no-token"),
        pytest.param({"Authorization": "Bearer not.a.token"}, "token_invalid", id="garbage-token"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, "token_missing", id="wrong-scheme"),
    ],
)
async def test_a_refused_token_is_audited_with_the_route_it_tried(
    api: Api, db: asyncpg.Connection, headers: dict[str, str], reason: str
) -> None:
    rid = new_request_id()
    status, _ = await api.call("GET", "/api/patients/7", headers={**headers, "X-Request-ID": rid})

    assert status == 401
    await api.flush_rejections()
    row = await db.fetchrow("SELECT * FROM audit_events WHERE request_id = $1", rid)
    assert (row["event"], row["workflow"], row["outcome"], row["reason"]) == (
        "auth.token_rejected",
        "auth.token",
        "denied",
        reason,
    )
    assert row["actor_id"] is None
    assert row["source_address"] == "127.0.0.1"
    assert json.loads(row["details"]) == {
        "route": "/api/patients/{id}",
        "count": 1,
        reason: 1,
        "window_seconds": 60,
        "last_at": row["occurred_at"].isoformat(),
    }


async def test_a_token_of_a_deactivated_account_is_audited_against_the_account(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    await db.execute("UPDATE users SET is_active = false WHERE id = $1", nurse.id)
    rid = new_request_id()

    status, _ = await api.call("GET", "/api/auth/profile", nurse, headers={"X-Request-ID": rid})

    assert status == 401
    await api.flush_rejections()
    row = await db.fetchrow("SELECT * FROM audit_events WHERE request_id = $1", rid)
    assert (row["workflow"], row["reason"], row["actor_id"]) == (
        "auth.token",
        "account_not_current",
        nurse.id,
    )
