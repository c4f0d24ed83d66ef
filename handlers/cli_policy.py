"""``caremsg policy ...``: the tools compliance teams use to check, test and explain policy edits."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from engine.policy import PolicyError
from handlers.settings import load_settings


def cmd_policy_check(args: argparse.Namespace) -> int:
    from integrations.policy_files import load_policy

    directory = Path(args.dir) if args.dir else load_settings().policy.path()
    try:
        policy = load_policy(directory)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{exc.filename}: cannot read: {exc.strerror}", file=sys.stderr)
        return 1
    for warning in policy.warnings:
        print(warning, file=sys.stderr)
    print(
        f"policy {directory}: {len(policy.rules)} rules, {len(policy.workflows)} workflows, "
        f"version {policy.version}: OK"
    )
    return 0


def cmd_policy_test(args: argparse.Namespace) -> int:
    """Run the policy's test tables (or the given ones) against the policy in ``--dir``."""
    from engine.policy_tables import parse_table, run_cases, untested_workflows
    from integrations.policy_files import load_policy, read_policy_tables

    directory = Path(args.dir) if args.dir else load_settings().policy.path()
    try:
        policy = load_policy(directory)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    tables = (
        [(name, Path(name).read_text(encoding="utf-8")) for name in args.tables]
        if args.tables
        else read_policy_tables(directory)
    )
    cases, problems = [], []
    for name, text in tables:
        table_cases, table_problems = parse_table(text, name)
        cases += table_cases
        problems += table_problems
    for problem in problems:
        print(problem, file=sys.stderr)
    results = run_cases(policy, cases)
    failed = [r for r in results if not r.passed]
    for result in failed:
        print(f"FAIL {result.describe()}", file=sys.stderr)
    for workflow in untested_workflows(policy, cases):
        print(f"warning: no case tests workflow {workflow}", file=sys.stderr)
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed or problems or not results else 0


def register(sub: Any) -> None:
    """Add ``policy check|test`` to the top-level subcommands."""
    policy = sub.add_parser("policy", help="policy tools for compliance teams")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_sub.add_parser("check", help="validate the policy files (file and line for every error)")
    check.add_argument("--dir", help="policy directory (default: the configured one)")
    check.set_defaults(func=cmd_policy_check)
    test = policy_sub.add_parser("test", help="run the policy test tables (policies/tests/*.csv)")
    test.add_argument("--dir", help="policy directory (default: the configured one)")
    test.add_argument("tables", nargs="*", help="table files to run instead of the directory's own")
    test.set_defaults(func=cmd_policy_test)
