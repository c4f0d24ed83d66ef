"""The per-workflow consent declarations in workflows.toml (consent_scope, purposes) are checked
like everything else: a mistake is reported with its file and line and the policy does not load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.policy import Policy
from handlers.cli import main
from integrations.policy_files import load_policy, load_tested_policy, read_policy_sources

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture
def edited(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, target)
    return target


def _declare(directory: Path, body: str) -> int:
    workflows = directory / "workflows.toml"
    before = workflows.read_text()
    workflows.write_text(before + '\n[workflows."patient.archive"]\nresource = "patient"\n' + body + "\n")
    return len(before.splitlines()) + 4 + body.count("\n")  # the line of the last key


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('facts = ["covered"]\nconsent_scope = "everything"', "unknown consent scope 'everything'"),
        ('facts = ["covered"]\npurposes = ["marketing"]', "unknown purpose 'marketing'"),
        ('facts = []\nconsent_scope = "read"', "declares consent checks but establishes no consent fact"),
        ('facts = ["covered"]\npurpose = ["treatment"]', "unknown key 'purpose'"),
    ],
    ids=["unknown-scope", "unknown-purpose", "checks-without-consent-fact", "misspelt-key"],
)
def test_policy_check_reports_each_bad_consent_declaration_with_its_line(
    edited: Path, body: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _declare(edited, body)
    assert main(["policy", "check", "--dir", str(edited)]) == 1
    assert f"workflows.toml:{line}: error: workflow patient.archive: {message}" in capsys.readouterr().err


def test_the_shipped_declarations_name_scope_and_purposes_for_patient_data() -> None:
    policy = load_policy(POLICY_DIR)
    read, send = policy.workflows["patient.read"], policy.workflows["message.send"]
    assert (read.consent_scope, "payment" in read.purposes) == ("read", False)
    assert (send.consent_scope, send.purposes) == ("message", frozenset({"treatment", "care_coordination"}))


def test_a_policy_remembers_its_decisions_and_a_new_policy_starts_afresh() -> None:
    sources = read_policy_sources(POLICY_DIR)
    policy = Policy.from_sources(sources)
    first = policy.decide("peer_support", "patient.read", {"care_team", "covered"})
    assert policy.decide("peer_support", "patient.read", frozenset({"covered", "care_team"})) is first
    fresh = Policy.from_sources(sources)
    assert fresh.decide("peer_support", "patient.read", {"care_team", "covered"}) is not first


def test_files_of_the_same_content_load_as_one_policy_and_an_edit_as_a_new_one(edited: Path) -> None:
    # Parsed once per process: the apps of one process share the policy, and what it remembers.
    loaded = load_policy(edited)
    assert load_policy(edited) is loaded
    rules = edited / "roles.csv"
    rules.write_text(rules.read_text() + "p, auditor, policy.reload, any\n")
    changed = load_policy(edited)
    assert changed is not loaded
    assert changed.version != loaded.version
    assert changed.decide("auditor", "policy.reload", set()).allowed
    assert not loaded.decide("auditor", "policy.reload", set()).allowed


def test_the_reload_gate_refuses_a_policy_whose_tables_fail(edited: Path) -> None:
    assert isinstance(load_tested_policy(edited)[0], Policy)
    rules = edited / "roles.csv"
    rules.write_text(rules.read_text() + "p, auditor, policy.reload, any\n")
    policy, problems = load_tested_policy(edited)
    assert policy is None
    assert any("auditor policy.reload" in p and "got allow" in p for p in problems)
