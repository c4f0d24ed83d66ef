"""Four-eyes policy changes against real files and PostgreSQL: an approved proposal is written to the
(temporary copy of the) policy directory and the live policy changes, a decision flips, on this
instance at once and on a second instance as for any file edit; restoring the previous version flips
it back; the database refuses an applied proposal its proposer approved."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine.model import Actor, Role
from engine.workflows import policy_changes as changes
from handlers.app import create_app
from handlers.keys import policy_files_key, policy_key, services_key
from handlers.settings import Settings
from tests.support.api import Api, Person
from tests.support.polling import eventually

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
CASE = (
    "peer_support,       none,                 none,     policy.read,             deny: role_not_permitted\n"
)
RULE = "p, peer_support,       policy.read,   any\n"


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, target)
    return target


def configured(settings: Settings, policy_dir: Path, watch: float) -> Settings:
    policy = settings.policy.model_copy(
        update={"directory": str(policy_dir), "watch_interval_seconds": watch}
    )
    return settings.model_copy(update={"policy": policy})


def actor(person: Person) -> Actor:
    return Actor(person.id, Role(person.role), person.organization_id)


async def change(api: Api, proposer: Person, approver: Person, file: str, content: str) -> Any:
    """One four-eyes round through the engine's workflows, as the console runs them."""
    app = api.app
    proposal = await changes.propose_policy_change(
        app[services_key],
        actor(proposer),
        app[policy_files_key],
        changes.ProposePolicyChange(file, content, f"Change {file} for the test"),
    )
    return await changes.approve_policy_change(
        app[services_key], actor(approver), app[policy_files_key], changes.DecidePolicyChange(proposal.id)
    )


async def test_an_approved_change_is_written_and_flips_a_decision_here_and_on_another_instance(
    aiohttp_client: Any, settings: Settings, policy_dir: Path, db: asyncpg.Connection
) -> None:
    # This instance polls its files only hourly: the change reaches it through the approval itself.
    here = Api(await aiohttp_client(create_app(configured(settings, policy_dir, 3600))))
    there = Api(await aiohttp_client(create_app(configured(settings, policy_dir, 0.05))))
    org = await here.governing_organization()  # only its officers change the policy
    alice = await here.person("compliance_officer", org)
    bob = await here.person("compliance_officer", org)
    peer = await here.person("peer_support", org)
    assert (await here.call("GET", "/api/policy", peer))[0] == 403
    table, rules = policy_dir / "tests" / "default.csv", policy_dir / "roles.csv"
    original_rules = rules.read_text()

    # Two rounds: the test case that says peer support may not read the policy goes first (alone,
    # the rule would break it), then the rule.
    await change(here, alice, bob, "tests/default.csv", table.read_text().replace(CASE, ""))
    applied = await change(here, bob, alice, "roles.csv", original_rules + RULE)

    assert rules.read_text() == original_rules + RULE
    assert applied.reload.outcome == "swapped"
    assert here.app[policy_key].current.version == applied.proposal.applied_version
    assert (await here.call("GET", "/api/policy", peer))[0] == 200
    await eventually(
        lambda: _is(there.app[policy_key].current.version, applied.proposal.applied_version),
        "the other instance to take the change in",
    )
    assert (await there.call("GET", "/api/policy", peer))[0] == 200
    assert temporary_files(policy_dir) == []

    # Of the approver's organization: an approval refused elsewhere, or of a proposal that did not
    # exist yet, is audited under the proposal id it named.
    [row] = await db.fetch(
        "SELECT * FROM audit_events WHERE workflow = 'policy.approve' AND resource_id = $1"
        " AND organization_id = $2",
        str(applied.proposal.id),
        org,
    )
    details = _json(row["details"])
    assert (row["decision"], row["outcome"], row["actor_id"]) == ("allow", "success", alice.id)
    assert (details["proposer_id"], details["approver_id"]) == (bob.id, alice.id)
    assert details["facts"] == "governing&own_org&proposed_by_other"
    assert details["version_after"] == applied.proposal.applied_version
    assert f"+{RULE}" in details["diff"]

    # Restoring the version before the change: four eyes again, and the decision flips back.
    restore = await changes.restore_policy_version(
        here.app[services_key],
        actor(alice),
        here.app[policy_files_key],
        changes.RestorePolicyVersion(applied.proposal.id, "before", "Back out the rule"),
    )
    await changes.approve_policy_change(
        here.app[services_key],
        actor(bob),
        here.app[policy_files_key],
        changes.DecidePolicyChange(restore.id),
    )
    assert rules.read_text() == original_rules
    assert (await here.call("GET", "/api/policy", peer))[0] == 403


def temporary_files(directory: Path) -> list[str]:
    """What an atomic write would leave behind if it failed half-way."""
    return [p.name for p in directory.rglob("*") if p.name.endswith(".tmp")]


async def _is(value: str, expected: str | None) -> bool:
    return value == expected


def _json(value: Any) -> dict[str, Any]:
    import json

    return dict(json.loads(value) if isinstance(value, str) else value)


async def test_the_database_refuses_an_applied_change_its_proposer_approved(
    aiohttp_client: Any, settings: Settings, policy_dir: Path, db: asyncpg.Connection
) -> None:
    api = Api(await aiohttp_client(create_app(configured(settings, policy_dir, 3600))))
    alice = await api.person("compliance_officer", await api.governing_organization())
    proposal = await changes.propose_policy_change(
        api.app[services_key],
        actor(alice),
        api.app[policy_files_key],
        changes.ProposePolicyChange("roles.csv", (policy_dir / "roles.csv").read_text() + "# note\n", "why"),
    )

    with pytest.raises(asyncpg.CheckViolationError, match="four_eyes"):
        await db.execute(
            "UPDATE policy_proposals SET state = 'applied', decided_by = proposed_by, decided_at = now(),"
            " applied_version = 'x' WHERE id = $1",
            proposal.id,
        )
