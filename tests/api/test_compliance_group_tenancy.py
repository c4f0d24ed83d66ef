"""Compliance groups belong to an organization; a consent may name only one's own or one shared with
one's organization by name (issue 9, items 2 and 11)."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.api.conftest import Api, Person, new_request_id

GROUPS = "/api/compliance-groups"


def _without_request_id(problem: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in problem.items() if k != "requestId"}


async def _group(api: Api, officer: Person, name: str, members: list[int]) -> dict[str, Any]:
    status, body = await api.call("POST", GROUPS, officer, json={"name": name, "organizationIds": members})
    assert status == 201, body
    return body  # type: ignore[no-any-return]


async def _consents(db: asyncpg.Connection, patient_id: int) -> int:
    return int(await db.fetchval("SELECT count(*) FROM consents WHERE patient_id = $1", patient_id))


@pytest.fixture
async def clinics(api: Api) -> dict[str, Any]:
    """Organizations A and B, each with a compliance officer; a patient of A."""
    a, b = await api.organization("Riverside Clinic " + new_request_id()), await api.organization()
    peer = await api.person("peer_support", a)
    return {
        "a": a,
        "b": b,
        "officer_a": await api.person("compliance_officer", a),
        "officer_b": await api.person("compliance_officer", b),
        "patient": await api.patient(peer),
    }


async def test_a_group_another_organization_named_like_yours_cannot_be_consented_to(
    api: Api, db: asyncpg.Connection, clinics: dict[str, Any]
) -> None:
    c = clinics
    lookalike = await _group(api, c["officer_b"], "Riverside Clinic internal staff only", [c["b"]])
    before = await _consents(db, c["patient"])
    rid = new_request_id()

    status, body = await api.call(
        "POST",
        "/api/consents",
        c["officer_a"],
        json={"patientId": c["patient"], "purpose": "treatment", "complianceGroupId": lookalike["id"]},
        headers={"X-Request-ID": rid},
    )
    _, nonexistent = await api.call(
        "POST",
        "/api/consents",
        c["officer_a"],
        json={"patientId": c["patient"], "purpose": "treatment", "complianceGroupId": 2**31 - 1},
    )

    # Answered as a group that does not exist: B's group is none of A's business.
    assert status == 422, body
    assert _without_request_id(body) == _without_request_id(nonexistent)
    assert [(e["field"], e["type"]) for e in body["errors"]] == [("complianceGroupId", "not_found")]
    assert await _consents(db, c["patient"]) == before
    rows = await db.fetch(
        "SELECT workflow, decision, outcome, reason FROM audit_events WHERE request_id = $1 ORDER BY id", rid
    )
    assert [(r["workflow"], r["decision"], r["outcome"]) for r in rows] == [
        ("consent.create", "allow", "failure"),  # ended as answered, as for a group that does not exist
        ("compliance_group.use", "deny", "denied"),
    ]
    assert rows[1]["reason"] in ("other_organization", "not_shared")  # the real reason stays on record


async def test_a_group_shared_by_name_is_listed_to_that_organizations_officers_and_may_be_consented_to(
    api: Api, db: asyncpg.Connection, clinics: dict[str, Any]
) -> None:
    c = clinics
    network = await _group(api, c["officer_b"], "Regional crisis network", [c["b"]])
    admin_a = await api.person("admin", c["a"])

    async def listed(who: Person) -> set[int]:
        status, body = await api.call("GET", GROUPS, who, params={"cursor": str(network["id"] - 1)})
        assert status == 200, body
        return {g["id"] for g in body["items"]}

    assert network["id"] not in await listed(c["officer_a"])

    status, shared = await api.call(
        "POST", f"{GROUPS}/{network['id']}/shares", c["officer_b"], json={"organizationId": c["a"]}
    )

    assert status == 200, shared
    assert (shared["organizationId"], shared["sharedWith"]) == (c["b"], [c["a"]])
    assert network["id"] in await listed(c["officer_a"])
    other = await api.organization()
    await api.call("POST", f"{GROUPS}/{network['id']}/shares", c["officer_b"], json={"organizationId": other})
    _, seen = await api.call(
        "GET", GROUPS, c["officer_a"], params={"cursor": str(network["id"] - 1), "limit": "1"}
    )
    assert seen["items"][0]["sharedWith"] == [c["a"]]  # not whom else B shared it with
    assert network["id"] not in await listed(admin_a)  # admins see their own organization's groups only
    consent = await api.consent(c["officer_a"], c["patient"], complianceGroupId=network["id"])
    assert consent["complianceGroupId"] == network["id"]
    [use] = await db.fetch(
        "SELECT decision, matched_rule FROM audit_events WHERE workflow = 'compliance_group.use'"
        " AND actor_id = $1",
        c["officer_a"].id,
    )
    assert use["decision"] == "allow"
    assert "compliance_group.use, shared" in use["matched_rule"]


async def test_only_the_owner_shares_a_group_and_a_stranger_learns_nothing(
    api: Api, db: asyncpg.Connection, clinics: dict[str, Any]
) -> None:
    c = clinics
    network = await _group(api, c["officer_b"], "Network", [c["b"]])
    await api.call(
        "POST", f"{GROUPS}/{network['id']}/shares", c["officer_b"], json={"organizationId": c["a"]}
    )
    stranger = await api.person("compliance_officer", await api.organization())
    share = {"organizationId": c["a"]}

    # Shared with A: A's officer knows the group exists, and is told why not.
    status, body = await api.call("POST", f"{GROUPS}/{network['id']}/shares", c["officer_a"], json=share)
    assert (status, body["reason"]) == (403, "other_organization")
    # Neither owned by nor shared with the stranger's organization: exactly a group that does not exist.
    status, body = await api.call("POST", f"{GROUPS}/{network['id']}/shares", stranger, json=share)
    _, nonexistent = await api.call("POST", f"{GROUPS}/{2**31 - 1}/shares", stranger, json=share)
    assert status == 404
    assert _without_request_id(body) == _without_request_id(nonexistent)
    # The owner names an organization that does not exist.
    status, body = await api.call(
        "POST", f"{GROUPS}/{network['id']}/shares", c["officer_b"], json={"organizationId": 2**31 - 1}
    )
    assert (status, [e["field"] for e in body["errors"]]) == (422, ["organizationId"])
    shares = await db.fetch(
        "SELECT organization_id FROM compliance_group_shares WHERE group_id = $1", network["id"]
    )
    assert [r["organization_id"] for r in shares] == [c["a"]]
