"""The console's policy workflows on fakes: the test tables and a what-if (tests/console covers them
over HTTP with real files and PostgreSQL), and ``policy diff``'s replay of audited decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine.decisions import PURPOSE_NOT_PERMITTED
from engine.errors import Forbidden, InvalidInput
from engine.model import Role
from engine.policy import Policy
from engine.policy_edits import AuditedDecision, PolicyFiles, replay
from engine.workflows.console import (
    MAX_EDITED_BYTES,
    EditedFile,
    TryEdit,
    open_what_if,
    read_policy_tests,
    try_policy_edit,
)
from integrations.policy_files import read_policy_files
from tests.support.fakes import FakeWorld

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
PEER_ADDS_MEMBERS = "p, peer_support, care_team.add_member, care_team & covered\n"
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


class StaticPolicyFiles:
    """The shipped policy's files, read once; counts how often the workflow asked for them."""

    def __init__(self) -> None:
        self.files = read_policy_files(POLICY_DIR)
        self.reads = 0

    async def read(self) -> PolicyFiles:
        self.reads += 1
        return self.files


def an_edit(*files: EditedFile) -> TryEdit:
    return TryEdit(files, NOW - timedelta(hours=24), NOW)


async def test_a_compliance_officer_gets_every_case_run_against_the_policy_in_force(world: FakeWorld) -> None:
    officer = world.actor(Role.COMPLIANCE_OFFICER, world.organization().id)
    found = await read_policy_tests(world.services, officer, StaticPolicyFiles())
    assert found.run.results
    assert not found.run.failed
    assert found.policy is world.services.policy.current
    assert [e.outcome for e in world.events("console.policy.tests")] == ["success"]


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.ADMIN, Role.PEER_SUPPORT, Role.CARE_TEAM_MEMBER])
async def test_other_roles_are_refused_before_any_file_is_read(world: FakeWorld, role: Role) -> None:
    actor = world.actor(role, world.organization().id)
    files = StaticPolicyFiles()
    with pytest.raises(Forbidden):
        await read_policy_tests(world.services, actor, files)
    with pytest.raises(Forbidden):
        await open_what_if(world.services, actor, files)
    with pytest.raises(Forbidden):
        await try_policy_edit(world.services, actor, files, an_edit(EditedFile("roles.csv", b"x")))
    assert files.reads == 0
    assert not world.db.audit_queries


async def test_a_what_if_reads_only_its_organizations_decisions_of_the_period_and_records_hashes(
    world: FakeWorld,
) -> None:
    org = world.organization().id
    officer = world.actor(Role.COMPLIANCE_OFFICER, org)
    rules = (POLICY_DIR / "roles.csv").read_text() + PEER_ADDS_MEMBERS

    outcome = await try_policy_edit(
        world.services, officer, StaticPolicyFiles(), an_edit(EditedFile("roles.csv", rules.encode()))
    )

    assert world.db.audit_queries == [("decisions", (org, NOW - timedelta(hours=24), NOW, 100_000))]
    assert outcome.checked.policy is not None
    assert not outcome.checked.problems
    assert outcome.run is not None
    assert len(outcome.run.failed) == 1
    assert [c.case.action for c in outcome.changes] == ["care_team.add_member"]
    decision, ran = world.events("console.policy.what_if")
    assert (decision.event, decision.outcome) == ("decision", "success")
    assert ran.event == "policy.what_if"
    assert ran.details["files"] == "roles.csv"
    assert ran.details["sha256"] == outcome.edited[0][1]
    assert PEER_ADDS_MEMBERS.strip() not in str(ran.details)


@pytest.mark.parametrize(
    ("edited", "field", "message"),
    [
        (EditedFile("notes.txt", b"x", "upload"), "upload", "Name a policy file"),
        (EditedFile("roles.csv", b"\xff\xfe\x00", "upload"), "upload", "not UTF-8"),
        (EditedFile("roles.csv", b"p,\x00", "text"), "text", "NUL"),
        (EditedFile("roles.csv", b"#" * (MAX_EDITED_BYTES + 1), "upload"), "upload", "at most 256 KiB"),
    ],
)
async def test_a_file_that_cannot_be_a_policy_file_is_refused_at_its_field(
    world: FakeWorld, edited: EditedFile, field: str, message: str
) -> None:
    officer = world.actor(Role.COMPLIANCE_OFFICER, world.organization().id)
    with pytest.raises(InvalidInput) as refused:
        await try_policy_edit(world.services, officer, StaticPolicyFiles(), an_edit(edited))
    [error] = refused.value.errors
    assert error.field == field
    assert message in error.message
    assert not world.db.audit_queries
    # The decision to let the officer try stays on record; no what-if ran.
    assert [e.event for e in world.events("console.policy.what_if")] == ["decision"]


def _decision(
    n: int, workflow: str, role: str, facts: str | None, reason: str | None = None
) -> AuditedDecision:
    return AuditedDecision(
        n,
        NOW,
        workflow,
        role,
        None if facts is None else frozenset(f for f in facts.split("&") if f),
        "deny",
        "v",
        reason,
    )


def test_replay_counts_the_changes_per_workflow_and_never_guesses_missing_facts(world: FakeWorld) -> None:
    old = world.services.policy.current
    files = read_policy_files(POLICY_DIR)
    new = Policy.from_sources(files.replaced("roles.csv", files.sources.rules + PEER_ADDS_MEMBERS).sources)
    decisions = [
        _decision(1, "care_team.add_member", "peer_support", "care_team&covered&own_org"),
        _decision(2, "care_team.add_member", "peer_support", "care_team&covered&own_org"),
        _decision(3, "care_team.add_member", "peer_support", "own_org"),  # still refused: not on the team
        _decision(4, "patient.read", "peer_support", "care_team"),  # unchanged: no consent
        _decision(5, "care_team.add_member", "peer_support", None),  # facts never recorded
        _decision(6, "patient.read", "peer_support", "care_team&covered", PURPOSE_NOT_PERMITTED[0]),
    ]

    replayed = replay(old, new, decisions)

    assert [c.decision.id for c in replayed.changed] == [1, 2]
    assert replayed.changed_per_workflow() == [("care_team.add_member", 2, 3)]
    assert replayed.replayed == 5
    assert [d.id for d in replayed.unreplayable] == [5]
    assert [d.id for d in replayed.touched] == [5]  # the edit lets peer support run it at all
    # Refused for its purpose, and the rules alone would now allow it: that cannot be told either.
    assert [d.id for d in replayed.purpose_bound] == [6]
    assert replayed.replayed_per_workflow == (("care_team.add_member", 3), ("patient.read", 2))
