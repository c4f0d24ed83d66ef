"""The shipped policy, decided case by case from its own test table (policies/tests/*.csv)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.policy import Policy
from engine.policy_tables import PolicyCase, parse_table, run_cases, untested_workflows
from integrations.policy_files import load_policy, read_policy_tables

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"


def _cases() -> list[PolicyCase]:
    cases: list[PolicyCase] = []
    for name, text in read_policy_tables(POLICY_DIR):
        parsed, problems = parse_table(text, Path(name).name)
        assert not problems, [str(p) for p in problems]
        cases += parsed
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(POLICY_DIR)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.file}:{c.line} {c.label}" for c in CASES])
def test_default_policy_decides_the_table_case(policy: Policy, case: PolicyCase) -> None:
    (result,) = run_cases(policy, [case])
    assert result.passed, result.describe()
    if case.expect_allow:
        assert result.decision.rule
        assert result.decision.rule.startswith("roles.csv:")


def test_every_workflow_of_the_default_policy_has_a_table_case(policy: Policy) -> None:
    assert untested_workflows(policy, CASES) == []


def test_every_workflow_has_both_an_allowed_and_a_denied_case() -> None:
    allowed = {c.action for c in CASES if c.expect_allow}
    denied = {c.action for c in CASES if not c.expect_allow}
    assert allowed == denied


def test_the_default_policy_loads_without_warnings(policy: Policy) -> None:
    assert policy.warnings == ()
    assert len(policy.version) == 16


def test_an_unknown_workflow_is_denied_not_an_error(policy: Policy) -> None:
    decision = policy.decide("admin", "patient.delete_everything", {"own_org"})
    assert not decision.allowed
    assert decision.reason == "unknown_workflow"


def test_an_unknown_role_is_denied(policy: Policy) -> None:
    decision = policy.decide("superuser", "patient.read", {"care_team", "covered", "own_org"})
    assert not decision.allowed
    assert decision.reason == "role_not_permitted"


def test_a_denial_names_the_closest_rule_and_what_is_missing(policy: Policy) -> None:
    decision = policy.decide("peer_support", "patient.read", {"care_team"})
    assert decision.missing == ("covered",)
    assert decision.rule is not None
    assert "peer_support, patient.read, care_team & covered" in decision.rule
    assert decision.hint
    assert "consent" in decision.hint
