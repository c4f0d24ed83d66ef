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
