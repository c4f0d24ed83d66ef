"""Reading the audit trail and a patient's disclosures, on fakes: who may ask, what is refused and
put on record, and what query reaches the trail (tests/api/test_audit_logs.py and
test_audit_disclosures.py show what the queries find in PostgreSQL)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from engine.audit_chain import IdentifierHasher
from engine.audit_trail import DISCLOSURE_PERIOD, AuditFilter
from engine.errors import Forbidden, InvalidInput, NotFound
from engine.model import RiskLevel, Role
from engine.workflows.audit import ListDisclosures, SearchAuditEvents, list_disclosures, search_audit_events
from engine.workflows.patients import RegisterPatient, register_patient
from tests.support.fakes import FakeWorld


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.COMPLIANCE_OFFICER])
async def test_auditors_and_officers_search_their_own_organizations_trail(
    world: FakeWorld, role: Role
) -> None:
    org = world.organization()
    actor = world.actor(role, org.id)

    await search_audit_events(world.services, actor, SearchAuditEvents(AuditFilter(org.id), limit=5))

    [(kind, (query, after, limit))] = world.db.audit_queries
    assert (kind, query.organization_id, after, limit) == ("search", org.id, None, 5)
    [event] = world.events("audit.read")
    assert (event.outcome, event.details["organization_id"]) == ("success", org.id)


async def test_another_organizations_trail_is_refused_naming_the_field_and_never_searched(
    world: FakeWorld,
) -> None:
    auditor = world.actor(Role.AUDITOR, world.organization().id)
    other = world.organization()

    with pytest.raises(Forbidden) as raised:
        await search_audit_events(world.services, auditor, SearchAuditEvents(AuditFilter(other.id)))

    assert raised.value.field == "organizationId"
    assert world.db.audit_queries == []
    [event] = world.events("audit.read")
    assert (event.outcome, event.details["organization_id"]) == ("denied", other.id)


@pytest.mark.parametrize("role", [Role.PEER_SUPPORT, Role.CARE_TEAM_MEMBER, Role.ADMIN])
async def test_other_roles_may_not_read_the_trail(world: FakeWorld, role: Role) -> None:
    org = world.organization()
    with pytest.raises(Forbidden):
        await search_audit_events(
            world.services, world.actor(role, org.id), SearchAuditEvents(AuditFilter(org.id))
        )
    assert world.db.audit_queries == []


async def test_an_empty_period_is_refused_before_anything_is_decided(world: FakeWorld) -> None:
    org = world.organization()
    now = world.clock()

    with pytest.raises(InvalidInput) as raised:
        await search_audit_events(
            world.services,
            world.actor(Role.AUDITOR, org.id),
            SearchAuditEvents(AuditFilter(org.id, since=now, until=now)),
        )

    assert [e.field for e in raised.value.errors] == ["from"]
    assert world.events("audit.read") == []


async def test_an_email_is_searched_by_its_keyed_hash_only(world: FakeWorld) -> None:
    hasher = IdentifierHasher(b"k" * 32)
    services = replace(world.services, identifiers=hasher)
    org = world.organization()

    await search_audit_events(
        services, world.actor(Role.AUDITOR, org.id), SearchAuditEvents(AuditFilter(org.id), email="a@b.org")
    )

    [(_, (query, _, _))] = world.db.audit_queries
    assert query.subject_hash == hasher.email("a@b.org")
    assert "a@b.org" not in repr(world.events())


async def test_searching_by_email_without_a_key_names_the_field(world: FakeWorld) -> None:
    org = world.organization()
    with pytest.raises(InvalidInput) as raised:
        await search_audit_events(
            world.services,
            world.actor(Role.AUDITOR, org.id),
            SearchAuditEvents(AuditFilter(org.id), email="a@b"),
        )
    assert [(e.field, e.type) for e in raised.value.errors] == [("email", "unsupported")]


async def test_an_officer_lists_the_disclosures_of_the_last_six_years_by_default(world: FakeWorld) -> None:
    org = world.organization()
    peer = world.actor(Role.PEER_SUPPORT, org.id)
    patient = await register_patient(world.services, peer, RegisterPatient("J", "S", RiskLevel.LOW))
    officer = world.actor(Role.COMPLIANCE_OFFICER, org.id)

    await list_disclosures(world.services, officer, ListDisclosures(patient.id))

    [(kind, (patient_id, since, until, _, _))] = world.db.audit_queries
    assert (kind, patient_id, until, until - since) == (
        "disclosures",
        patient.id,
        world.clock(),
        DISCLOSURE_PERIOD,
    )
    assert [e.outcome for e in world.events("patient.disclosures")] == ["success"]


async def test_disclosures_of_another_organizations_patient_answer_as_a_patient_that_does_not_exist(
    world: FakeWorld,
) -> None:
    peer = world.actor(Role.PEER_SUPPORT, world.organization().id)
    patient = await register_patient(world.services, peer, RegisterPatient("J", "S", RiskLevel.LOW))
    officer = world.actor(Role.COMPLIANCE_OFFICER, world.organization().id)

    with pytest.raises(NotFound) as raised:
        await list_disclosures(world.services, officer, ListDisclosures(patient.id))

    assert raised.value.denial is not None  # the same 404 as a missing id, not a 403
    assert world.db.audit_queries == []  # the trail was never asked
    event, lookup = world.events("patient.disclosures")
    # What the organization sees of it: the lookup a missing id leaves (the truth is hidden from it).
    assert (lookup.event, lookup.resource_type, lookup.resource_id) == ("lookup", "patient", str(patient.id))
    # The record keeps the real decision and its reason; only the client hears "not found".
    assert (event.event, event.outcome, event.patient_id) == ("decision", "denied", patient.id)
    assert event.details["answered"] == "not_found"
    assert event.reason == raised.value.denial.reason == "other_organization"


async def test_disclosures_of_a_patient_that_does_not_exist_are_a_404(world: FakeWorld) -> None:
    officer = world.actor(Role.COMPLIANCE_OFFICER, world.organization().id)
    with pytest.raises(NotFound):
        await list_disclosures(world.services, officer, ListDisclosures(424242))


async def test_a_period_over_six_years_is_refused(world: FakeWorld) -> None:
    officer = world.actor(Role.COMPLIANCE_OFFICER, world.organization().id)
    until = world.clock()
    with pytest.raises(InvalidInput) as raised:
        await list_disclosures(
            world.services,
            officer,
            ListDisclosures(1, since=until - DISCLOSURE_PERIOD - timedelta(days=1), until=until),
        )
    assert [(e.field, e.type) for e in raised.value.errors] == [("from", "period_too_long")]
