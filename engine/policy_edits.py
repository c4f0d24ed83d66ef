"""What an edit of the policy files would do, before anyone applies it.

``caremsg policy check``, ``policy test`` and ``policy diff`` and the console's test tables and
what-if pages all run this code, so a file means the same in the terminal and in the browser:

- :func:`check_files`: the files form a valid policy, the test tables parse and name known roles and
  workflows, every workflow has a case (``policy check``, and the first half of a live reload's gate);
- :func:`run_tables`: every case decided by the policy, and what no case exercises (``policy test``);
- :func:`case_changes` and :func:`replay`: which test cases and which audited decisions the edit
  would decide differently (``policy diff``).

Pure: it works on the files' text (:class:`PolicyFiles`), never on a directory; reading them is the
caller's (``integrations/policy_files.py`` reads a directory, the console takes an upload).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from engine.decisions import PURPOSE_NOT_PERMITTED, Decision
from engine.policy import Policy, PolicyError, PolicyProblem, PolicySources
from engine.policy_tables import (
    CaseResult,
    Coverage,
    PolicyCase,
    coverage,
    parse_table,
    run_cases,
    unknown_names,
    untested_workflow_problems,
)

#: Where the test tables live, relative to the policy directory.
TABLES_DIR = "tests"
TABLES_GLOB = f"{TABLES_DIR}/*.csv"
_TABLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,80}\.csv")


@dataclass(frozen=True)
class PolicyFiles:
    """The text of every policy file and test table, as read from a directory or edited.

    ``tables`` are (name, text) with names relative to the policy directory (``tests/default.csv``),
    in name order.
    """

    sources: PolicySources
    tables: tuple[tuple[str, str], ...]

    def text_of(self, name: str) -> str | None:
        """The text of the file called ``name`` (``roles.csv``, ``tests/default.csv``), or None."""
        s = self.sources
        by_name = {
            s.model_name: s.model,
            s.rules_name: s.rules,
            s.workflows_name: s.workflows,
            s.sms_name: s.sms,
            s.notices_name: s.notices,
            s.escalation_name: s.escalation,
            s.retention_name: s.retention,
        }
        if name in by_name:
            return by_name[name]
        return dict(self.tables).get(name)

    @property
    def names(self) -> list[str]:
        s = self.sources
        return [
            s.rules_name,
            s.workflows_name,
            s.sms_name,
            s.notices_name,
            s.escalation_name,
            s.retention_name,
            s.model_name,
            *(n for n, _ in self.tables),
        ]

    def replaced(self, name: str, text: str) -> PolicyFiles:
        """These files with ``name`` replaced by ``text`` (a test table not here yet is added)."""
        s = self.sources
        field = {
            s.model_name: "model",
            s.rules_name: "rules",
            s.workflows_name: "workflows",
            s.sms_name: "sms",
            s.notices_name: "notices",
            s.escalation_name: "escalation",
            s.retention_name: "retention",
        }
        if name in field:
            return replace(self, sources=replace(s, **{field[name]: text}))
        tables = dict(self.tables)
        tables[name] = text
        return replace(self, tables=tuple(sorted(tables.items())))


def policy_file_name(name: str, sources: PolicySources) -> str | None:
    """The policy file an edited file's name means, or None if it is none of them.

    ``roles.csv``, ``workflows.toml``, ``sms.toml``, ``notices.toml``, ``escalation.toml``,
    ``retention.toml`` and ``model.conf`` are themselves; any other ``NAME.csv`` (or
    ``tests/NAME.csv``) is a test table,
    ``tests/NAME.csv``. A browser sends an upload's bare file name, so that is all a name needs to
    be.
    """
    name = name.strip()
    if name in (
        sources.model_name,
        sources.rules_name,
        sources.workflows_name,
        sources.sms_name,
        sources.notices_name,
        sources.escalation_name,
        sources.retention_name,
    ):
        return name
    table = name.removeprefix(f"{TABLES_DIR}/")
    return f"{TABLES_DIR}/{table}" if _TABLE_NAME.fullmatch(table) else None


def content_hash(text: str) -> str:
    """The SHA-256 of a file's text (UTF-8): what the audit trail keeps of an edit, never the text."""
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Checked:
    """What ``policy check`` found: the policy (None if the files do not form one), the cases of
    its test tables, and every problem, each at file and line."""

    policy: Policy | None
    cases: tuple[PolicyCase, ...]
    problems: tuple[PolicyProblem, ...]

    @property
    def warnings(self) -> tuple[PolicyProblem, ...]:
        return self.policy.warnings if self.policy is not None else ()


def parse_tables(tables: Iterable[tuple[str, str]]) -> tuple[list[PolicyCase], list[PolicyProblem]]:
    """Every case of every table, and every line that does not parse (file and line)."""
    cases: list[PolicyCase] = []
    problems: list[PolicyProblem] = []
    for name, text in tables:
        table_cases, table_problems = parse_table(text, name)
        cases += table_cases
        problems += table_problems
    return cases, problems


def check_files(files: PolicyFiles) -> Checked:
    """What ``caremsg policy check`` enforces, and the first half of every live reload's gate.

    The files form a valid policy, the test tables parse and name only roles and workflows the policy
    knows, and every workflow has at least one test case.
    """
    try:
        policy = Policy.from_sources(files.sources)
    except PolicyError as exc:
        return Checked(None, (), tuple(exc.problems))
    cases, problems = parse_tables(files.tables)
    problems += unknown_names(policy, cases)
    problems += untested_workflow_problems(policy, cases, files.sources.workflows_name, TABLES_GLOB)
    return Checked(policy, tuple(cases), tuple(problems))


@dataclass(frozen=True)
class TableRun:
    """A run of test tables against a policy: each case's result, the lines that could not be run,
    and what no case exercises (:class:`engine.policy_tables.Coverage`)."""

    results: tuple[CaseResult, ...]
    problems: tuple[PolicyProblem, ...]
    coverage: Coverage

    @property
    def failed(self) -> tuple[CaseResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def ok(self) -> bool:
        """What ``policy test`` exits 0 on: cases ran, none failed, no line was malformed."""
        return bool(self.results) and not self.failed and not self.problems


def run_tables(policy: Policy, tables: Iterable[tuple[str, str]]) -> TableRun:
    """Decide every case of ``tables`` with ``policy`` (the real decision code, nothing simulated)."""
    cases, problems = parse_tables(tables)
    problems += unknown_names(policy, cases)
    results = run_cases(policy, cases)
    return TableRun(tuple(results), tuple(problems), coverage(policy, results))


# --- policy diff ---------------------------------------------------------------------------------------


def question_of(case: PolicyCase) -> str:
    """A case without its expectation: two tables asking the same question count once in a diff."""
    return case.label.rsplit(" -> ", 1)[0]


def distinct_cases(*table_sets: Iterable[tuple[str, str]]) -> tuple[list[PolicyCase], list[PolicyProblem]]:
    """The cases of every table of every set, each question once (its first occurrence)."""
    cases: dict[str, PolicyCase] = {}
    problems: list[PolicyProblem] = []
    for tables in table_sets:
        parsed, table_problems = parse_tables(tables)
        problems += table_problems
        for case in parsed:
            cases.setdefault(question_of(case), case)
    return list(cases.values()), problems


@dataclass(frozen=True)
class CaseChange:
    case: PolicyCase
    before: Decision
    after: Decision


def case_changes(old: Policy, new: Policy, cases: Iterable[PolicyCase]) -> list[CaseChange]:
    """The cases whose outcome (allow or deny) differs between ``old`` and ``new``."""
    changes = []
    for case in cases:
        before = old.decide(case.who, case.action, case.facts_under(old))
        after = new.decide(case.who, case.action, case.facts_under(new))
        if before.allowed != after.allowed:
            changes.append(CaseChange(case, before, after))
    return changes


@dataclass(frozen=True)
class AuditedDecision:
    """One audited policy decision, as ``policy diff`` decides it again."""

    id: int
    occurred_at: datetime
    workflow: str
    #: The role decided on (the subject's, for a decision about someone being added).
    role: str
    #: None when the record does not say which facts held (see engine.audit.replayable_facts).
    facts: frozenset[str] | None
    decision: str
    policy_version: str | None
    reason: str | None = None

    @property
    def facts_text(self) -> str:
        return " & ".join(sorted(self.facts or ())) or "none"


@dataclass(frozen=True)
class DecisionChange:
    decision: AuditedDecision
    before: Decision
    after: Decision


@dataclass(frozen=True)
class Replay:
    """Audited decisions decided again under an edit.

    ``changed``: replayed, and the outcome differs. ``unreplayable``: the facts were never recorded
    (a role refused before any lookup); ``touched`` are those of them whose role and workflow the
    edit changes. ``purpose_bound``: refused for the stated purpose of use, which the rules alone do
    not decide, and the edit may change that.
    """

    replayed: int
    changed: tuple[DecisionChange, ...]
    unreplayable: tuple[AuditedDecision, ...]
    touched: tuple[AuditedDecision, ...]
    purpose_bound: tuple[AuditedDecision, ...]
    replayed_per_workflow: tuple[tuple[str, int], ...] = ()

    def changed_per_workflow(self) -> list[tuple[str, int, int]]:
        """(workflow, decisions that change, decisions replayed) for every workflow with a change."""
        changed = Counter(c.decision.workflow for c in self.changed)
        replayed = dict(self.replayed_per_workflow)
        return [(w, n, replayed.get(w, n)) for w, n in sorted(changed.items())]


def _purposes(policy: Policy, workflow: str) -> frozenset[str] | None:
    spec = policy.workflows.get(workflow)
    return None if spec is None else frozenset(spec.purposes)


def replay(old: Policy, new: Policy, decisions: Sequence[AuditedDecision]) -> Replay:
    """Decide every audited decision again under ``old`` and ``new`` from its recorded facts.

    Denials included. A record without facts is never guessed at; a refusal for the purpose of use
    stays one while the edit leaves the workflow's purposes alone and its rules still refuse.
    """
    changed: list[DecisionChange] = []
    unreplayable: list[AuditedDecision] = []
    purpose_bound: list[AuditedDecision] = []
    replayed: Counter[str] = Counter()
    for d in decisions:
        if d.facts is None:
            unreplayable.append(d)
            continue
        replayed[d.workflow] += 1
        before = old.decide(d.role, d.workflow, d.facts)
        after = new.decide(d.role, d.workflow, d.facts)
        if d.reason == PURPOSE_NOT_PERMITTED[0]:
            if _purposes(old, d.workflow) == _purposes(new, d.workflow) and not after.allowed:
                continue
            purpose_bound.append(d)
            continue
        if before.allowed != after.allowed:
            changed.append(DecisionChange(d, before, after))
    touched = [
        d for d in unreplayable if old.role_may(d.role, d.workflow) != new.role_may(d.role, d.workflow)
    ]
    return Replay(
        replayed=sum(replayed.values()),
        changed=tuple(changed),
        unreplayable=tuple(unreplayable),
        touched=tuple(touched),
        purpose_bound=tuple(purpose_bound),
        replayed_per_workflow=tuple(sorted(replayed.items())),
    )
