"""Policy administration and the record of a refused token, on fakes (tests/api/test_policy_reload.py
and test_auth.py cover them over HTTP with real files and PostgreSQL)."""

from __future__ import annotations

import pytest

from engine.errors import Forbidden
from engine.model import Role
from engine.ports import ReloadResult
from engine.workflows.audit import RejectionSummary, record_rejection_summaries
from engine.workflows.policy_admin import policy_status, reload_policy
from tests.support.fakes import FakePolicyReloader, FakeWorld

SWAPPED = ReloadResult("swapped", "new-version", "old-version")
REJECTED = ReloadResult("rejected", "old-version", "old-version", ("roles.csv:3: unknown workflow",))


@pytest.mark.parametrize("role", [Role.ADMIN, Role.COMPLIANCE_OFFICER, Role.AUDITOR])
async def test_admins_officers_and_auditors_see_which_policy_is_in_force(
    world: FakeWorld, role: Role
) -> None:
    actor = world.actor(role, world.organization().id)

    status = await policy_status(world.services, actor)

    assert status.version == world.services.policy.current.version
    assert status.workflow_count == len(world.services.policy.current.workflows)
    assert [e.outcome for e in world.events("policy.read")] == ["success"]


@pytest.mark.parametrize("role", [Role.PEER_SUPPORT, Role.CARE_TEAM_MEMBER])
async def test_care_staff_may_not_read_the_policy_status(world: FakeWorld, role: Role) -> None:
    with pytest.raises(Forbidden):
        await policy_status(world.services, world.actor(role, world.organization().id))
    assert [e.outcome for e in world.events("policy.read")] == ["denied"]


async def test_a_reload_records_the_decision_and_both_versions(world: FakeWorld) -> None:
    officer = world.actor(Role.COMPLIANCE_OFFICER, world.organization().id)
    reloader = FakePolicyReloader(SWAPPED)

    assert await reload_policy(world.services, officer, reloader) == SWAPPED

    assert reloader.triggers == ["api"]
    decision, outcome = world.events("policy.reload")
    assert (decision.event, decision.outcome) == ("decision", "success")
    assert (outcome.event, outcome.outcome, outcome.resource_id) == (
        "policy.reload",
        "success",
        "new-version",
    )
    assert outcome.details == {"outcome": "swapped", "previous_version": "old-version"}


async def test_a_rejected_edit_is_on_record_as_a_failure(world: FakeWorld) -> None:
    admin = world.actor(Role.ADMIN, world.organization().id)

    result = await reload_policy(world.services, admin, FakePolicyReloader(REJECTED))

    assert result.problems == REJECTED.problems
    [outcome] = [e for e in world.events("policy.reload") if e.event == "policy.reload"]
    assert (outcome.outcome, outcome.details["outcome"]) == ("failure", "rejected")


@pytest.mark.parametrize("role", [Role.PEER_SUPPORT, Role.CARE_TEAM_MEMBER, Role.AUDITOR])
async def test_only_admins_and_compliance_officers_reload_and_a_refusal_reloads_nothing(
    world: FakeWorld, role: Role
) -> None:
    reloader = FakePolicyReloader(SWAPPED)

    with pytest.raises(Forbidden):
        await reload_policy(world.services, world.actor(role, world.organization().id), reloader)

    assert reloader.triggers == []
    assert [(e.event, e.outcome) for e in world.events("policy.reload")] == [("decision", "denied")]


async def test_refused_tokens_are_on_record_as_one_counted_summary_per_source(world: FakeWorld) -> None:
    at = world.services.clock()
    summary = RejectionSummary(
        source_address="10.0.0.9",
        actor_id=None,
        first_request_id="r1",
        first_route="/api/patients",
        first_reason="expired",
        first_at=at,
        last_at=at,
        counts={"expired": 3, "token_missing": 2},
    )

    await record_rejection_summaries(world.services, [summary], window_seconds=60)

    [event] = world.events("auth.token")
    assert (event.event, event.outcome, event.reason) == ("auth.token_rejected", "denied", "expired")
    assert (event.request_id, event.source_address) == ("r1", "10.0.0.9")
    assert event.details is not None
    assert (event.details["count"], event.details["expired"], event.details["route"]) == (
        5,
        3,
        "/api/patients",
    )
