"""pycasbin over a policy's rules, asked with only the rules that can match the question.

pycasbin evaluates the model's matcher once per rule for every question it is asked: with the
shipped ``roles.csv`` (~120 rules) a decision the policy's memo has not seen costs ~0.35 ms, nearly
all of it in rules for other workflows. The shipped matcher starts ``r.wf == p.wf && ...``: a rule
for another workflow can never match, so an enforcer holding only the asked workflow's rules, in
the file's order, gives the same answer and names the same rule (pycasbin reports the first
matching rule in its order, and leaving out rules that cannot match changes neither which rules
match nor their order) for whatever effect the model declares.

That holds only while the matcher keeps that term, and ``model.conf`` is a file compliance teams
may edit: :func:`requires_same_workflow` reads the loaded matcher, and a matcher without the term
at its top level is evaluated over every rule, exactly as pycasbin would.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import casbin
from casbin.model import Model

#: A policy rule as pycasbin holds it: role, workflow, required facts.
CasbinRule = Sequence[str]


def requires_same_workflow(model: Model) -> bool:
    """True if the matcher is ``X && ... && r.<2nd request field> == p.<2nd rule field> && ...``.

    The request is ``(role, workflow, facts)`` and a rule ``(role, workflow, requires)``: the
    second field of each is the workflow, whatever the model names it. The matcher is read as
    pycasbin evaluates it (``&&``, ``||`` and ``!`` in Python's words); anything this cannot read
    counts as "no", which is always safe.
    """
    try:
        request = model.model["r"]["r"].tokens
        rule = model.model["p"]["p"].tokens
        matcher = model.model["m"]["m"].value
    except (KeyError, AttributeError):
        return False
    if len(request) < 2 or len(rule) < 2 or "eval(" in matcher:
        return False
    try:
        tree = _as_python(matcher).body
    except SyntaxError:
        return False
    terms = tree.values if isinstance(tree, ast.BoolOp) and isinstance(tree.op, ast.And) else [tree]
    wanted = {request[1], rule[1]}
    return any(
        isinstance(term, ast.Compare)
        and len(term.ops) == 1
        and isinstance(term.ops[0], ast.Eq)
        and isinstance(term.left, ast.Name)
        and isinstance(term.comparators[0], ast.Name)
        and {term.left.id, term.comparators[0].id} == wanted
        for term in terms
    )


def _as_python(matcher: str) -> ast.Expression:
    """The matcher as pycasbin evaluates it: ``&&``, ``||`` and ``!`` rewritten to Python's words
    (everywhere, string literals included, as pycasbin does), parsed; raises SyntaxError."""
    text = re.sub(r"!(?!=)", "not ", matcher.replace("&&", " and ").replace("||", " or "))
    return ast.parse(text.strip(), mode="eval")


#: What a matcher may compare with: ``==``, ``!=``, ``in``, ``not in``.
_COMPARISONS = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)


def matcher_problem(model: Model, functions: Iterable[str]) -> str | None:
    """Why a matcher of ``model`` may not be evaluated, or None if every one may.

    pycasbin hands a matcher to an expression evaluator (simpleeval) for every rule it walks: a
    method call such as ``r.wf.ljust(10**9)`` there allocates without limit, and ``regexMatch`` or
    ``globMatch`` with a pattern of nested repeats runs for minutes while holding the interpreter,
    so one file a compliance officer tries in the what-if page, or proposes, would stall every
    request of the service. A matcher may therefore only combine, with ``&&``, ``||``, ``!`` and
    parentheses, comparisons (``==``, ``!=``, ``in``, ``not in``) of request and rule fields
    (``r.role``, ``p.wf``...) and text, and calls of the role functions (``g``...) and of
    ``functions`` (caremsg's own, such as ``holds``) on fields and text: nothing else is evaluated.
    """
    try:
        sections = {key: model.model[key] for key in ("r", "p", "m")}
    except KeyError:
        return "the model needs request, policy and matcher definitions"
    fields = {token for key in ("r", "p") for defined in sections[key].values() for token in defined.tokens}
    callable_ = {*functions, *model.model.get("g", {}).keys()}
    for key, assertion in sections["m"].items():
        try:
            tree = _as_python(assertion.value)
        except SyntaxError:
            return f"matcher {key} is not an expression"
        found = _disallowed(tree.body, fields, callable_)
        if found is not None:
            return f"matcher {key} may not use {found}"
    return None


def _disallowed(node: ast.AST, fields: set[str], functions: set[str]) -> str | None:
    """The first construct in ``node`` outside what :func:`matcher_problem` allows, named."""
    children: list[ast.AST]
    if isinstance(node, ast.BoolOp):
        children = list(node.values)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        children = [node.operand]
    elif isinstance(node, ast.Compare):
        if not all(isinstance(op, _COMPARISONS) for op in node.ops):
            return "comparisons other than ==, !=, in and not in"
        children = [node.left, *node.comparators]
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in functions:
            return f"{_shown(node.func)[1:-1]}() (a matcher calls only {', '.join(sorted(functions))})"
        if node.keywords:
            return "keyword arguments"
        children = list(node.args)
    elif isinstance(node, (ast.Tuple, ast.List)):
        children = list(node.elts)
    elif isinstance(node, ast.Name):
        return None if node.id in fields else f"{_shown(node)} (not a request or rule field)"
    elif isinstance(node, ast.Constant):
        return None if isinstance(node.value, (str, bool)) else f"{_shown(node)} (only text)"
    else:
        return _shown(node)
    for child in children:
        found = _disallowed(child, fields, functions)
        if found is not None:
            return found
    return None


def _shown(node: ast.AST) -> str:
    """A piece of a matcher as its author wrote it (``r.wf``, not pycasbin's ``r_wf``), shortened."""
    text = re.sub(r"\b([rp]\d*)_", r"\1.", ast.unparse(node))
    return repr(text if len(text) <= 60 else text[:57] + "...")


class WorkflowEnforcers:
    """The rules in pycasbin: one enforcer over all of them (role links, and every decision when
    the matcher cannot be split by workflow), and one per workflow, built when first asked.

    Immutable once built, like the :class:`~engine.policy.Policy` that owns it: a per-workflow
    enforcer is only ever added, and two threads building the same one build equal enforcers.
    """

    def __init__(
        self,
        model_text: str,
        rules: Iterable[CasbinRule],
        inheritance: Iterable[tuple[str, str]],
        functions: dict[str, Callable[..., Any]],
    ) -> None:
        self._model_text = model_text
        self._inheritance = tuple(inheritance)
        self._functions = dict(functions)
        self._rules = tuple(list(rule) for rule in rules)
        self.whole = self._enforcer(self._rules)
        self.split = requires_same_workflow(self.whole.model)
        self._rules_of: dict[str, list[list[str]]] = {}
        for rule in self._rules:
            self._rules_of.setdefault(rule[1], []).append(rule)
        self._per_workflow: dict[str, Any] = {}

    def _enforcer(self, rules: Sequence[list[str]]) -> Any:
        model = Model()
        model.load_model_from_text(self._model_text)
        enforcer = casbin.Enforcer(model)
        for name, function in self._functions.items():
            enforcer.add_function(name, function)
        if rules:
            enforcer.add_policies([list(rule) for rule in rules])
        for role, inherited in self._inheritance:
            enforcer.add_grouping_policy(role, inherited)
        return enforcer

    def enforce(self, role: str, workflow: str, facts: frozenset[str]) -> tuple[bool, list[str]]:
        """pycasbin's ``enforce_ex``: whether the rules allow it, and the rule that matched."""
        if not self.split:
            allowed, matched = self.whole.enforce_ex(role, workflow, facts)
            return bool(allowed), list(matched)
        enforcer = self._per_workflow.get(workflow)
        if enforcer is None:
            rules = self._rules_of.get(workflow)
            # A workflow no rule names is asked of every rule (none can match): pycasbin treats an
            # enforcer without rules differently, and such a workflow is rare (``policy check``
            # warns that nobody can run it).
            enforcer = self._per_workflow[workflow] = self._enforcer(rules) if rules else self.whole
        allowed, matched = enforcer.enforce_ex(role, workflow, facts)
        return bool(allowed), list(matched)

    def has_role(self, role: str, inherited: str) -> bool:
        """Whether ``role`` holds ``inherited`` through the model's role links."""
        return bool(self.whole.has_role_for_user(role, inherited))
