"""The policy engine: role rules from ``policies/`` evaluated by pycasbin, relationship facts from outside.

Longer than 400 lines because loading, checking and evaluating the rules share one parsed model, and
the decision stays next to the rules it reads.

Facts are gathered asynchronously by the workflows (from PostgreSQL); the decision itself is pure CPU
over in-memory rules (``Policy.decide``), returns a :class:`~engine.decisions.Decision` and never does
I/O. A ``Policy`` is immutable once built; a reload builds a new one and swaps it in
(:class:`PolicyHolder`), because calling ``load_policy()`` on a live pycasbin enforcer is unsafe:
it clears and refills the rules in place while other coroutines may be enforcing against them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import tomllib
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import PurePath
from typing import Any

import casbin
from casbin.effect import DENY_OVERRIDE_EFFECT
from casbin.model import Model

from engine.decisions import MISSING_FACT_REASONS, ROLE_NOT_PERMITTED, UNKNOWN_WORKFLOW, Decision, Fact
from engine.escalation import EscalationSchedule, parse_schedule
from engine.model import EXTERNAL_PARTICIPANT, ConsentScope, Purpose, Role
from engine.policy_enforcers import WorkflowEnforcers, matcher_problem
from engine.retention import RetentionRules
from engine.retention import parse_rules as parse_retention

ANY = "any"
KNOWN_ROLES = frozenset({*(r.value for r in Role), EXTERNAL_PARTICIPANT})
#: The keys a ``[workflows."name"]`` table may hold; anything else is a typo worth reporting.
WORKFLOW_KEYS = frozenset(
    {"description", "resource", "phi", "facts", "consent_scope", "purposes", "window_minutes"}
)
#: How long after sending the fact ``recall_window`` holds when a workflow declares no ``window_minutes``.
DEFAULT_WINDOW_MINUTES = 15
#: The longest ``window_minutes`` accepted: a week.
MAX_WINDOW_MINUTES = 7 * 24 * 60
#: Facts a consent establishes: a workflow that declares a consent scope or purposes needs one of them.
CONSENT_FACTS = frozenset({"covered", "external_consent"})
#: The sections every Casbin model needs (pycasbin's own error for a missing one is a bare TypeError).
MODEL_SECTIONS = ("request_definition", "policy_definition", "policy_effect", "matchers")
#: Decisions remembered per policy; the key space (role x workflow x fact set) is small in practice.
MEMO_LIMIT = 65_536


@dataclass(frozen=True)
class PolicyProblem:
    """One thing wrong with a policy file, located for the person who edits it."""

    file: str
    line: int
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.severity}: {self.message}"


class PolicyError(Exception):
    """The policy files do not form a valid policy; ``problems`` says where and why."""

    def __init__(self, problems: list[PolicyProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class Rule:
    role: str
    workflow: str
    requires: frozenset[str]
    file: str
    line: int

    @property
    def casbin(self) -> list[str]:
        """The rule as pycasbin holds it: role, workflow, the required facts joined with ``&``."""
        return [self.role, self.workflow, " & ".join(sorted(self.requires)) or ANY]

    @property
    def text(self) -> str:
        return ", ".join(self.casbin)

    @property
    def located(self) -> str:
        """``roles.csv:12: role, workflow, requires``: where a compliance officer finds the rule.

        Only the file's name, never the server's path to it: this text reaches clients in 403s.
        """
        return f"{PurePath(self.file).name}:{self.line}: {self.text}"


@dataclass(frozen=True)
class WorkflowSpec:
    """One workflow's declaration: what it touches, the facts it can establish, and which consents
    count for it (``consent_scope``: what the consent must disclose; ``purposes``: the purposes of
    use it serves; empty means any purpose)."""

    name: str
    description: str
    resource: str
    phi: bool
    facts: frozenset[str]
    consent_scope: str | None = None
    purposes: frozenset[str] = frozenset()
    line: int = 0
    #: How long after a message is sent the fact ``recall_window`` holds for this workflow.
    window_minutes: int = DEFAULT_WINDOW_MINUTES


@dataclass(frozen=True)
class PolicySources:
    """The text of the policy files, as read from disk (or from an edited copy).

    ``sms`` is ``sms.toml`` (which compliance groups get full-text SMS); empty means none. The names
    are what problems print: relative to the policy directory, never a server path.
    """

    model: str
    rules: str
    workflows: str
    model_name: str = "model.conf"
    rules_name: str = "roles.csv"
    workflows_name: str = "workflows.toml"
    sms: str = ""
    sms_name: str = "sms.toml"
    notices: str = ""
    notices_name: str = "notices.toml"
    escalation: str = ""
    escalation_name: str = "escalation.toml"
    retention: str = ""
    retention_name: str = "retention.toml"

    @property
    def version(self) -> str:
        """A hash of every policy file's content, sms.toml and notices.toml included: what decided,
        exactly. (A policy without notices.toml hashes as it did before the file existed.)"""
        digest = hashlib.sha256()
        texts = (self.model, self.rules, self.workflows, self.sms) + ((self.notices,) if self.notices else ())
        for text in texts:
            digest.update(text.encode())
            digest.update(b"\0")
        if self.escalation:  # absent: the version stays what it was before the file existed
            digest.update(self.escalation.encode())
            digest.update(b"\0")
        if self.retention:  # likewise
            digest.update(b"retention\0" + self.retention.encode())
            digest.update(b"\0")
        return digest.hexdigest()[:16]

    @property
    def sms_version(self) -> str:
        """A hash of sms.toml alone (recorded with each full-text SMS decision, as before)."""
        return hashlib.sha256(self.sms.encode()).hexdigest()[:16]

    @property
    def retention_version(self) -> str:
        """A hash of retention.toml alone (recorded with each retention sweep)."""
        return hashlib.sha256(self.retention.encode()).hexdigest()[:16]

    @property
    def escalation_version(self) -> str:
        """A hash of escalation.toml alone (recorded with each escalation step)."""
        return hashlib.sha256(self.escalation.encode()).hexdigest()[:16]


_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column \d+|end of document)\)$")


def toml_error(text: str, name: str, exc: tomllib.TOMLDecodeError) -> PolicyProblem:
    """A TOML syntax error at the line a person would fix: where the broken statement starts.

    The parser reports where it noticed the error, which for an unclosed array or string is a later
    line or the end of the document. The statement starts at the line after the longest prefix,
    up to that point, that still parses.
    """
    message = str(exc)
    found = _TOML_POSITION.search(message)
    lines = text.splitlines()
    noticed = getattr(exc, "lineno", None)
    if noticed is None and found is not None and found.group(1):
        noticed = int(found.group(1))
    line = 1
    for end in range(min(noticed or len(lines), len(lines)) - 1, -1, -1):
        try:
            tomllib.loads("\n".join(lines[:end]))
        except tomllib.TOMLDecodeError:
            continue
        line = end + 1
        break
    reason = message[: found.start()] if found is not None else message
    return PolicyProblem(name, line, f"not valid TOML: {reason}")


def load_toml(text: str, name: str) -> tuple[dict[str, Any] | None, list[PolicyProblem]]:
    """The TOML document of a policy file, or None and the one problem to fix (file and line).

    tomllib recurses once per nested array or inline table: a few thousand ``[`` raise
    RecursionError, named here at the line that opens the most."""
    try:
        return tomllib.loads(text), []
    except tomllib.TOMLDecodeError as exc:
        return None, [toml_error(text, name, exc)]
    except RecursionError:
        lines = text.splitlines() or [""]
        line = max(range(len(lines)), key=lambda i: lines[i].count("[") + lines[i].count("{")) + 1
        return None, [PolicyProblem(name, line, "not valid TOML here: arrays or tables nested too deeply")]


def _key_line(text: str, key: str) -> int:
    """The first line that assigns ``key`` (1 if none does)."""
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    return next((i for i, line in enumerate(text.splitlines(), 1) if pattern.match(line)), 1)


#: What sms.toml may hold: table -> keys.
SMS_KEYS = {"full_text": frozenset({"compliance_group_ids"})}


def _parse_sms(sources: PolicySources) -> tuple[frozenset[int], list[PolicyProblem]]:
    """The compliance group ids sms.toml allows full-text SMS for, or its problems (file and line)."""
    if not sources.sms.strip():
        return frozenset(), []
    name = sources.sms_name
    data, broken = load_toml(sources.sms, name)
    if data is None:
        return frozenset(), broken
    problems: list[PolicyProblem] = []
    for table in sorted(set(data) - set(SMS_KEYS)):
        problems.append(
            PolicyProblem(
                name, _key_line(sources.sms, table), f"unknown table or key {table!r} (known: [full_text])"
            )
        )
    full_text = data.get("full_text", {})
    if not isinstance(full_text, dict):
        full_text = {}
        problems.append(PolicyProblem(name, _key_line(sources.sms, "full_text"), "full_text must be a table"))
    for key in sorted(set(full_text) - SMS_KEYS["full_text"]):
        problems.append(
            PolicyProblem(
                name,
                _key_line(sources.sms, key),
                f"full_text: unknown key {key!r} (known: compliance_group_ids)",
            )
        )
    ids = full_text.get("compliance_group_ids", [])
    line = _key_line(sources.sms, "compliance_group_ids")
    if not isinstance(ids, list):
        problems.append(
            PolicyProblem(name, line, "full_text.compliance_group_ids must be a list of ids, e.g. [7]")
        )
        ids = []
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(
                PolicyProblem(
                    name,
                    line,
                    f"full_text.compliance_group_ids: {value!r} is not a compliance group id "
                    "(a whole number from GET /api/compliance-groups, e.g. [7])",
                )
            )
    if problems:
        return frozenset(), problems
    return frozenset(ids), []


#: The notice of 42 CFR 2.32(a)(2), its short form: what every disclosure under a Part 2 consent
#: carries unless notices.toml says otherwise (2.32(a)(1) gives the long form).
PART2_SHORT_NOTICE = "42 CFR part 2 prohibits unauthorized use or disclosure of these records."
#: What notices.toml may hold: table -> keys.
NOTICE_KEYS = {"part2": frozenset({"notice"})}
#: The longest notice: it travels with texts and chat messages.
NOTICE_MAX_CHARS = 1000


def _parse_notices(sources: PolicySources) -> tuple[str, list[PolicyProblem]]:
    """The Part 2 notice notices.toml sets (default the rule's short form), or its problems."""
    if not sources.notices.strip():
        return PART2_SHORT_NOTICE, []
    name, text = sources.notices_name, sources.notices
    data, broken = load_toml(text, name)
    if data is None:
        return PART2_SHORT_NOTICE, broken
    problems = [
        PolicyProblem(name, _key_line(text, table), f"unknown table or key {table!r} (known: [part2])")
        for table in sorted(set(data) - set(NOTICE_KEYS))
    ]
    part2 = data.get("part2", {})
    if not isinstance(part2, dict):
        return PART2_SHORT_NOTICE, [
            *problems,
            PolicyProblem(name, _key_line(text, "part2"), "part2 must be a table"),
        ]
    problems += [
        PolicyProblem(name, _key_line(text, key), f"part2: unknown key {key!r} (known: notice)")
        for key in sorted(set(part2) - NOTICE_KEYS["part2"])
    ]
    notice = part2.get("notice", PART2_SHORT_NOTICE)
    if not isinstance(notice, str) or not notice.strip() or len(notice) > NOTICE_MAX_CHARS:
        problems.append(
            PolicyProblem(
                name,
                _key_line(text, "notice"),
                f"part2.notice must be text of 1 to {NOTICE_MAX_CHARS} characters (42 CFR 2.32)",
            )
        )
        notice = PART2_SHORT_NOTICE
    return " ".join(notice.split()), problems


def _parse_escalation(sources: PolicySources) -> tuple[EscalationSchedule, list[PolicyProblem]]:
    """The urgent-message escalation schedule escalation.toml sets (the defaults if the file is
    absent or empty), or its problems (file and line); see engine/escalation.py."""
    if not sources.escalation.strip():
        return EscalationSchedule(), []
    name = sources.escalation_name
    data, broken = load_toml(sources.escalation, name)
    if data is None:
        return EscalationSchedule(), broken
    schedule, problems = parse_schedule(data, lambda key: _key_line(sources.escalation, key))
    return schedule, [PolicyProblem(name, line, message) for line, message in problems]


def _parse_retention(sources: PolicySources) -> tuple[RetentionRules, list[PolicyProblem]]:
    """How long each organization's message content lives, as retention.toml sets it (kept
    forever if the file is absent or empty), or its problems (file and line); see engine/retention.py."""
    if not sources.retention.strip():
        return RetentionRules(), []
    name, text = sources.retention_name, sources.retention
    data, broken = load_toml(text, name)
    if data is None:
        return RetentionRules(), broken
    lines = text.splitlines()

    def line_of(key: str) -> int:
        # [organization.7] or, for a key that is not a bare word, [organization."7"].
        table, _, last = key.rpartition(".")
        quoted = rf'|{re.escape(table)}\s*\.\s*"{re.escape(last)}"' if table else ""
        header = re.compile(rf"^\s*\[\s*(?:{re.escape(key)}{quoted})\s*\]")
        found = next((i for i, line in enumerate(lines, 1) if header.match(line)), 0)
        return found or _key_line(text, key)

    rules, problems = parse_retention(data, line_of)
    return rules, [PolicyProblem(name, line, message) for line, message in problems]


#: The functions a matcher may call besides the model's role functions (``g``).
MATCHER_FUNCTIONS = ("holds",)
#: Request and rule fields: caremsg asks (role, workflow, facts) and a rule holds (role, workflow,
#: requires).
MODEL_FIELDS = 3


def _model_problems(model: Model, sources: PolicySources) -> list[PolicyProblem]:
    """What a loadable model may still not do here: ask or hold other than three fields, allow
    what no rule allows (pycasbin's deny-override effect allows a question no rule matches), or
    evaluate more than field comparisons (:func:`engine.policy_enforcers.matcher_problem`)."""
    text, name = sources.model, sources.model_name
    problems = [
        PolicyProblem(name, _key_line(text, key), f"{key} must name {MODEL_FIELDS} fields, as shipped")
        for key in ("r", "p")
        if any(len(a.tokens) != MODEL_FIELDS for a in model.model[key].values())
    ]
    if any(a.value == DENY_OVERRIDE_EFFECT for a in model.model["e"].values()):
        problems.append(
            PolicyProblem(
                name, _key_line(text, "e"), "the effect allows what no rule allows: that must be denied"
            )
        )
    unsafe = matcher_problem(model, MATCHER_FUNCTIONS)
    if unsafe is not None:
        problems.append(PolicyProblem(name, _key_line(text, "m"), unsafe))
    return problems


@lru_cache(maxsize=256)
def _parse_requires(requires: str) -> frozenset[str]:
    parts = frozenset(part.strip() for part in requires.split("&"))
    return frozenset() if parts == {ANY} else parts


def holds(requires: str, facts: Collection[str]) -> bool:
    """The model's ``holds(p.requires, r.facts)``: every fact the rule requires holds."""
    return _parse_requires(requires) <= frozenset(facts)


def _parse_workflows(
    sources: PolicySources,
) -> tuple[dict[str, WorkflowSpec] | None, list[PolicyProblem]]:
    """The declared workflows and their problems; ``None`` when the file is not TOML at all."""
    data, problems = load_toml(sources.workflows, sources.workflows_name)
    if data is None:
        return None, problems
    lines = sources.workflows.splitlines()

    def line_of(name: str) -> int:
        needle = f'"{name}"'
        return next((i for i, text in enumerate(lines, 1) if needle in text), 0)

    def key_line(name: str, key: str) -> int:
        """The line of ``key`` inside the table of workflow ``name`` (the header if not found)."""
        start = line_of(name)
        for i in range(start, len(lines)):
            text = lines[i].strip()
            if text.startswith("["):
                break
            if text.split("=", 1)[0].strip() == key:
                return i + 1
        return start

    specs: dict[str, WorkflowSpec] = {}
    known_facts = {f.value for f in Fact}
    for name, body in data.get("workflows", {}).items():
        facts = frozenset(body.get("facts", []))
        for unknown in sorted(facts - known_facts):
            problems.append(
                PolicyProblem(
                    sources.workflows_name, line_of(name), f"workflow {name}: unknown fact {unknown!r}"
                )
            )
        for key in sorted(set(body) - WORKFLOW_KEYS):
            problems.append(
                PolicyProblem(
                    sources.workflows_name,
                    key_line(name, key),
                    f"workflow {name}: unknown key {key!r} (known: {', '.join(sorted(WORKFLOW_KEYS))})",
                )
            )
        scope = body.get("consent_scope")
        if scope is not None and scope not in {s.value for s in ConsentScope}:
            problems.append(
                PolicyProblem(
                    sources.workflows_name,
                    key_line(name, "consent_scope"),
                    f"workflow {name}: unknown consent scope {scope!r} "
                    f"(known: {', '.join(s.value for s in ConsentScope)})",
                )
            )
        raw_purposes = body.get("purposes", [])
        purposes = frozenset(raw_purposes) if isinstance(raw_purposes, list) else frozenset()
        for unknown in sorted(purposes - {p.value for p in Purpose}):
            problems.append(
                PolicyProblem(
                    sources.workflows_name,
                    key_line(name, "purposes"),
                    f"workflow {name}: unknown purpose {unknown!r} "
                    f"(known: {', '.join(p.value for p in Purpose)})",
                )
            )
        if (scope is not None or purposes) and not facts & CONSENT_FACTS:
            problems.append(
                PolicyProblem(
                    sources.workflows_name,
                    key_line(name, "consent_scope" if scope is not None else "purposes"),
                    f"workflow {name}: declares consent checks but establishes no consent fact "
                    "(add covered or external_consent to facts)",
                )
            )
        window = body.get("window_minutes", DEFAULT_WINDOW_MINUTES)
        if "window_minutes" in body and (
            Fact.RECALL_WINDOW not in facts
            or not isinstance(window, int)
            or isinstance(window, bool)
            or not 1 <= window <= MAX_WINDOW_MINUTES
        ):
            problems.append(
                PolicyProblem(
                    sources.workflows_name,
                    key_line(name, "window_minutes"),
                    f"workflow {name}: window_minutes must be a whole number of minutes from 1 to "
                    f"{MAX_WINDOW_MINUTES}, on a workflow whose facts include recall_window",
                )
            )
            window = DEFAULT_WINDOW_MINUTES
        specs[name] = WorkflowSpec(
            name=name,
            window_minutes=window,
            description=str(body.get("description", "")),
            resource=str(body.get("resource", "")),
            phi=bool(body.get("phi", True)),
            facts=facts,
            consent_scope=str(scope) if scope is not None else None,
            purposes=purposes,
            line=line_of(name),
        )
    if not specs:
        problems.append(PolicyProblem(sources.workflows_name, 1, "no [workflows.*] tables found"))
    return specs, problems


#: What a line the csv module cannot read is (a field over its 128 KiB limit, say).
CSV_LINE_PROBLEM = "not a line of comma-separated fields"


def csv_fields(line: str) -> list[str] | None:
    """The fields of one line of a rule file or test table, stripped; None if it is no CSV line."""
    try:
        return [f.strip() for f in next(csv.reader(io.StringIO(line), skipinitialspace=True))]
    except csv.Error:
        return None


def _parse_rules(
    sources: PolicySources, workflows: dict[str, WorkflowSpec] | None
) -> tuple[list[Rule], list[tuple[str, str]], list[PolicyProblem]]:
    """The rules and role inheritance of roles.csv. With ``workflows`` None (workflows.toml did not
    parse) rules are checked on their own, so one TOML error does not cascade into one "unknown
    workflow" per rule."""
    rules: list[Rule] = []
    inheritance: list[tuple[str, str]] = []
    problems: list[PolicyProblem] = []
    seen: dict[tuple[str, str, frozenset[str]], int] = {}
    for number, raw in enumerate(sources.rules.splitlines(), 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue

        def problem(message: str, line: int = number) -> None:
            problems.append(PolicyProblem(sources.rules_name, line, message))

        fields = csv_fields(text)
        if fields is None:
            problem(CSV_LINE_PROBLEM)
            continue

        if fields[0] == "g":
            if len(fields) != 3:
                problem("a role line reads: g, ROLE, INHERITED_ROLE")
            elif fields[2] not in KNOWN_ROLES:
                problem(f"unknown inherited role {fields[2]!r}")
            else:
                inheritance.append((fields[1], fields[2]))
            continue
        if fields[0] != "p" or len(fields) != 4:
            problem("a rule line reads: p, ROLE, WORKFLOW, REQUIRES")
            continue
        _, role, workflow, requires_text = fields
        requires = _parse_requires(requires_text)
        if role not in KNOWN_ROLES:
            problem(f"unknown role {role!r} (known: {', '.join(sorted(KNOWN_ROLES))})")
        spec = None if workflows is None else workflows.get(workflow)
        if workflows is not None and spec is None:
            problem(f"unknown workflow {workflow!r} (declare it in {sources.workflows_name})")
        known = {f.value for f in Fact}
        for fact in sorted(requires - known):
            problem(f"unknown fact {fact!r} (known: any, {', '.join(sorted(known))})")
        if spec is not None:
            for fact in sorted((requires & known) - spec.facts):
                problem(f"rule can never match: workflow {workflow} never establishes fact {fact!r}")
        key = (role, workflow, requires)
        if key in seen:
            problem(f"duplicate of the rule on line {seen[key]}", number)
        seen[key] = number
        rules.append(Rule(role, workflow, requires, sources.rules_name, number))
    return rules, inheritance, problems


@dataclass(frozen=True)
class Policy:
    """A validated, immutable policy: decide() is pure and thread-safe for reads."""

    version: str
    workflows: dict[str, WorkflowSpec]
    rules: tuple[Rule, ...]
    _enforcers: WorkflowEnforcers = field(repr=False)
    _by_text: dict[tuple[str, ...], Rule] = field(repr=False)
    warnings: tuple[PolicyProblem, ...] = ()
    #: Compliance groups whose organizations' external participants may get full-text SMS (sms.toml);
    #: the fact ``sms_full_text_group`` holds for them.
    sms_full_text_groups: frozenset[int] = frozenset()
    #: Hash of sms.toml alone; the policy ``version`` covers it too.
    sms_version: str = ""
    #: The notice every disclosure under a 42 CFR Part 2 consent carries (notices.toml).
    part2_notice: str = PART2_SHORT_NOTICE
    #: When an unacknowledged urgent message is re-alerted, texted about and escalated (escalation.toml).
    escalation: EscalationSchedule = field(default_factory=EscalationSchedule)
    #: Hash of escalation.toml alone; the policy ``version`` covers it too.
    escalation_version: str = ""
    #: How long each organization's message content lives (retention.toml; default: kept).
    retention: RetentionRules = field(default_factory=RetentionRules)
    #: Hash of retention.toml alone; the policy ``version`` covers it too.
    retention_version: str = ""
    # Decisions by (role, workflow, facts). Safe because a Policy never changes: a reload builds a
    # new Policy, so its memo starts empty. It turns pycasbin's walk of the workflow's rules (~60 us,
    # bench/policy_walk.py) into a dict hit.
    _memo: dict[tuple[str, str, frozenset[str]], Decision] = field(
        default_factory=dict, repr=False, compare=False
    )
    # role_may answers by (role, workflow), for the same reason: every read of a patient asks it.
    _may: dict[tuple[str, str], bool] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_sources(cls, sources: PolicySources) -> Policy:
        """Parse and validate the files; raise :class:`PolicyError` naming file and line on any error."""
        parsed, problems = _parse_workflows(sources)
        rules, inheritance, rule_problems = _parse_rules(sources, parsed)
        problems += rule_problems
        sms_groups, sms_problems = _parse_sms(sources)
        problems += sms_problems
        part2_notice, notice_problems = _parse_notices(sources)
        problems += notice_problems
        escalation, escalation_problems = _parse_escalation(sources)
        problems += escalation_problems
        retention, retention_problems = _parse_retention(sources)
        problems += retention_problems
        workflows = parsed or {}
        model = Model()
        missing = [s for s in MODEL_SECTIONS if f"[{s}]" not in sources.model]
        try:
            if missing:
                raise ValueError(f"missing section {', '.join(f'[{s}]' for s in missing)}")
            model.load_model_from_text(sources.model)
            casbin.Enforcer(model)
        except Exception as exc:  # pycasbin raises bare exceptions for malformed models
            problems.append(PolicyProblem(sources.model_name, 1, f"not a valid Casbin model: {exc}"))
        else:
            problems += _model_problems(model, sources)
        if problems:
            raise PolicyError(problems)
        casbin_rules = [rule.casbin for rule in rules]
        by_text: dict[tuple[str, ...], Rule] = {tuple(rule.casbin): rule for rule in rules}
        enforcers = WorkflowEnforcers(sources.model, casbin_rules, inheritance, {"holds": holds})
        covered = {r.workflow for r in rules}
        warnings = [
            PolicyProblem(
                sources.workflows_name,
                workflows[name].line,
                f"workflow {name} has no rule: nobody can run it",
                "warning",
            )
            for name in sorted(set(workflows) - covered)
        ]
        if sms_groups and not any(Fact.SMS_FULL_TEXT_GROUP in r.requires for r in rules):
            warnings.append(
                PolicyProblem(
                    sources.sms_name,
                    _key_line(sources.sms, "compliance_group_ids"),
                    f"no rule in {sources.rules_name} needs sms_full_text_group: "
                    "the groups listed here get no full text",
                    "warning",
                )
            )
        return cls(
            sources.version,
            workflows,
            tuple(rules),
            enforcers,
            by_text,
            tuple(warnings),
            sms_full_text_groups=sms_groups,
            sms_version=sources.sms_version,
            part2_notice=part2_notice,
            escalation=escalation,
            escalation_version=sources.escalation_version,
            retention=retention,
            retention_version=sources.retention_version,
        )

    def decide(self, role: str, workflow: str, facts: Iterable[str]) -> Decision:
        """Decide whether ``role`` may run ``workflow`` given the facts that hold. Deny by default.

        Pure: the same question always gets the same answer from the same policy, so answers are
        remembered (per policy object) and repeated questions cost one dict lookup.
        """
        fact_set = facts if isinstance(facts, frozenset) else frozenset(facts)
        key = (role, workflow, fact_set)
        remembered = self._memo.get(key)
        if remembered is not None:
            return remembered
        decision = replace(self._decide(role, workflow, fact_set), facts=fact_set)
        if len(self._memo) >= MEMO_LIMIT:
            self._memo.clear()
        self._memo[key] = decision
        return decision

    @property
    def rule_count(self) -> int:
        return len(self.rules)

    def _decide(self, role: str, workflow: str, fact_set: frozenset[str]) -> Decision:
        if workflow not in self.workflows:
            reason, hint = UNKNOWN_WORKFLOW
            return Decision(False, workflow, role, reason, hint=hint, policy_version=self.version)
        allowed, matched = self._enforcers.enforce(role, workflow, fact_set)
        if allowed and matched:
            rule = self._by_text.get(tuple(matched))
            rule_text = rule.located if rule else ", ".join(matched)
            return Decision(True, workflow, role, "allowed", rule=rule_text, policy_version=self.version)
        return self._explain_denial(role, workflow, fact_set)

    def role_may(self, role: str, workflow: str) -> bool:
        """True if some rule lets ``role`` run ``workflow`` under some facts."""
        key = (role, workflow)
        may = self._may.get(key)
        if may is None:
            may = any(r.workflow == workflow and self._role_has(role, r.role) for r in self.rules)
            if len(self._may) >= MEMO_LIMIT:
                self._may.clear()
            self._may[key] = may
        return may

    def _explain_denial(self, role: str, workflow: str, facts: frozenset[str]) -> Decision:
        candidates = [r for r in self.rules if r.workflow == workflow and self._role_has(role, r.role)]
        if not candidates:
            reason, hint = ROLE_NOT_PERMITTED
            return Decision(False, workflow, role, reason, hint=hint, policy_version=self.version)
        # Emergency-access rules come last: a denial should name the everyday rule and what it lacks.
        closest = min(
            candidates, key=lambda r: (Fact.BREAK_GLASS in r.requires, len(r.requires - facts), r.line)
        )
        missing = tuple(sorted(closest.requires - facts, key=lambda f: list(Fact).index(Fact(f))))
        reason, hint = MISSING_FACT_REASONS[Fact(missing[0])]
        return Decision(
            False,
            workflow,
            role,
            reason,
            rule=closest.located,
            hint=hint,
            policy_version=self.version,
            missing=missing,
        )

    def _role_has(self, role: str, rule_role: str) -> bool:
        return role == rule_role or self._enforcers.has_role(role, rule_role)


class PolicyHolder:
    """The policy currently in force. Swapping is a single reference assignment: atomic for readers."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self.loaded_at = datetime.now(UTC)

    @property
    def current(self) -> Policy:
        return self._policy

    def swap(self, policy: Policy) -> Policy:
        previous, self._policy = self._policy, policy
        self.loaded_at = datetime.now(UTC)
        return previous
