"""``caremsg policy ...``: the tools compliance teams use to check, test and explain policy edits."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.policy import PolicyError
from handlers.settings import load_settings


def cmd_policy_check(args: argparse.Namespace) -> int:
    """Validate the files and their test tables: every problem with file and line; exit 1 on any."""
    from integrations.policy_files import check_policy

    directory = Path(args.dir) if args.dir else load_settings().policy.path()
    policy, _cases, problems = check_policy(directory)
    for problem in problems:
        print(problem, file=sys.stderr)
    for warning in policy.warnings if policy is not None else ():
        print(warning, file=sys.stderr)
    if policy is None or problems:
        print(f"policy {directory}: {len(problems)} problem(s): NOT OK", file=sys.stderr)
        return 1
    print(
        f"policy {directory}: {len(policy.rules)} rules, {len(policy.workflows)} workflows, "
        f"version {policy.version}: OK"
    )
    return 0


def cmd_policy_test(args: argparse.Namespace) -> int:
    """Run the policy's test tables (or the given ones) against the policy in ``--dir``."""
    from engine.policy_edits import run_tables

    directory = Path(args.dir) if args.dir else load_settings().policy.path()
    policy = _load(directory)
    tables = _tables(directory, args.tables or ())
    if policy is None or tables is None:
        return 1
    run = run_tables(policy, tables)
    for problem in run.problems:
        print(problem, file=sys.stderr)
    for result in run.failed:
        print(f"FAIL {result.describe()}", file=sys.stderr)
    print(f"{len(run.results) - len(run.failed)} passed, {len(run.failed)} failed")
    print(run.coverage.summary)
    for workflow in run.coverage.untested_workflows:
        print(f"  no case decides workflow {workflow}")
    for rule in run.coverage.unexercised_rules:
        print(f"  no case is allowed by {rule.located}")
    return 0 if run.ok else 1


def _moment(text: str) -> datetime:
    """``--since``: an ISO 8601 date and time with its offset from UTC (a moment, not a wall clock)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date and time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give the offset from UTC too, e.g. {text}+00:00")
    return moment


def _load(directory: Path) -> Any:
    """The policy in ``directory``, or None after printing every problem with file and line."""
    from integrations.policy_files import load_policy, unreadable

    try:
        return load_policy(directory)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
    except OSError as exc:
        print(unreadable(directory, exc), file=sys.stderr)
    return None


def _tables(directory: Path, names: Sequence[str] = ()) -> list[tuple[str, str]] | None:
    """The test tables named (else those of ``directory``), or None after printing the one that
    cannot be read (missing, or not UTF-8) with its file and line."""
    from integrations.policy_files import read_policy_tables, read_policy_text, unreadable

    try:
        return (
            [(name, read_policy_text(Path(name))) for name in names]
            if names
            else read_policy_tables(directory)
        )
    except OSError as exc:
        print(unreadable(directory, exc), file=sys.stderr)
        return None


def _print_decision(decision: Any, facts: Any, extra: dict[str, object] | None = None) -> None:
    print(f"decision: {decision.decision}")
    print(f"workflow: {decision.workflow} (as {decision.role})")
    print(f"rule:     {decision.rule or '(none)'}")
    print(f"reason:   {decision.reason}")
    if decision.missing:
        print(f"missing:  {', '.join(decision.missing)}")
    if decision.hint:
        print(f"hint:     {decision.hint}")
    print(f"facts:    {', '.join(sorted(facts)) or '(none)'}")
    for key, value in (extra or {}).items():
        print(f"{key + ':':<9} {value}")
    print(f"policy:   version {decision.policy_version}")


def cmd_policy_explain(args: argparse.Namespace) -> int:
    """Decide one question and show the rule and the facts: from the database (--user) or as given.

    Exits 0 on allow and 1 on deny (or when the user, patient or conversation does not exist), so a
    script can ask ``caremsg policy explain ... && echo allowed``; 2 on a usage error.
    """
    import asyncio

    from engine.errors import NotFound
    from engine.policy_tables import parse_table

    directory = Path(args.dir) if args.dir else load_settings().policy.path()
    policy = _load(directory)
    if policy is None:
        return 1
    if args.user is None:
        if args.role is None:
            print(
                "caremsg: give --user (facts from the database) or --role (facts as given)", file=sys.stderr
            )
            return 2
        # The facts as a test case would state them: the same words, the same meaning.
        stated = f"{args.role}, {args.relationship or 'none'}, {args.consent}, {args.action}, allow"
        cases, problems = parse_table(stated, "--relationship")
        if problems:
            print(f"caremsg: {problems[0].message}", file=sys.stderr)
            return 2
        facts = cases[0].facts_under(policy)
        decision = policy.decide(args.role, args.action, facts)
        _print_decision(decision, facts)
        return 0 if decision.allowed else 1
    if (args.patient is None) == (args.conversation is None):
        print("caremsg: with --user, give exactly one of --patient or --conversation", file=sys.stderr)
        return 2
    from handlers.cli_setup import database
    from integrations.policy_explain import explain

    settings = load_settings()
    with database(settings) as resolved:
        try:
            result = asyncio.run(
                explain(
                    resolved.database.url,
                    policy,
                    user_id=args.user,
                    workflow=args.action,
                    patient_id=args.patient,
                    conversation_id=args.conversation,
                )
            )
        except NotFound as exc:
            print(f"caremsg: {exc.detail}", file=sys.stderr)
            return 1
    _print_decision(result.decision, result.facts, {"patient": result.patient_id, **result.details})
    return 0 if result.decision.allowed else 1


def cmd_policy_diff(args: argparse.Namespace) -> int:
    """Which test cases and which recent audited decisions decide differently under NEW than OLD."""
    import asyncio
    from datetime import timedelta

    from engine.policy_edits import case_changes, distinct_cases, question_of, replay
    from engine.services import utc_now

    old, new = _load(Path(args.old)), _load(Path(args.new))
    old_tables, new_tables = _tables(Path(args.old)), _tables(Path(args.new))
    if old is None or new is None or old_tables is None or new_tables is None:
        return 1
    print(f"old {args.old}: version {old.version}; new {args.new}: version {new.version}")
    cases, problems = distinct_cases(old_tables, new_tables)
    for problem in problems:
        print(problem, file=sys.stderr)
    changes = case_changes(old, new, cases)
    for change in changes:
        case, before, after = change.case, change.before, change.after
        print(
            f"case {case.file}:{case.line}: {question_of(case)}: "
            f"{before.decision} -> {after.decision} ({after.rule or after.reason})"
        )
    print(f"{len(changes)} of {len(cases)} test cases change outcome")
    if args.no_audit:
        return 0
    from handlers.cli_setup import database
    from integrations.policy_explain import recent_decisions

    since = args.since or utc_now() - timedelta(hours=args.since_hours)
    period = f"since {since.isoformat()}" if args.since else f"of the last {args.since_hours} h"
    with database(load_settings()) as resolved:
        decisions = asyncio.run(recent_decisions(resolved.database.url, since, args.limit))
    replayed = replay(old, new, decisions)
    for c in replayed.changed[: args.show]:
        d = c.decision
        print(
            f"audit {d.id} {d.occurred_at:%Y-%m-%d %H:%M}: {d.role} {d.workflow} "
            f"[{d.facts_text}]: {c.before.decision} -> {c.after.decision}"
        )
    print(f"{len(replayed.changed)} of {replayed.replayed} audited decisions {period} change outcome")
    if replayed.unreplayable:
        for d in replayed.touched[: args.show]:
            print(
                f"audit {d.id} {d.occurred_at:%Y-%m-%d %H:%M}: {d.role} {d.workflow} [facts not recorded]:"
                f" {d.decision} -> cannot replay (the edit changes whether {d.role} may run it at all)"
            )
        print(
            f"{len(replayed.unreplayable)} audited decisions cannot be replayed: their facts were not "
            f"recorded ({len(replayed.touched)} of them for a role and workflow the edit changes)"
        )
    for d in replayed.purpose_bound[: args.show]:
        print(
            f"audit {d.id} {d.occurred_at:%Y-%m-%d %H:%M}: {d.role} {d.workflow} "
            f"[{d.facts_text}]: {d.decision} -> cannot replay "
            "(refused for the stated purpose of use, and the edit may change that)"
        )
    if replayed.purpose_bound:
        print(
            f"{len(replayed.purpose_bound)} audited decisions refused for the purpose of use "
            "cannot be replayed"
        )
    return 0


def register(sub: Any) -> None:
    """Add ``policy check|test|explain|diff`` to the top-level subcommands."""
    policy = sub.add_parser("policy", help="policy tools for compliance teams")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_sub.add_parser(
        "check",
        help="validate the policy files and test tables (file and line for every error; "
        "every workflow needs a test case)",
    )
    check.add_argument("--dir", help="policy directory (default: the configured one)")
    check.set_defaults(func=cmd_policy_check)
    test = policy_sub.add_parser("test", help="run the policy test tables (policies/tests/*.csv)")
    test.add_argument("--dir", help="policy directory (default: the configured one)")
    test.add_argument("tables", nargs="*", help="table files to run instead of the directory's own")
    test.set_defaults(func=cmd_policy_test)
    explain = policy_sub.add_parser(
        "explain",
        help="decide one question and print the decision, the matching rule and the facts used "
        "(exit 0 on allow, 1 on deny)",
    )
    explain.add_argument("--dir", help="policy directory (default: the configured one)")
    explain.add_argument("--action", required=True, help="workflow, e.g. patient.read")
    explain.add_argument("--user", type=int, help="user id: facts come from the database")
    explain.add_argument("--patient", type=int, help="patient id (with --user)")
    explain.add_argument("--conversation", type=int, help="conversation id (with --user)")
    explain.add_argument("--role", help="without a database: the role to decide for")
    explain.add_argument("--relationship", help="without a database: facts joined with &, or none")
    explain.add_argument("--consent", default="none", choices=["active", "external", "none"])
    explain.set_defaults(func=cmd_policy_explain)
    diff = policy_sub.add_parser(
        "diff", help="which test cases and recent audited decisions change outcome from OLD to NEW"
    )
    diff.add_argument("old", help="the policy directory in force")
    diff.add_argument("new", help="the edited policy directory")
    window = diff.add_mutually_exclusive_group()
    window.add_argument("--since-hours", type=int, default=24, help="audited decisions of this many hours")
    window.add_argument(
        "--since",
        type=_moment,
        help="audited decisions since this moment, e.g. 2026-12-01T09:00:00+01:00 (the last policy change)",
    )
    diff.add_argument("--limit", type=int, default=100_000, help="at most this many audited decisions")
    diff.add_argument("--show", type=int, default=50, help="list at most this many changed decisions")
    diff.add_argument("--no-audit", action="store_true", help="compare the test cases only")
    diff.set_defaults(func=cmd_policy_diff)
