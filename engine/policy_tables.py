"""Policy test tables: cases a compliance team writes down and runs against a policy.

A table is CSV, one case a line::

    # who,             relationship,        consent,  action,          expected
    peer_support,      care_team,           none,     patient.read,    deny: no_active_consent

- ``who``: a role (or ``external`` for an SMS participant);
- ``relationship``: facts that hold, joined with ``&``, or ``none``: ``self``, ``own_org``,
  ``care_team``, ``member``, ``break_glass`` (an open emergency-access session), ``treatable`` (the
  person's organization may treat the patient: a consent for treatment). ``own_org`` means the
  patient belongs to the person's organization, which covers them like a consent does and makes
  the patient treatable;
- ``consent``: ``active`` (an active consent discloses the patient to the person's organization),
  ``external`` (one names the external participant), or ``none`` (none, expired, or revoked);
- ``action``: a workflow from workflows.toml;
- ``expected``: ``allow`` or ``deny``, optionally ``deny: REASON``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from engine.decisions import Decision, Fact
from engine.policy import Policy, PolicyProblem

CONSENT_STATES = {"active": {Fact.COVERED}, "external": {Fact.EXTERNAL_CONSENT}, "none": set()}
RELATIONSHIPS = {
    Fact.SELF,
    Fact.OWN_ORG,
    Fact.CARE_TEAM,
    Fact.MEMBER,
    Fact.BREAK_GLASS,
    Fact.SMS_FULL_TEXT_GROUP,
    Fact.TREATABLE,
}


@dataclass(frozen=True)
class PolicyCase:
    file: str
    line: int
    who: str
    relationship: frozenset[str]
    consent: str
    action: str
    expect_allow: bool
    expect_reason: str | None

    @property
    def facts(self) -> frozenset[str]:
        facts = set(self.relationship) | CONSENT_STATES[self.consent]
        if Fact.OWN_ORG in facts:
            facts |= {Fact.COVERED, Fact.TREATABLE}
        return frozenset(facts)

    @property
    def label(self) -> str:
        relationship = " & ".join(sorted(self.relationship)) or "none"
        expected = (
            "allow" if self.expect_allow else f"deny{': ' + self.expect_reason if self.expect_reason else ''}"
        )
        return f"{self.who} {self.action} [{relationship}; consent {self.consent}] -> {expected}"


@dataclass(frozen=True)
class CaseResult:
    case: PolicyCase
    decision: Decision

    @property
    def passed(self) -> bool:
        if self.decision.allowed != self.case.expect_allow:
            return False
        return self.case.expect_allow or self.case.expect_reason in (None, self.decision.reason)

    def describe(self) -> str:
        got = "allow" if self.decision.allowed else f"deny: {self.decision.reason}"
        rule = f" (rule {self.decision.rule})" if self.decision.rule else ""
        return f"{self.case.file}:{self.case.line}: {self.case.label}; got {got}{rule}"


def parse_table(text: str, name: str) -> tuple[list[PolicyCase], list[PolicyProblem]]:
    """Parse one table; every malformed line is a problem with file and line."""
    cases: list[PolicyCase] = []
    problems: list[PolicyProblem] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in next(csv.reader(io.StringIO(line), skipinitialspace=True))]
        if len(fields) != 5:
            problems.append(
                PolicyProblem(name, number, "a case reads: who, relationship, consent, action, expected")
            )
            continue
        who, relationship_text, consent, action, expected = fields
        relationship = (
            frozenset()
            if relationship_text == "none"
            else frozenset(p.strip() for p in relationship_text.split("&"))
        )
        unknown = relationship - {f.value for f in RELATIONSHIPS}
        if unknown:
            problems.append(
                PolicyProblem(
                    name,
                    number,
                    f"unknown relationship {sorted(unknown)[0]!r} "
                    f"(known: none, {', '.join(sorted(f.value for f in RELATIONSHIPS))})",
                )
            )
            continue
        if consent not in CONSENT_STATES:
            problems.append(
                PolicyProblem(name, number, f"unknown consent state {consent!r} (active, external, none)")
            )
            continue
        verdict, _, reason = expected.partition(":")
        if verdict.strip() not in ("allow", "deny"):
            problems.append(
                PolicyProblem(name, number, f"expected must be allow or deny[: reason], not {expected!r}")
            )
            continue
        cases.append(
            PolicyCase(
                name,
                number,
                who,
                relationship,
                consent,
                action,
                verdict.strip() == "allow",
                reason.strip() or None,
            )
        )
    return cases, problems


def run_cases(policy: Policy, cases: list[PolicyCase]) -> list[CaseResult]:
    """Decide every case with the policy (the real decision code, nothing simulated)."""
    return [CaseResult(case, policy.decide(case.who, case.action, case.facts)) for case in cases]


def untested_workflows(policy: Policy, cases: list[PolicyCase]) -> list[str]:
    """Workflows of the policy that no case exercises."""
    return sorted(set(policy.workflows) - {c.action for c in cases})
