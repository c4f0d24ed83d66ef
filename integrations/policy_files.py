"""Reading the policy directory from disk: the policy files and their test tables.

Every name this module hands out (in :class:`engine.policy.PolicySources`, in test tables, in
problems) is relative to the policy directory, e.g. ``roles.csv`` or ``tests/default.csv``: a
compliance officer opens it next to the files, and no server path reaches an API answer.
"""

from __future__ import annotations

import errno
from functools import lru_cache
from pathlib import Path

from engine.policy import Policy, PolicyProblem, PolicySources
from engine.policy_edits import TABLES_DIR, PolicyFiles, check_files
from engine.policy_tables import PolicyCase, run_cases

MODEL_FILE = "model.conf"
RULES_FILE = "roles.csv"
WORKFLOWS_FILE = "workflows.toml"
#: Optional: without it no compliance group gets full-text SMS.
SMS_FILE = "sms.toml"
#: Optional: without it the Part 2 notice is the rule's short form.
NOTICES_FILE = "notices.toml"
#: Optional: without it urgent messages escalate on the default schedule (engine/escalation.py).
ESCALATION_FILE = "escalation.toml"
#: Optional: without it every organization keeps message content (engine/retention.py).
RETENTION_FILE = "retention.toml"


class NotUtf8(OSError):
    """A policy file whose bytes are not UTF-8 (an editor that saved it as Latin-1 or UTF-16):
    unreadable like a missing file, at the line of its first such byte."""

    def __init__(self, path: Path, data: bytes, exc: UnicodeDecodeError) -> None:
        self.line = data[: exc.start].count(b"\n") + 1
        reason = f"not UTF-8 text (byte 0x{data[exc.start]:02x} on line {self.line}); save the file as UTF-8"
        super().__init__(errno.EILSEQ, reason, str(path))


def read_policy_text(path: Path) -> str:
    """A policy file's text, as ``Path.read_text`` reads it (newlines made ``\\n``); raises
    OSError when it cannot be read, :class:`NotUtf8` when its bytes are not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:  # where in the whole file: the decoder saw one chunk
        data = path.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as whole:
            raise NotUtf8(path, data, whole) from None
        raise NotUtf8(path, exc.object, exc) from None  # changed on disk meanwhile


def read_policy_sources(directory: Path) -> PolicySources:
    """Read the policy files of ``directory``; names in problems are relative to it."""
    sms, notices, escalation = directory / SMS_FILE, directory / NOTICES_FILE, directory / ESCALATION_FILE
    retention = directory / RETENTION_FILE
    return PolicySources(
        model=read_policy_text(directory / MODEL_FILE),
        rules=read_policy_text(directory / RULES_FILE),
        workflows=read_policy_text(directory / WORKFLOWS_FILE),
        model_name=MODEL_FILE,
        rules_name=RULES_FILE,
        workflows_name=WORKFLOWS_FILE,
        sms=read_policy_text(sms) if sms.is_file() else "",
        sms_name=SMS_FILE,
        notices=read_policy_text(notices) if notices.is_file() else "",
        notices_name=NOTICES_FILE,
        escalation=read_policy_text(escalation) if escalation.is_file() else "",
        escalation_name=ESCALATION_FILE,
        retention=read_policy_text(retention) if retention.is_file() else "",
        retention_name=RETENTION_FILE,
    )


def load_policy(directory: Path) -> Policy:
    """Read and validate the policy in ``directory``; raises :class:`engine.policy.PolicyError`."""
    return _policy_of(read_policy_sources(directory))


@lru_cache(maxsize=8)
def _policy_of(sources: PolicySources) -> Policy:
    """Parse files of this exact content once per process (as :func:`_tested` checks them once).

    A :class:`Policy` never changes and what it remembers are pure answers, so the apps and commands
    of one process (a test process starts hundreds) may share one. A malformed set raises every
    time: exceptions are not cached."""
    return Policy.from_sources(sources)


def read_policy_tables(directory: Path) -> list[tuple[str, str]]:
    """The (name, text) of every test table in ``directory/tests/*.csv``, in name order; each name
    is relative to ``directory`` (``tests/default.csv``)."""
    return [
        (f"{TABLES_DIR}/{path.name}", read_policy_text(path))
        for path in sorted((directory / TABLES_DIR).glob("*.csv"))
    ]


def fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, mtime_ns, size) of every policy file and test table: cheap to poll for changes."""
    names = (MODEL_FILE, RULES_FILE, WORKFLOWS_FILE, SMS_FILE, NOTICES_FILE, ESCALATION_FILE, RETENTION_FILE)
    paths = [directory / name for name in names]
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


def unreadable(directory: Path, exc: OSError) -> PolicyProblem:
    """A file that cannot be read, named relative to the policy directory."""
    name = Path(str(exc.filename or directory))
    try:
        name = name.relative_to(directory)
    except ValueError:
        name = Path(name.name)
    return PolicyProblem(str(name), getattr(exc, "line", 1), f"cannot read: {exc.strerror}")


def read_policy_files(directory: Path) -> PolicyFiles:
    """Every policy file and test table of ``directory``; raises OSError for a file that cannot be
    read."""
    return PolicyFiles(read_policy_sources(directory), tuple(read_policy_tables(directory)))


class DirectoryPolicyFiles:
    """The :class:`engine.ports.PolicyFileReader` adapter: the files of the configured directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def read(self) -> PolicyFiles:
        return read_policy_files(self.directory)


def check_policy(directory: Path) -> tuple[Policy | None, list[PolicyCase], list[PolicyProblem]]:
    """What ``caremsg policy check`` enforces (:func:`engine.policy_edits.check_files`) on the files
    of ``directory``, and the first half of every live reload's gate.

    Returns the policy (None if the files do not form one), the cases, and every problem.
    """
    try:
        files = read_policy_files(directory)
    except OSError as exc:
        return None, [], [unreadable(directory, exc)]
    checked = check_files(files)
    return checked.policy, list(checked.cases), list(checked.problems)


def check_sources(
    sources: PolicySources, tables: list[tuple[str, str]]
) -> tuple[Policy | None, list[PolicyCase], list[PolicyProblem]]:
    """:func:`check_policy` over files already read (an edited copy held in memory: a proposal)."""
    checked = check_files(PolicyFiles(sources, tuple(tables)))
    return checked.policy, list(checked.cases), list(checked.problems)


def tested_sources(sources: PolicySources, tables: list[tuple[str, str]]) -> tuple[Policy | None, list[str]]:
    """:func:`load_tested_policy` over files already read: the policy if it passes ``policy check``
    and its own test tables, else every problem."""
    policy, problems = _tested(sources, tuple(tables))
    return policy, list(problems)


@lru_cache(maxsize=8)
def _tested(
    sources: PolicySources, tables: tuple[tuple[str, str], ...]
) -> tuple[Policy | None, tuple[str, ...]]:
    """Check and test files of this exact content once per process.

    The outcome is a function of the text alone (a :class:`Policy` never changes, and its cases are
    decided without a clock or a database), and running the tables is ~95 % of a load: every
    instance start and every reload after an unrelated touch of the directory paid it again.
    Any edit changes the key, so an edit is always checked and tested."""
    policy, cases, problems = check_sources(sources, list(tables))
    messages = [str(p) for p in problems]
    if policy is None:
        return None, tuple(messages)
    messages += [f"test failed: {r.describe()}" for r in run_cases(policy, cases) if not r.passed]
    return (None, tuple(messages)) if messages else (policy, ())


def load_tested_policy(directory: Path) -> tuple[Policy | None, list[str]]:
    """The policy in ``directory`` if it passes ``policy check`` AND its own test tables; else the
    problems (file and line, relative to ``directory``).

    This is the gate a live reload goes through: a file that does not parse, a rule that can never
    match, a workflow without a test case, or a case whose expectation the edit breaks, each keeps
    the edit out.
    """
    try:
        sources = read_policy_sources(directory)
        tables = read_policy_tables(directory)
    except OSError as exc:
        return None, [str(unreadable(directory, exc))]
    return tested_sources(sources, tables)
