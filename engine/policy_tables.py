"""Policy test tables: cases a compliance team writes down and runs against a policy.

A table is CSV, one case a line::

    # who,             relationship,        consent,  action,          expected
    peer_support,      care_team,           none,     patient.read,    deny: no_active_consent

- ``who``: a role (or ``external`` for an SMS participant);
- ``relationship``: facts that hold, joined with ``&``, or ``none``: ``self``, ``own_org``,
  ``care_team``, ``member``, ``break_glass`` (an open emergency-access session), ``treatable`` (the
  person's organization may treat the patient: a consent for treatment). ``own_org`` means the
  patient belongs to the person's organization, which covers them like a consent does and makes
  the patient treatable. ``sms_group:7`` says an SMS recipient's organization is in compliance
  group 7: the fact ``sms_full_text_group`` then holds if sms.toml lists group 7, so a case tests
  sms.toml too;
- ``consent``: ``active`` (an active consent discloses the patient to the person's organization),
  ``external`` (one names the external participant), or ``none`` (none, expired, or revoked);
- ``action``: a workflow from workflows.toml;
- ``expected``: ``allow`` or ``deny``, optionally ``deny: REASON``.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.decisions import Decision, Fact
from engine.policy import CSV_LINE_PROBLEM, KNOWN_ROLES, Policy, PolicyProblem, Rule, csv_fields

SMS_GROUP_PREFIX = "sms_group:"
CONSENT_STATES = {"active": {Fact.COVERED}, "external": {Fact.EXTERNAL_CONSENT}, "none": set()}
RELATIONSHIPS = {
    Fact.SELF,
    Fact.OWN_ORG,
    Fact.CARE_TEAM,
    Fact.MEMBER,
    Fact.BREAK_GLASS,
    Fact.SMS_FULL_TEXT_GROUP,
    Fact.TREATABLE,
    Fact.SHARED,
    Fact.PROPOSED_BY_SELF,
    Fact.PROPOSED_BY_OTHER,
    Fact.GOVERNING,
    Fact.SENDER,
    Fact.RECALL_WINDOW,
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
    #: Compliance groups the SMS recipient's organization belongs to (``sms_group:N``).
    sms_groups: frozenset[int] = frozenset()

    @property
    def facts(self) -> frozenset[str]:
        """The facts the case states, before sms.toml is consulted (see :meth:`facts_under`)."""
        facts = set(self.relationship) | CONSENT_STATES[self.consent]
        if Fact.OWN_ORG in facts:
            facts |= {Fact.COVERED, Fact.TREATABLE}
        return frozenset(facts)

    def facts_under(self, policy: Policy) -> frozenset[str]:
        """The facts that hold under ``policy``: ``sms_full_text_group`` too if its sms.toml lists
        one of the case's ``sms_group:N``."""
        if self.sms_groups & policy.sms_full_text_groups:
            return self.facts | {Fact.SMS_FULL_TEXT_GROUP}
        return self.facts

    @property
    def label(self) -> str:
        stated = [*sorted(self.relationship), *(f"sms_group:{g}" for g in sorted(self.sms_groups))]
        relationship = " & ".join(stated) or "none"
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
        fields = csv_fields(line)
        if fields is None:
            problems.append(PolicyProblem(name, number, CSV_LINE_PROBLEM))
            continue
        if len(fields) != 5:
            problems.append(
                PolicyProblem(name, number, "a case reads: who, relationship, consent, action, expected")
            )
            continue
        who, relationship_text, consent, action, expected = fields
        stated = (
            frozenset()
            if relationship_text == "none"
            else frozenset(p.strip() for p in relationship_text.split("&"))
        )
        groups = {p for p in stated if p.startswith(SMS_GROUP_PREFIX)}
        relationship = stated - groups
        numbers = [g.removeprefix(SMS_GROUP_PREFIX) for g in groups]
        sms_groups = frozenset(int(n) for n in numbers if n.isascii() and n.isdigit())
        if len(sms_groups) != len(groups):
            problems.append(
                PolicyProblem(name, number, "sms_group needs a compliance group id, e.g. sms_group:7")
            )
            continue
        unknown = relationship - {f.value for f in RELATIONSHIPS}
        if unknown:
            problems.append(
                PolicyProblem(
                    name,
                    number,
                    f"unknown relationship {sorted(unknown)[0]!r} "
                    f"(known: none, {', '.join(sorted(f.value for f in RELATIONSHIPS))}, "
                    "sms_group:ID)",
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
                sms_groups,
            )
        )
    return cases, problems


def run_cases(policy: Policy, cases: list[PolicyCase]) -> list[CaseResult]:
    """Decide every case with the policy (the real decision code, nothing simulated)."""
    return [
        CaseResult(case, policy.decide(case.who, case.action, case.facts_under(policy))) for case in cases
    ]


def untested_workflows(policy: Policy, cases: list[PolicyCase]) -> list[str]:
    """Workflows of the policy that no case exercises."""
    return sorted(set(policy.workflows) - {c.action for c in cases})


def unknown_names(policy: Policy, cases: list[PolicyCase]) -> list[PolicyProblem]:
    """Cases naming a role or workflow the policy does not know: a typo would otherwise pass as a
    deny (``unknown_workflow``) and test nothing."""
    problems = []
    for case in cases:
        if case.who not in KNOWN_ROLES:
            problems.append(
                PolicyProblem(
                    case.file,
                    case.line,
                    f"unknown role {case.who!r} (known: {', '.join(sorted(KNOWN_ROLES))})",
                )
            )
        if case.action not in policy.workflows:
            problems.append(
                PolicyProblem(
                    case.file, case.line, f"unknown workflow {case.action!r} (not in workflows.toml)"
                )
            )
    return problems


def untested_workflow_problems(
    policy: Policy, cases: list[PolicyCase], workflows_name: str, tables_name: str
) -> list[PolicyProblem]:
    """An error at each workflow's declaration that no test case exercises: every workflow needs one."""
    return [
        PolicyProblem(
            workflows_name,
            policy.workflows[name].line,
            f"workflow {name} has no test case: add one to {tables_name}",
        )
        for name in untested_workflows(policy, cases)
    ]


@dataclass(frozen=True)
class Coverage:
    """What a run of the test tables exercised, as ``opa test --coverage`` reports it for Rego.

    A workflow counts when some case decides it; a rule counts when some case is allowed by it (a
    rule no allowed case matches could be deleted without any case noticing).
    """

    workflows: int
    rules: int
    untested_workflows: tuple[str, ...]
    unexercised_rules: tuple[Rule, ...]

    @property
    def summary(self) -> str:
        tested = self.workflows - len(self.untested_workflows)
        exercised = self.rules - len(self.unexercised_rules)
        percent = 100 * (tested + exercised) // max(1, self.workflows + self.rules)
        return (
            f"coverage: {tested} of {self.workflows} workflows and {exercised} of {self.rules} rules "
            f"exercised ({percent}%)"
        )


def coverage(policy: Policy, results: list[CaseResult]) -> Coverage:
    """Which workflows no case decides and which rules no case is allowed by."""
    allowed_by = {r.decision.rule for r in results if r.decision.allowed}
    return Coverage(
        workflows=len(policy.workflows),
        rules=len(policy.rules),
        untested_workflows=tuple(untested_workflows(policy, [r.case for r in results])),
        unexercised_rules=tuple(rule for rule in policy.rules if rule.located not in allowed_by),
    )
