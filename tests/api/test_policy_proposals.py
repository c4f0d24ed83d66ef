"""Four-eyes policy changes over the API (``/api/policy/proposals``), on an app serving a temporary copy
of policies/: propose, approve by someone else only, reject, withdraw, restore; broken and stale
proposals refused with their reasons, bad input a 4xx, never a 5xx. The refusals of bad input and of
other roles write no file, so they run on the module's shared app (``api``), which serves policies/."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from handlers.app import create_app
from handlers.settings import Settings
from tests.support.api import PASSWORD, Api, Person

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
PROPOSALS = "/api/policy/proposals"


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, target)
    return target


@pytest.fixture
async def editable(aiohttp_client: Any, settings: Settings, policy_dir: Path) -> Api:
    """An app of its own serving ``policy_dir``: an approved proposal rewrites the files it serves."""
    policy = settings.policy.model_copy(update={"directory": str(policy_dir), "watch_interval_seconds": 3600})
    return Api(await aiohttp_client(create_app(settings.model_copy(update={"policy": policy}))))


async def officers(api: Api) -> tuple[Person, Person]:
    org = await api.governing_organization()  # only its officers change the policy
    return await api.person("compliance_officer", org), await api.person("compliance_officer", org)


async def test_a_proposal_applies_only_when_someone_else_approves_it(editable: Api, policy_dir: Path) -> None:
    api = editable
    alice, bob = await officers(api)
    rules = policy_dir / "roles.csv"
    before = rules.read_text()
    _, policy = await api.call("GET", "/api/policy", alice)

    status, proposal = await api.call(
        "POST", PROPOSALS, alice, json={"file": "roles.csv", "content": before + "# api\n", "reason": "Note"}
    )
    assert status == 201, proposal
    assert (proposal["state"], proposal["proposedBy"], proposal["organizationId"]) == (
        "proposed",
        alice.id,
        alice.organization_id,
    )
    own = f"{PROPOSALS}/{proposal['id']}"
    status, refused = await api.call("POST", f"{own}/approve", alice, json={})
    assert (status, refused["reason"]) == (403, "own_proposal")
    assert rules.read_text() == before

    status, applied = await api.call("POST", f"{own}/approve", bob, json={"note": "Fine"})
    assert status == 200, applied
    assert (applied["state"], applied["decidedBy"], applied["decisionNote"]) == ("applied", bob.id, "Fine")
    assert rules.read_text() == before + "# api\n"
    _, now = await api.call("GET", "/api/policy", alice)
    assert now["version"] == applied["appliedVersion"] != policy["version"]
    status, detail = await api.call("GET", own, bob)
    assert status == 200
    assert "+# api" in detail["diff"]
    assert detail["content"] == before + "# api\n"
    status, listed = await api.call("GET", PROPOSALS, bob, params={"state": "applied"})
    assert status == 200
    assert proposal["id"] in [p["id"] for p in listed["items"]]

    status, restore = await api.call(
        "POST", f"{own}/restore", bob, json={"version": "before", "reason": "Back out"}
    )
    assert status == 201, restore
    assert (restore["restoresId"], restore["restoresVersion"]) == (proposal["id"], "before")
    assert (await api.call("POST", f"{PROPOSALS}/{restore['id']}/approve", alice, json={}))[0] == 200
    assert rules.read_text() == before


async def test_broken_stale_and_closed_proposals_are_refused(editable: Api, policy_dir: Path) -> None:
    api = editable
    alice, bob = await officers(api)
    rules = policy_dir / "roles.csv"

    status, broken = await api.call(
        "POST", PROPOSALS, alice, json={"file": "roles.csv", "content": "p, nobody, x, any\n", "reason": "r"}
    )
    assert status == 422
    assert any(
        e["type"] == "policy_rejected" and e["message"].startswith("roles.csv:1:") for e in broken["errors"]
    )

    status, stale = await api.call(
        "POST",
        PROPOSALS,
        alice,
        json={"file": "roles.csv", "content": rules.read_text() + "# s\n", "reason": "r"},
    )
    assert status == 201
    rules.write_text(rules.read_text() + "# edited directly\n")
    status, refused = await api.call("POST", f"{PROPOSALS}/{stale['id']}/approve", bob, json={})
    assert status == 409, refused
    _, detail = await api.call("GET", f"{PROPOSALS}/{stale['id']}", bob)
    assert detail["stale"] is True

    status, _ = await api.call("POST", f"{PROPOSALS}/{stale['id']}/reject", bob, json={"note": ""})
    assert status == 422
    status, rejected = await api.call(
        "POST", f"{PROPOSALS}/{stale['id']}/reject", bob, json={"note": "Stale"}
    )
    assert (status, rejected["state"]) == (200, "rejected")
    assert (await api.call("POST", f"{PROPOSALS}/{stale['id']}/withdraw", alice, json={}))[0] == 409
    assert (await api.call("GET", f"{PROPOSALS}/2147483647", bob))[0] == 404


@pytest.mark.parametrize(
    "body",
    [
        {"file": "roles.csv", "content": "p, admin, x, any\ud800\n", "reason": "r"},
        {"file": "../config.toml", "content": "x", "reason": "r"},
        {"file": "roles.csv", "content": "x", "reason": ""},
        {"file": "roles.csv", "content": "x"},
    ],
)
async def test_bad_input_is_a_422_naming_the_field(api: Api, body: dict[str, Any]) -> None:
    alice, _ = await officers(api)
    status, problem = await api.call("POST", PROPOSALS, alice, json=body)
    assert status == 422, problem
    assert problem["errors"]


@pytest.mark.parametrize(
    "content",
    [
        # One comment line to an editor or git diff; a comment and a table to the policy's parser.
        "# no groups\u2028[full_text]\n",
        # Trojan Source: a line shown reordered and read in order.
        "# \u202e]txet_lluf[\n",
        "[full_text]\ncompliance_group_ids = [] # \u2066x\u2069\n",
    ],
    ids=["line-separator", "right-to-left-override", "isolate"],
)
async def test_text_an_approver_would_read_otherwise_than_the_parser_is_refused(
    api: Api, content: str
) -> None:
    alice, _ = await officers(api)
    status, problem = await api.call(
        "POST", PROPOSALS, alice, json={"file": "sms.toml", "content": content, "reason": "Tidy"}
    )
    assert status == 422, problem
    assert [(e["field"], e["type"]) for e in problem["errors"]] == [("content", "invisible_character")]


@pytest.mark.parametrize("role", ["peer_support", "admin", "auditor"])
async def test_only_compliance_officers_see_or_make_proposals(api: Api, role: str) -> None:
    person = await api.person(role, await api.organization())
    assert (await api.call("GET", PROPOSALS, person))[0] == 403
    status, _ = await api.call(
        "POST", PROPOSALS, person, json={"file": "sms.toml", "content": "", "reason": "r"}
    )
    assert status == 403


async def test_an_admin_cannot_change_the_policy_through_officers_of_their_own_making(
    editable: Api, policy_dir: Path
) -> None:
    """The files decide for every organization. An organization's admin may create compliance
    officers in their own organization; two of them were once four eyes enough to change every
    organization's rules. They see the proposals; they neither propose nor approve."""
    api = editable
    org = await api.organization()
    admin = await api.person("admin", org)
    made = []
    for n in (1, 2):
        email = f"officer{n}.{org}@example.org"
        body = {"email": email, "password": PASSWORD, "firstName": "O", "lastName": str(n)}
        status, user = await api.call(
            "POST", "/api/users", admin, json={**body, "role": "compliance_officer", "organizationId": org}
        )
        assert status == 201, user
        status, session = await api.call(
            "POST", "/api/auth/login", None, json={"email": email, "password": PASSWORD}
        )
        assert status == 200, session
        made.append(Person(user["id"], session["token"], "compliance_officer", org, email))
    governor, _ = await officers(api)
    rules = policy_dir / "roles.csv"
    before = rules.read_text()
    status, proposal = await api.call(
        "POST", PROPOSALS, governor, json={"file": "roles.csv", "content": before + "# g\n", "reason": "Note"}
    )
    assert status == 201, proposal

    status, own = await api.call(
        "POST", PROPOSALS, made[0], json={"file": "roles.csv", "content": before + "# x\n", "reason": "Mine"}
    )
    assert (status, own["reason"]) == (403, "not_governing_organization")
    status, approved = await api.call("POST", f"{PROPOSALS}/{proposal['id']}/approve", made[1], json={})
    assert (status, approved["reason"]) == (403, "not_governing_organization")
    status, listed = await api.call("GET", PROPOSALS, made[1])
    assert status == 200
    assert proposal["id"] in [p["id"] for p in listed["items"]]
    assert rules.read_text() == before
