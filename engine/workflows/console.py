"""The web console's own workflows: entering it, reading the policy in words and its test tables,
and trying an edited policy file (a dry run).

The console is a second door to the same engine, not a second authorization path: signing in is the
login workflow (with its throttle), and then ``console.sign_in`` decides whether this account may use
the console at all; every page is a workflow of its own (or the API's, e.g. ``audit.read``), decided
by the policy and audited like any API call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from engine.audit import AuditEvent
from engine.decisions import Fact
from engine.errors import FieldError, InvalidInput
from engine.model import Actor
from engine.policy import Policy
from engine.policy_edits import (
    AuditedDecision,
    CaseChange,
    Checked,
    PolicyFiles,
    Replay,
    TableRun,
    case_changes,
    check_files,
    content_hash,
    distinct_cases,
    policy_file_name,
    replay,
    run_tables,
)
from engine.ports.policy import PolicyFileReader
from engine.ports.units import AuditUnitOfWork, Transaction
from engine.services import Guard, Services

#: The largest edited file a what-if takes (the request's own limit, api.max_body_bytes, comes first).
MAX_EDITED_BYTES = 256 * 1024
#: At most this many audited decisions of the period are decided again (the newest).
WHAT_IF_DECISIONS = 100_000


def _unit_of_work(services: Services) -> Transaction:
    """This family's view of the unit of work: it records decisions only."""
    return services.uow()


async def enter_console(services: Services, actor: Actor) -> None:
    """Decide ``console.sign_in`` for a freshly logged-in account (the fact ``self``: one's own
    account); raise :class:`~engine.errors.Forbidden` for a role the policy keeps out of the console."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("console.sign_in", {Fact.SELF}, resource_type="user", resource_id=actor.user_id)
        await uow.commit()


async def read_policy_in_words(services: Services, actor: Actor) -> Policy:
    """The policy in force, for the console's "policy in words" page; decided as
    ``console.policy.read``."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("console.policy.read", resource_type="policy")
        await uow.commit()
    return guard.policy


@dataclass(frozen=True)
class PolicyTests:
    """The policy's test tables run against the policy in force, as ``caremsg policy test`` runs
    them: each case's result and what no case exercises."""

    policy: Policy
    #: The version of the files on disk; differs from ``policy.version`` while an edit there waits
    #: (or was refused by the live reload).
    files_version: str
    run: TableRun


async def read_policy_tests(services: Services, actor: Actor, reader: PolicyFileReader) -> PolicyTests:
    """The test tables where the service reads its policy, run against the policy in force; decided
    as ``console.policy.tests``."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("console.policy.tests", resource_type="policy")
        await uow.commit()
    files = await reader.read()
    return PolicyTests(guard.policy, files.sources.version, run_tables(guard.policy, files.tables))


@dataclass(frozen=True)
class EditedFile:
    """One edited file: ``name`` says which policy file it stands for (``roles.csv``,
    ``default.csv`` or ``tests/default.csv`` for a test table), ``field`` where the form took it;
    ``content`` must be UTF-8 text."""

    name: str
    content: bytes
    field: str = "file"


@dataclass(frozen=True)
class TryEdit:
    files: tuple[EditedFile, ...]
    #: The audited decisions of [since, until) are decided again under the edit.
    since: datetime
    until: datetime
    #: What the form itself could not read (a time that is not one): reported with the rest, after
    #: the decision, so that a role refused the what-if learns nothing from its errors.
    errors: tuple[FieldError, ...] = ()


@dataclass(frozen=True)
class WhatIf:
    """What an edit would do: nothing of it is applied.

    ``edited``: (policy file, SHA-256 of its text, whether it adds a test table). ``checked``: the
    edited set's ``policy check``; ``run`` its test tables (None if the files do not form a
    policy); ``changes`` the test cases the edit decides differently than the policy in force, of
    ``cases_compared``; ``replay`` the audited decisions of the actor's organization in the period
    decided again (None if the files do not form a policy), of ``decisions_read`` read.
    """

    in_force: Policy
    files_version: str
    #: Every policy file and test table on disk, by name (what an edit may stand for).
    file_names: tuple[str, ...]
    edited: tuple[tuple[str, str, bool], ...]
    checked: Checked
    run: TableRun | None
    changes: tuple[CaseChange, ...]
    cases_compared: int
    replay: Replay | None
    decisions_read: int
    decisions_limit: int
    since: datetime
    until: datetime


async def open_what_if(services: Services, actor: Actor, reader: PolicyFileReader) -> PolicyFiles:
    """The policy files an edit starts from, for the what-if form (one of them may be shown to
    start editing from); decided as ``console.policy.what_if``, like trying the edit."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("console.policy.what_if", resource_type="policy")
        await uow.commit()
    return await reader.read()


def _audit_unit_of_work(services: Services) -> AuditUnitOfWork:
    """The what-if reads the audit trail besides recording decisions."""
    return services.uow()


def _named(cmd: TryEdit, files: PolicyFiles) -> list[tuple[str, str]]:
    """(policy file, text) of every edited file; every file that cannot be one is a field error."""
    errors: list[FieldError] = list(cmd.errors)
    named: dict[str, str] = {}
    for edited in cmd.files:
        name = policy_file_name(edited.name, files.sources)
        if name is None:
            errors.append(
                FieldError(
                    edited.field,
                    "Name a policy file: roles.csv, workflows.toml, sms.toml, model.conf, or a test "
                    "table NAME.csv.",
                )
            )
            continue
        if len(edited.content) > MAX_EDITED_BYTES:
            errors.append(
                FieldError(edited.field, f"A file may hold at most {MAX_EDITED_BYTES // 1024} KiB.")
            )
            continue
        try:
            text = edited.content.decode("utf-8-sig")
        except UnicodeDecodeError:
            errors.append(FieldError(edited.field, "The file is not UTF-8 text."))
            continue
        if "\0" in text:
            errors.append(FieldError(edited.field, "The file is not text (it holds a NUL character)."))
        elif name in named:
            errors.append(FieldError(edited.field, f"{name} is given twice."))
        else:
            named[name] = text
    if not cmd.files:
        errors.append(FieldError("text", "Paste an edited file or choose one to upload."))
    if not cmd.errors and cmd.since >= cmd.until:
        errors.append(FieldError("from", "Must be earlier than to."))
    if errors:
        raise InvalidInput(errors)
    return list(named.items())


async def try_policy_edit(services: Services, actor: Actor, reader: PolicyFileReader, cmd: TryEdit) -> WhatIf:
    """Decided as ``console.policy.what_if``: the policy files as they are, with the edited ones in
    their place, checked and tested exactly as ``caremsg policy check`` and ``policy test`` do, and
    compared with the policy in force as ``policy diff`` does, over the audited decisions of the
    actor's own organization in the period. Nothing is applied or written but the audit records:
    the decision, and ``policy.what_if`` with the files' names and SHA-256 hashes, the period and
    how many problems the check found, never a file's text. A form that is not valid is refused
    after the decision, with every field's error.
    """
    async with _audit_unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("console.policy.what_if", resource_type="policy")
        current = await reader.read()
        named = _named(cmd, current)
        files = current
        for name, text in named:
            files = files.replaced(name, text)
        edited = tuple((name, content_hash(text), current.text_of(name) is None) for name, text in named)
        checked = check_files(files)
        decisions: list[AuditedDecision] = []
        if checked.policy is not None:
            decisions = await uow.audit_trail.decisions(
                actor.organization_id, cmd.since, cmd.until, WHAT_IF_DECISIONS
            )
        uow.audit.record(
            AuditEvent.by(
                actor,
                event="policy.what_if",
                workflow="console.policy.what_if",
                outcome="success",
                occurred_at=guard.now,
                resource_type="policy",
                resource_id=checked.policy.version if checked.policy is not None else None,
                policy_version=guard.policy.version,
                details={
                    "files": " ".join(name for name, _, _ in edited),
                    "sha256": " ".join(digest for _, digest, _ in edited),
                    "since": cmd.since.isoformat(),
                    "until": cmd.until.isoformat(),
                    "problems": len(checked.problems),
                },
            )
        )
        await uow.commit()
    in_force = guard.policy
    run: TableRun | None = None
    changes: list[CaseChange] = []
    compared, replayed = 0, None
    if checked.policy is not None:
        # Deciding every case and decision again costs a pycasbin walk per distinct question on a
        # fresh policy (milliseconds each): done in a thread, so the service keeps answering. Its
        # policies are private copies (the one in force rebuilt from the same files when they are
        # the files in force), so no other request shares their enforcer or memo meanwhile.
        old = (
            Policy.from_sources(current.sources) if current.sources.version == in_force.version else in_force
        )
        run, changes, compared, replayed = await asyncio.to_thread(
            _dry_run, old, checked.policy, current, files, decisions
        )
    return WhatIf(
        in_force,
        current.sources.version,
        tuple(current.names),
        edited,
        checked,
        run,
        tuple(changes),
        compared,
        replayed,
        len(decisions),
        WHAT_IF_DECISIONS,
        cmd.since,
        cmd.until,
    )


def _dry_run(
    old: Policy, new: Policy, current: PolicyFiles, edited: PolicyFiles, decisions: list[AuditedDecision]
) -> tuple[TableRun, list[CaseChange], int, Replay]:
    """The edited set's test tables, the cases it decides differently, and the decisions replayed."""
    cases, _problems = distinct_cases(current.tables, edited.tables)
    return (
        run_tables(new, edited.tables),
        case_changes(old, new, cases),
        len(cases),
        replay(old, new, decisions),
    )
