"""Asking pycasbin with one workflow's rules answers as asking it with all of them.

``engine.policy_enforcers`` splits the rules by workflow when the matcher requires the request's
workflow to equal the rule's. These tests hold the split to pycasbin itself, given every rule:
the same answer and the same matched rule for generated rule sets, role links and questions, for
the shipped model and for models whose matcher does not allow the split (which must not split).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from casbin.model import Model
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.decisions import Fact
from engine.policy import KNOWN_ROLES, Policy, holds
from engine.policy_enforcers import WorkflowEnforcers, requires_same_workflow
from integrations.policy_files import read_policy_sources

POLICIES = Path(__file__).resolve().parents[2] / "policies"
SHIPPED_MODEL = (POLICIES / "model.conf").read_text()
SHIPPED_MATCHER = "r.wf == p.wf && g(r.role, p.role) && holds(p.requires, r.facts)"

ROLES = ("nurse", "physician", "admin", "external", "peer_support")
WORKFLOWS = ("patient.read", "patient.update", "message.send", "consent.create", "unused.workflow")
FACTS = ("on_care_team", "covered", "break_glass", "same_organization", "recall_window")


@functools.cache
def shipped_policy() -> Policy:
    return Policy.from_sources(read_policy_sources(POLICIES))


def model_with(matcher: str, effect: str = "some(where (p.eft == allow))") -> str:
    """The shipped model with another matcher or effect."""
    lines = []
    for line in SHIPPED_MODEL.splitlines():
        if line.startswith("m = "):
            line = f"m = {matcher}"
        elif line.startswith("e = "):
            line = f"e = {effect}"
        lines.append(line)
    return "\n".join(lines)


def loaded(text: str) -> Model:
    model = Model()
    model.load_model_from_text(text)
    return model


requirements = st.frozensets(st.sampled_from(FACTS), max_size=3).map(lambda f: " & ".join(sorted(f)) or "any")
rules = st.lists(
    st.tuples(st.sampled_from(ROLES), st.sampled_from(WORKFLOWS[:-1]), requirements).map(list),
    max_size=25,
    unique_by=tuple,
)
links = st.lists(st.tuples(st.sampled_from(ROLES), st.sampled_from(ROLES)), max_size=3, unique=True)
questions = st.lists(
    st.tuples(st.sampled_from(ROLES), st.sampled_from(WORKFLOWS), st.frozensets(st.sampled_from(FACTS))),
    min_size=1,
    max_size=20,
)


def assert_split_answers_as_whole(
    enforcers: WorkflowEnforcers, asked: list[tuple[str, str, frozenset[str]]]
) -> None:
    for role, workflow, facts in asked:
        allowed, matched = enforcers.whole.enforce_ex(role, workflow, facts)
        assert enforcers.enforce(role, workflow, facts) == (bool(allowed), list(matched)), (
            role,
            workflow,
            sorted(facts),
        )


@settings(max_examples=150, deadline=None)
@given(rules=rules, links=links, asked=questions)
def test_the_shipped_model_splits_and_each_answer_and_matched_rule_is_pycasbins_own(
    rules: list[list[str]], links: list[tuple[str, str]], asked: list[tuple[str, str, frozenset[str]]]
) -> None:
    enforcers = WorkflowEnforcers(SHIPPED_MODEL, rules, links, {"holds": holds})
    assert enforcers.split
    assert_split_answers_as_whole(enforcers, asked)


@pytest.mark.parametrize(
    ("matcher", "effect"),
    [
        # The workflow term last: still split; pycasbin then evaluates the other terms first.
        ("g(r.role, p.role) && holds(p.requires, r.facts) && p.wf == r.wf", "some(where (p.eft == allow))"),
        # Allowed unless a matching rule denies: the rules carry no effect, so every match allows.
        (SHIPPED_MATCHER, "!some(where (p.eft == deny))"),
        # Not splittable: a rule may match another workflow's question, so every rule is asked.
        (
            "r.wf == p.wf && g(r.role, p.role) && holds(p.requires, r.facts) || r.role == p.role",
            "some(where (p.eft == allow))",
        ),
        ("g(r.role, p.role) && holds(p.requires, r.facts)", "some(where (p.eft == allow))"),
    ],
)
@settings(max_examples=60, deadline=None)
@given(rules=rules, links=links, asked=questions)
def test_other_matchers_and_effects_answer_as_pycasbin_over_every_rule(
    matcher: str,
    effect: str,
    rules: list[list[str]],
    links: list[tuple[str, str]],
    asked: list[tuple[str, str, frozenset[str]]],
) -> None:
    enforcers = WorkflowEnforcers(model_with(matcher, effect), rules, links, {"holds": holds})
    assert_split_answers_as_whole(enforcers, asked)


@pytest.mark.parametrize(
    ("matcher", "splits"),
    [
        (SHIPPED_MATCHER, True),
        ("p.wf == r.wf && g(r.role, p.role)", True),
        ("(r.wf == p.wf) && g(r.role, p.role)", True),
        ("r.wf == p.wf", True),
        ("g(r.role, p.role) && r.wf == p.wf || r.role == p.role", False),
        ("(r.wf == p.wf || r.wf == p.requires) && g(r.role, p.role)", False),
        ("r.wf != p.wf && g(r.role, p.role)", False),
        ("!(r.wf == p.wf) && g(r.role, p.role)", False),
        ("r.role == p.role && g(r.role, p.role)", False),
        ("r.wf == p.requires && g(r.role, p.role)", False),
        ("r.wf == p.wf == r.role && g(r.role, p.role)", False),
        ("keyMatch(r.wf, p.wf) && g(r.role, p.role)", False),
        ("eval(p.requires) && r.wf == p.wf", False),
    ],
)
def test_only_a_matcher_that_requires_the_same_workflow_at_its_top_level_is_split(
    matcher: str, splits: bool
) -> None:
    assert requires_same_workflow(loaded(model_with(matcher))) is splits


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_the_shipped_rules_split_answer_as_pycasbin_over_every_rule(data: st.DataObject) -> None:
    policy = shipped_policy()
    enforcers = WorkflowEnforcers(
        SHIPPED_MODEL,
        [r.casbin for r in policy.rules],
        [],
        {"holds": holds},
    )
    assert enforcers.split
    asked = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(sorted(KNOWN_ROLES)),
                st.sampled_from(sorted(policy.workflows)),
                st.frozensets(st.sampled_from([f.value for f in Fact])),
            ),
            min_size=1,
            max_size=30,
        )
    )
    assert_split_answers_as_whole(enforcers, asked)
