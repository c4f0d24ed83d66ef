"""The chain's workflows and the audit exports on fakes: who may see the chain, verify it and sign
an anchor, what each leaves on the record (a verification's result too), and what an export asks
of the record stream (tests/console/test_console_audit_chain.py runs them on PostgreSQL)."""

from __future__ import annotations

import pytest

from engine.audit_chain import Problem
from engine.audit_trail import AuditFilter
from engine.errors import Forbidden, NotFound
from engine.model import Role
from engine.workflows import audit_chain
from engine.workflows.audit import SearchAuditEvents, export_audit_events, read_audit_event
from tests.support.fakes import FakeAuditChain, FakeWorld

ALLOWED = [Role.AUDITOR, Role.COMPLIANCE_OFFICER]
REFUSED = [Role.PEER_SUPPORT, Role.CARE_TEAM_MEMBER, Role.ADMIN]


@pytest.fixture
def chain(world: FakeWorld) -> FakeAuditChain:
    return FakeAuditChain(world.clock)


@pytest.mark.parametrize("role", ALLOWED)
async def test_a_verification_is_decided_started_and_its_result_recorded(
    world: FakeWorld, chain: FakeAuditChain, role: Role
) -> None:
    actor = world.actor(role, world.organization().id)

    run = await audit_chain.start_verification(world.services, actor, chain)

    assert chain.started == [run.id]
    [decision] = world.events("audit.verify")
    assert (decision.decision, decision.resource_id, decision.details["joined"]) == ("allow", run.id, False)
    await chain.finish(run.id)
    [_, result] = world.events("audit.verify")
    assert (result.event, result.outcome, result.resource_id) == ("audit.chain_verified", "success", run.id)
    assert (result.actor_id, result.details["state"], result.details["checked"]) == (actor.user_id, "ok", 3)


async def test_a_broken_chain_is_recorded_as_a_failure_naming_the_record(
    world: FakeWorld, chain: FakeAuditChain
) -> None:
    actor = world.actor(Role.AUDITOR, world.organization().id)
    run = await audit_chain.start_verification(world.services, actor, chain)

    await chain.finish(run.id, Problem("edited", 42, 7, "the record's content changed after sealing"))

    result = world.events("audit.verify")[-1]
    assert (result.outcome, result.reason) == ("failure", "chain_edited")
    assert (result.details["problem_event_id"], result.details["problem_seq"]) == (42, 7)


async def test_a_second_start_joins_the_run_in_progress(world: FakeWorld, chain: FakeAuditChain) -> None:
    org = world.organization().id
    first = await audit_chain.start_verification(world.services, world.actor(Role.AUDITOR, org), chain)

    second = await audit_chain.start_verification(
        world.services, world.actor(Role.COMPLIANCE_OFFICER, org), chain
    )

    assert second is first
    assert chain.started == [first.id]
    assert [e.details["joined"] for e in world.events("audit.verify")] == [False, True]


@pytest.mark.parametrize("role", REFUSED)
async def test_other_roles_may_neither_see_verify_nor_anchor_the_chain(
    world: FakeWorld, chain: FakeAuditChain, role: Role
) -> None:
    actor = world.actor(role, world.organization().id)

    for action in (audit_chain.chain_status, audit_chain.start_verification, audit_chain.create_anchor):
        with pytest.raises(Forbidden):
            await action(world.services, actor, chain)

    assert (chain.started, chain.anchors) == ([], [])
    refused = [(e.workflow, e.reason) for e in world.events() if e.workflow.startswith("audit.")]
    assert refused == [
        ("audit.chain.read", "role_not_permitted"),
        ("audit.verify", "role_not_permitted"),
        ("audit.anchor", "role_not_permitted"),
    ]


@pytest.mark.parametrize("role", ALLOWED)
async def test_an_anchor_is_signed_and_its_record_names_it(
    world: FakeWorld, chain: FakeAuditChain, role: Role
) -> None:
    actor = world.actor(role, world.organization().id)

    anchor = await audit_chain.create_anchor(world.services, actor, chain)

    [event] = world.events("audit.anchor")
    assert (event.decision, event.resource_id) == ("allow", str(anchor.id))
    assert (event.details["seq"], event.details["key_id"]) == (anchor.seq, "fakekey")
    status = await audit_chain.chain_status(world.services, actor, chain)
    assert status.anchors == (anchor,)
    document = await audit_chain.anchor_document(world.services, actor, chain, anchor.id)
    assert document["seq"] == anchor.seq


async def test_an_unknown_run_or_anchor_is_not_found_after_the_decision(
    world: FakeWorld, chain: FakeAuditChain
) -> None:
    actor = world.actor(Role.AUDITOR, world.organization().id)

    with pytest.raises(NotFound):
        await audit_chain.read_verification(world.services, actor, chain, "0123456789abcdef")
    with pytest.raises(NotFound):
        await audit_chain.anchor_document(world.services, actor, chain, 5)

    assert [e.resource_id for e in world.events("audit.chain.read")] == ["0123456789abcdef", "5"]


async def test_an_export_is_decided_before_the_stream_opens_with_the_searchs_filter(
    world: FakeWorld, chain: FakeAuditChain
) -> None:
    org = world.organization().id
    actor = world.actor(Role.AUDITOR, org)
    wanted = AuditFilter(org, reason="no_active_consent", purpose="treatment")

    async with export_audit_events(
        world.services, actor, SearchAuditEvents(wanted), "fhir", chain
    ) as records:
        assert [e.details["format"] for e in world.events("audit.export")] == ["fhir"]
        assert [r async for r in records] == []

    assert chain.stream_queries == [wanted]


async def test_an_export_of_another_organizations_trail_is_refused_and_never_streamed(
    world: FakeWorld, chain: FakeAuditChain
) -> None:
    actor = world.actor(Role.AUDITOR, world.organization().id)
    other = world.organization().id

    with pytest.raises(Forbidden) as raised:
        async with export_audit_events(
            world.services, actor, SearchAuditEvents(AuditFilter(other)), "jsonl", chain
        ):
            pass

    assert raised.value.field == "organizationId"
    assert chain.stream_queries == []


async def test_a_record_the_organization_may_not_see_is_not_found_and_the_refusal_recorded(
    world: FakeWorld,
) -> None:
    org = world.organization().id

    with pytest.raises(NotFound):
        await read_audit_event(world.services, world.actor(Role.AUDITOR, org), 12)

    event, lookup = world.events("audit.read")
    assert (lookup.event, lookup.resource_type, lookup.resource_id) == ("lookup", "audit_event", "12")
    assert (event.outcome, event.resource_id, event.details["answered"]) == ("denied", "12", "not_found")
    assert world.db.audit_queries == [("detail", (12, org))]
