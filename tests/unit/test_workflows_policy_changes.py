"""Four-eyes policy changes on fakes: proposing (checked and tested first), approving by a second
compliance officer only, stale and failing proposals refused, rejecting, withdrawing, restoring a
version; every decision audited with the proposal's file, proposer, reason and diff.
(tests/integration/test_policy_changes.py applies one to real files on PostgreSQL.)"""

from __future__ import annotations

import dataclasses

import pytest

from engine.errors import Conflict, Forbidden, InvalidInput, NotFound
from engine.model import Actor, Role
from engine.ports import ProposalState, ReloadResult
from engine.workflows.policy_changes import (
    DecidePolicyChange,
    ProposePolicyChange,
    RestorePolicyVersion,
    approve_policy_change,
    list_policy_changes,
    propose_policy_change,
    read_policy_change,
    reject_policy_change,
    restore_policy_version,
    withdraw_policy_change,
)
from tests.support.fakes import FakePolicyDirectory, FakeWorld

REASON = "Peer support may add colleagues to care teams (ticket 4711)"
NEW_RULE = "p, peer_support, care_team.add_member, care_team & covered\n"
OLD_CASE = (
    "peer_support,       care_team & own_org,  none,     care_team.add_member,    deny: role_not_permitted"
)
NEW_CASE = "peer_support,       care_team & own_org,  none,     care_team.add_member,    allow"


@pytest.fixture
def files() -> FakePolicyDirectory:
    return FakePolicyDirectory()


def officers(world: FakeWorld, count: int = 2, *, governing: bool = True) -> list[Actor]:
    """Compliance officers of the organization that governs the policy (or of a new one)."""
    org = world.governing_organization() if governing else world.organization()
    return [world.actor(Role.COMPLIANCE_OFFICER, org.id) for _ in range(count)]


def with_rule(files: FakePolicyDirectory) -> str:
    return files.files["roles.csv"] + NEW_RULE


async def test_a_change_is_proposed_checked_and_left_unapplied_until_approved(
    world: FakeWorld, files: FakePolicyDirectory
) -> None:
    proposer, approver = officers(world)
    before = files.files["roles.csv"]
    # The rule alone breaks a test case (peer support was refused): the check says so and nothing
    # is stored.
    with pytest.raises(InvalidInput) as refused:
        await propose_policy_change(
            world.services, proposer, files, ProposePolicyChange("roles.csv", with_rule(files), REASON)
        )
    assert any("tests/default.csv" in e.message and "test failed" in e.message for e in refused.value.errors)
    assert world.db.policy_proposals == {}

    # With the test table changed first (its own four-eyes change), the rule passes.
    table = files.files["tests/default.csv"]
    assert OLD_CASE in table
    files.current = files.current.replaced("tests/default.csv", table.replace(OLD_CASE, NEW_CASE))
    proposal = await propose_policy_change(
        world.services,
        proposer,
        files,
        ProposePolicyChange("roles.csv", with_rule(files).replace("\n", "\r\n"), REASON),
    )

    assert proposal.state is ProposalState.PROPOSED
    assert proposal.content == with_rule(files)  # a textarea's CRLF is stored as the files keep lines
    assert proposal.base_content == before
    assert files.files["roles.csv"] == before
    assert files.applied == []
    refusal, event = world.events("policy.propose")
    assert (refusal.outcome, refusal.details["problems"]) == ("failure", 1)
    assert (event.decision, event.outcome, event.resource_id) == ("allow", "success", str(proposal.id))
    assert event.details["file"] == "roles.csv"
    assert event.details["proposer_id"] == proposer.user_id
    assert event.details["proposal_reason"] == REASON
    assert f"+{NEW_RULE}" in str(event.details["diff"])

    applied = await approve_policy_change(
        world.services, approver, files, DecidePolicyChange(proposal.id, "Looks right")
    )

    assert applied.proposal.state is ProposalState.APPLIED
    assert applied.proposal.decided_by == approver.user_id
    assert applied.reload.outcome == "swapped"
    assert applied.proposal.applied_version == applied.reload.version != applied.reload.previous_version
    assert files.files["roles.csv"].endswith(NEW_RULE)
    [approval] = world.events("policy.approve")
    assert (approval.decision, approval.outcome, approval.actor_id) == ("allow", "success", approver.user_id)
    assert approval.details["facts"] == "governing&own_org&proposed_by_other"
    assert approval.details["proposer_id"] == proposer.user_id
    assert approval.details["approver_id"] == approver.user_id
    assert approval.details["proposal_reason"] == REASON
    assert approval.details["version_after"] == applied.reload.version
    assert f"+{NEW_RULE}" in str(approval.details["diff"])


async def proposed(
    world: FakeWorld, files: FakePolicyDirectory, proposer: Actor, text: str = "# a comment\n"
) -> int:
    """A proposal adding a comment line to roles.csv (passes every check)."""
    proposal = await propose_policy_change(
        world.services,
        proposer,
        files,
        ProposePolicyChange("roles.csv", files.files["roles.csv"] + text, REASON),
    )
    return proposal.id


async def test_the_proposer_cannot_approve_their_own_change(
    world: FakeWorld, files: FakePolicyDirectory
) -> None:
    [proposer] = officers(world, 1)
    proposal_id = await proposed(world, files, proposer)

    with pytest.raises(Forbidden) as refused:
        await approve_policy_change(world.services, proposer, files, DecidePolicyChange(proposal_id))

    assert refused.value.decision.reason == "own_proposal"
    assert files.applied == []
    assert world.db.policy_proposals[proposal_id].state is ProposalState.PROPOSED
    [event] = world.events("policy.approve")
    assert (event.decision, event.outcome, event.reason) == ("deny", "denied", "own_proposal")
    assert event.details["facts"] == "governing&own_org&proposed_by_self"


@pytest.mark.parametrize("role", [Role.ADMIN, Role.AUDITOR, Role.PEER_SUPPORT, Role.CARE_TEAM_MEMBER])
async def test_only_compliance_officers_propose_or_approve(
    world: FakeWorld, files: FakePolicyDirectory, role: Role
) -> None:
    [proposer] = officers(world, 1)
    other = world.actor(role, proposer.organization_id)
    proposal_id = await proposed(world, files, proposer)

    with pytest.raises(Forbidden):
        await propose_policy_change(
            world.services, other, files, ProposePolicyChange("roles.csv", with_rule(files), REASON)
        )
    with pytest.raises(Forbidden) as refused:
        await approve_policy_change(world.services, other, files, DecidePolicyChange(proposal_id))

    assert refused.value.decision.reason == "role_not_permitted"
    assert files.applied == []
    # The refusal records the fact it would have had, for `policy diff`.
    assert world.events("policy.approve")[-1].details["facts"] == "governing&own_org&proposed_by_other"


async def test_officers_of_another_organization_neither_propose_nor_approve(
    world: FakeWorld, files: FakePolicyDirectory
) -> None:
    """The files decide for every organization, and any organization's admin creates compliance
    officers in their own: were they allowed, one admin could create two and change every
    organization's rules alone."""
    [proposer] = officers(world, 1)
    outsider, colleague = officers(world, governing=False)
    proposal_id = await proposed(world, files, proposer)

    with pytest.raises(Forbidden) as not_proposed:
        await propose_policy_change(
            world.services, outsider, files, ProposePolicyChange("sms.toml", "# theirs\n", REASON)
        )
    with pytest.raises(Forbidden) as not_approved:
        await approve_policy_change(world.services, colleague, files, DecidePolicyChange(proposal_id))

    reasons = {not_proposed.value.decision.reason, not_approved.value.decision.reason}
    assert reasons == {"not_governing_organization"}
    assert [p.proposed_by for p in world.db.policy_proposals.values()] == [proposer.user_id]
    assert world.db.policy_proposals[proposal_id].state is ProposalState.PROPOSED
    assert world.events("policy.approve")[-1].details["facts"] == "proposed_by_other"
    assert files.applied == []


async def test_with_no_organization_of_the_governing_name_nobody_proposes(
    world: FakeWorld, files: FakePolicyDirectory
) -> None:
    # Deny by default: a name no organization has (not created yet, or misspelt) governs nothing.
    [officer] = officers(world, 1, governing=False)
    settings = dataclasses.replace(world.services.settings, governing_organization="No Such Organization")
    services = dataclasses.replace(world.services, settings=settings)

    with pytest.raises(Forbidden) as refused:
        await propose_policy_change(
            services, officer, files, ProposePolicyChange("sms.toml", "# x\n", REASON)
        )

    assert refused.value.decision.reason == "not_governing_organization"
    assert world.db.policy_proposals == {}


async def test_the_governing_organization_is_a_setting_read_at_each_decision(
    world: FakeWorld, files: FakePolicyDirectory
) -> None:
    # The same rules let whichever organization the setting names decide, from the next decision on.
    [proposer] = officers(world, 1)
    elsewhere = world.organization()
    [other] = [world.actor(Role.COMPLIANCE_OFFICER, elsewhere.id)]
    proposal_id = await proposed(world, files, proposer)
    settings = dataclasses.replace(world.services.settings, governing_organization=elsewhere.name)
    moved = dataclasses.replace(world.services, settings=settings)

    applied = await approve_policy_change(moved, other, files, DecidePolicyChange(proposal_id))

    assert applied.proposal.state is ProposalState.APPLIED
    assert world.events("policy.approve")[-1].details["facts"] == "governing&proposed_by_other"


async def test_a_stale_proposal_is_refused_and_the_file_left_as_it_is(
    world: FakeWorld, files: FakePolicyDirectory
) -> None:
    proposer, approver = officers(world)
    proposal_id = await proposed(world, files, proposer)
    edited = files.files["roles.csv"] + "# edited directly in the file\n"
    files.current = files.current.replaced("roles.csv", edited)

    with pytest.raises(Conflict, match="stale"):
        await approve_policy_change(world.services, approver, files, DecidePolicyChange(proposal_id))

    assert files.files["roles.csv"] == edited
    assert files.applied == []
    assert world.db.policy_proposals[proposal_id].state is ProposalState.PROPOSED
    view = await read_policy_change(world.services, approver, files, proposal_id)
    assert view.stale
    [event] = world.events("policy.approve")
    assert (event.decision, event.outcome, event.details["refused"]) == ("allow", "failure", "stale")


async def test_a_proposal_the_live_tables_now_break_is_refused_at_approval(
    world: FakeWorld, files: FakePolicyDirectory
) -> None:
    proposer, approver = officers(world)
    table = files.files["tests/default.csv"]
    files.current = files.current.replaced("tests/default.csv", table.replace(OLD_CASE, NEW_CASE))
    proposal_id = await proposed(world, files, proposer, NEW_RULE)
    files.current = files.current.replaced("tests/default.csv", table)  # undone directly in the files

    with pytest.raises(InvalidInput) as refused:
        await approve_policy_change(world.services, approver, files, DecidePolicyChange(proposal_id))

    assert any(e.type == "policy_rejected" for e in refused.value.errors)
    assert files.applied == []
    assert world.db.policy_proposals[proposal_id].state is ProposalState.PROPOSED
    assert world.events("policy.approve")[-1].details["refused"] == "check"


async def test_rejecting_needs_someone_else_and_a_reason_and_withdrawing_the_proposer(
    world: FakeWorld, files: FakePolicyDirectory
) -> None:
    proposer, other = officers(world)
    first = await proposed(world, files, proposer)
    second = await proposed(world, files, proposer, "# another\n")

    with pytest.raises(Forbidden):
        await reject_policy_change(world.services, proposer, DecidePolicyChange(first, "no"))
    with pytest.raises(InvalidInput):
        await reject_policy_change(world.services, other, DecidePolicyChange(first, "  "))
    rejected = await reject_policy_change(world.services, other, DecidePolicyChange(first, "Not needed"))
    with pytest.raises(Forbidden) as refused:
        await withdraw_policy_change(world.services, other, DecidePolicyChange(second))
    withdrawn = await withdraw_policy_change(world.services, proposer, DecidePolicyChange(second))

    assert refused.value.decision.reason == "not_proposer"
    assert (rejected.state, rejected.decided_by, rejected.decision_note) == (
        ProposalState.REJECTED,
        other.user_id,
        "Not needed",
    )
    assert withdrawn.state is ProposalState.WITHDRAWN
    with pytest.raises(Conflict):
        await approve_policy_change(world.services, other, files, DecidePolicyChange(first))
    assert files.applied == []
    assert world.events("policy.reject")[-1].details["decision_note"] == "Not needed"


async def test_applying_one_proposal_supersedes_the_others_of_the_same_file(
    world: FakeWorld, files: FakePolicyDirectory
) -> None:
    proposer, approver = officers(world)
    first = await proposed(world, files, proposer)
    second = await proposed(world, files, proposer, "# another\n")

    applied = await approve_policy_change(world.services, approver, files, DecidePolicyChange(first))

    assert applied.superseded == (second,)
    assert world.db.policy_proposals[second].state is ProposalState.SUPERSEDED
    with pytest.raises(Conflict):
        await approve_policy_change(world.services, approver, files, DecidePolicyChange(second))


async def test_the_previous_version_is_restored_with_four_eyes_too(
    world: FakeWorld, files: FakePolicyDirectory
) -> None:
    proposer, approver = officers(world)
    original = files.files["roles.csv"]
    change = await proposed(world, files, proposer)
    await approve_policy_change(world.services, approver, files, DecidePolicyChange(change))
    listing = await list_policy_changes(world.services, approver, files, file="roles.csv")
    assert [p.id for p in listing.history] == [change]

    restore = await restore_policy_version(
        world.services, approver, files, RestorePolicyVersion(change, "before", "Back out the comment")
    )
    assert (restore.restores_id, restore.restores_version, restore.content) == (change, "before", original)
    with pytest.raises(Forbidden):  # the one who proposed the restore may not approve it
        await approve_policy_change(world.services, approver, files, DecidePolicyChange(restore.id))
    await approve_policy_change(world.services, proposer, files, DecidePolicyChange(restore.id))

    assert files.files["roles.csv"] == original
    [event] = world.events("policy.restore")
    assert (event.details["restores_id"], event.details["restores_version"]) == (change, "before")
    with pytest.raises(NotFound):  # only an applied change's versions can be restored
        await restore_policy_version(
            world.services, approver, files, RestorePolicyVersion(restore.id + 1000, "before", "x")
        )


async def test_an_unchanged_or_unknown_file_is_not_a_proposal(
    world: FakeWorld, files: FakePolicyDirectory
) -> None:
    [proposer] = officers(world, 1)
    for cmd, field in [
        (ProposePolicyChange("roles.csv", files.files["roles.csv"], REASON), "content"),
        (ProposePolicyChange("../config.toml", "x", REASON), "file"),
        (ProposePolicyChange("roles.csv", with_rule(files), ""), "reason"),
        (ProposePolicyChange("roles.csv", with_rule(files), "why\x00"), "reason"),
        (ProposePolicyChange("roles.csv", files.files["roles.csv"] + "#\x1b[31m\n", REASON), "content"),
    ]:
        with pytest.raises(InvalidInput) as refused:
            await propose_policy_change(world.services, proposer, files, cmd)
        assert field in {e.field for e in refused.value.errors}
    assert world.db.policy_proposals == {}


class ReloadFails(FakePolicyDirectory):
    """Writes the file, then the reload fails once (a crash between the two)."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    async def apply(self, name: str, content: str) -> ReloadResult:
        result = await super().apply(name, content)
        if not self.failed:
            self.failed = True
            raise RuntimeError("reload failed")
        return result


async def test_an_approval_that_cannot_finish_writes_the_previous_content_back(world: FakeWorld) -> None:
    files = ReloadFails()
    proposer, approver = officers(world)
    before = files.files["roles.csv"]
    proposal_id = await proposed(world, files, proposer)

    with pytest.raises(RuntimeError):
        await approve_policy_change(world.services, approver, files, DecidePolicyChange(proposal_id))

    assert files.files["roles.csv"] == before
    assert [name for name, _ in files.applied] == ["roles.csv", "roles.csv"]
    assert world.db.policy_proposals[proposal_id].state is ProposalState.PROPOSED
    assert world.events("policy.approve")[-1].outcome == "failure"
