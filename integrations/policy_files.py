"""Reading the policy files from disk into :class:`engine.policy.PolicySources`."""

from __future__ import annotations

from pathlib import Path

from engine.policy import Policy, PolicySources

MODEL_FILE = "model.conf"
RULES_FILE = "roles.csv"
WORKFLOWS_FILE = "workflows.toml"


def read_policy_sources(directory: Path) -> PolicySources:
    """Read the three policy files of ``directory``; names in problems are relative to it."""
    return PolicySources(
        model=(directory / MODEL_FILE).read_text(encoding="utf-8"),
        rules=(directory / RULES_FILE).read_text(encoding="utf-8"),
        workflows=(directory / WORKFLOWS_FILE).read_text(encoding="utf-8"),
        model_name=str(directory / MODEL_FILE),
        rules_name=str(directory / RULES_FILE),
        workflows_name=str(directory / WORKFLOWS_FILE),
    )


def load_policy(directory: Path) -> Policy:
    """Read and validate the policy in ``directory``; raises :class:`engine.policy.PolicyError`."""
    return Policy.from_sources(read_policy_sources(directory))


TABLES_DIR = "tests"


def read_policy_tables(directory: Path) -> list[tuple[str, str]]:
    """The (name, text) of every test table in ``directory/tests/*.csv``, in name order."""
    return [
        (str(path), path.read_text(encoding="utf-8"))
        for path in sorted((directory / TABLES_DIR).glob("*.csv"))
    ]


def fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, mtime_ns, size) of every policy file and test table: cheap to poll for changes."""
    paths = [directory / MODEL_FILE, directory / RULES_FILE, directory / WORKFLOWS_FILE]
    paths += sorted((directory / TABLES_DIR).glob("*.csv"))
    out = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            out.append((path.name, -1, -1))
            continue
        out.append((path.name, stat.st_mtime_ns, stat.st_size))
    return tuple(out)


def load_tested_policy(directory: Path) -> tuple[Policy | None, list[str]]:
    """The policy in ``directory`` if it is valid AND passes its own test tables; else the problems.

    This is the gate a live reload goes through: a file that does not parse, a rule that can never
    match, or a test case whose expectation the edit breaks, each keeps the edit out.
    """
    from engine.policy import PolicyError
    from engine.policy_tables import parse_table, run_cases

    try:
        policy = load_policy(directory)
    except PolicyError as exc:
        return None, [str(p) for p in exc.problems]
    except OSError as exc:
        return None, [f"{exc.filename}: cannot read: {exc.strerror}"]
    problems: list[str] = []
    cases = []
    for name, text in read_policy_tables(directory):
        table_cases, table_problems = parse_table(text, name)
        cases += table_cases
        problems += [str(p) for p in table_problems]
    if not cases:
        problems.append(f"{directory / TABLES_DIR}: no test cases: an untested policy is not loaded")
    problems += [f"test failed: {r.describe()}" for r in run_cases(policy, cases) if not r.passed]
    return (None, problems) if problems else (policy, [])
