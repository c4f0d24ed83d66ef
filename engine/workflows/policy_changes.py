"""Four-eyes policy changes: an edit of a policy file made in the console is only a proposal until a
second compliance officer approves it; approving writes the file and reloads the policy.

Longer than 400 lines because proposing, restoring, approving and closing share one record of a
proposal's details, one diff and one check path, and are read together.

- ``policy.propose``: a compliance officer proposes new content for one policy file, with a reason.
  It must pass ``caremsg policy check`` and ``caremsg policy test`` (the same code, over the live
  files with this one replaced) or nothing is stored.
- ``policy.restore``: the same, with the content of a version a past change replaced or left (the
  history of applied changes per file); restoring needs four eyes like any other change.
- ``policy.approve``: someone other than the proposer (the fact ``proposed_by_other``, decided by
  the policy, not by an ``if`` here) approves. Refused if the live file is no longer the one the
  proposal was based on (stale), or if the check or the tests fail now. Otherwise the file is
  written atomically and the live reload's validate-then-swap takes it in, on this instance at once
  and on the others as for any file edit; other open proposals of the file are superseded.
- ``policy.reject`` (someone else) and ``policy.withdraw`` (the proposer, ``proposed_by_self``)
  close a proposal without touching the files.
- ``policy.change.list`` / ``policy.change.read``: the proposals, the applied history, one with
  its diff.

Every decision's audit record carries the proposal's file, its proposer, reason and unified diff
(policy text, not PHI); an approval's also the approver and the versions before and after.
Editing the files directly stays possible: the live reload picks that up as before, and proposals
based on the old content then answer as stale.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass

from engine.audit import DetailValue
from engine.decisions import Fact
from engine.errors import Conflict, FieldError, InvalidInput, NotFound
from engine.model import Actor, Page
from engine.ports.policy import (
    NewPolicyProposal,
    PolicyDirectory,
    PolicyProposal,
    ProposalState,
    ReloadResult,
)
from engine.ports.units import PolicyChangesUnitOfWork
from engine.services import Guard, Services

MAX_REASON = 2000
MAX_NOTE = 2000
#: Characters of a proposed file (the shipped files are well under it; a bigger edit is made in
#: the files directly).
MAX_CONTENT = 60_000
#: Applied versions of a file shown in its history.
HISTORY_SHOWN = 50
RESTORABLE = ("before", "after")
#: The workflows that close a proposal.
DECIDING = ("policy.approve", "policy.reject", "policy.withdraw")


def _unit_of_work(services: Services) -> PolicyChangesUnitOfWork:
    """This family's view of the unit of work: only the proposals."""
    return services.uow()


def sha256_of(text: str) -> str:
    """The hash a proposal records of the content it was based on and of the content it proposes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def unified_diff(file: str, old: str, new: str) -> str:
    """The change as ``diff -u`` prints it (``a/roles.csv`` → ``b/roles.csv``)."""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{file}", f"b/{file}"
    )
    return "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    )


def normalized(content: str) -> str:
    """Line ends as the files keep them: a browser's textarea sends CRLF."""
    return content.replace("\r\n", "\n").replace("\r", "\n")


def who_proposed(proposal: PolicyProposal, actor: Actor) -> frozenset[str]:
    """The facts between a person and a proposal: they made it, or someone else did; and
    ``own_org`` when its proposer was of the person's organization (the shipped rules do not ask
    for it: see policies/README.md "Four eyes")."""
    mine = Fact.PROPOSED_BY_SELF if proposal.proposed_by == actor.user_id else Fact.PROPOSED_BY_OTHER
    return frozenset({mine, Fact.OWN_ORG} if proposal.organization_id == actor.organization_id else {mine})


async def governing(services: Services, uow: PolicyChangesUnitOfWork, actor: Actor) -> frozenset[str]:
    """``governing`` when the person is of the organization that governs the deployment's policy
    (``policy.governing_organization``, looked up by name each time: an organization created or
    renamed later counts at once). The files decide for every organization; the shipped rules let
    only that organization's compliance officers change them, or one organization's admin could
    create two officers and change every organization's rules alone."""
    found = await uow.organizations.by_name(services.settings.governing_organization)
    return (
        frozenset({Fact.GOVERNING})
        if found is not None and found.id == actor.organization_id
        else frozenset()
    )


def _details(proposal: PolicyProposal) -> dict[str, DetailValue]:
    """What every decision about a proposal records: the file, who proposed it and why, the diff."""
    return {
        "file": proposal.file,
        "proposal_id": proposal.id,
        "proposer_id": proposal.proposed_by,
        "proposer_organization_id": proposal.organization_id,
        "proposal_reason": proposal.reason,
        "base_sha256": proposal.base_sha256,
        "content_sha256": proposal.content_sha256,
        "restores_id": proposal.restores_id,
        "restores_version": proposal.restores_version,
        "diff": unified_diff(proposal.file, proposal.base_content, proposal.content),
    }


#: C0 and C1 control characters other than tab and line ends: no policy file or note holds them.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: What a file that is not UTF-8 text reads as (the console's upload decodes it so).
NOT_TEXT = "\ufffd"
#: A lone surrogate (JSON may carry one): not text any file can hold.
_SURROGATE = re.compile("[\ud800-\udfff]")
#: Bidirectional controls reorder how a line is shown, not how it is read ("Trojan Source",
#: CVE-2021-42574), and U+2028/U+2029 end a line for the policy's parsers (str.splitlines) but not
#: for most editors and diffs: either lets the approver read other text than the one that decides.
_INVISIBLE = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def _controls(value: str, field: str) -> list[FieldError]:
    if NOT_TEXT in value or _SURROGATE.search(value):
        return [FieldError(field, "Must be UTF-8 text, as the policy files are.", "not_text")]
    if _CONTROL.search(value):
        return [FieldError(field, "Must not contain control characters such as NUL.", "control_character")]
    if _INVISIBLE.search(value):
        return [
            FieldError(
                field,
                "Must not contain characters that reorder text or end a line unseen (bidirectional "
                "controls, U+2028, U+2029).",
                "invisible_character",
            )
        ]
    return []


def _text(value: str, field: str, limit: int, *, required: bool) -> tuple[str, list[FieldError]]:
    value = value.strip()
    if _controls(value, field):
        return value, _controls(value, field)
    if (required and not value) or len(value) > limit:
        low = 1 if required else 0
        return value, [FieldError(field, f"Write {low} to {limit} characters.")]
    return value, []


def _refused(problems: tuple[str, ...], detail: str) -> InvalidInput:
    # Problems name policy files and lines, never data.
    return InvalidInput([FieldError("content", p, "policy_rejected") for p in problems], detail=detail)


# --- reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyChanges:
    """What the changes page shows: the proposals, the files one may propose for, and one file's
    content in force and applied history."""

    proposals: Page[PolicyProposal]
    files: tuple[str, ...]
    file: str
    current: str
    history: tuple[PolicyProposal, ...]
    #: Whether the policy would let the reader propose (and restore): what the page offers.
    may_propose: bool = False


async def list_policy_changes(
    services: Services,
    actor: Actor,
    files: PolicyDirectory,
    *,
    file: str | None = None,
    state: ProposalState | None = None,
    before: int | None = None,
    limit: int = 25,
) -> PolicyChanges:
    """Every proposal (newest first), and for ``file`` (default ``roles.csv``) the content in force
    and the versions its applied changes went through (``policy.change.list``). The policy files are
    the deployment's, so every compliance officer sees every proposal."""
    editable = files.editable()
    chosen = file if file in editable else ("roles.csv" if "roles.csv" in editable else editable[0])
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("policy.change.list", resource_type="policy_proposal")
        proposals = await uow.policy_proposals.list(
            state=state, file=None, before=before, limit=services.page_size(limit)
        )
        history = await uow.policy_proposals.history(chosen, HISTORY_SHOWN)
        current = await files.read(chosen)
        governs = await governing(services, uow, actor)
        await uow.commit()
    may_propose = guard.policy.decide(actor.role.value, "policy.propose", governs).allowed
    return PolicyChanges(proposals, editable, chosen, current, history, may_propose)


@dataclass(frozen=True)
class ProposalView:
    proposal: PolicyProposal
    diff: str
    #: The live file is no longer the content the proposal was based on: it cannot be approved.
    stale: bool
    #: Which of approve, reject and withdraw the policy would let the reader do (what the page
    #: offers; each is decided again, and recorded, when done).
    offered: frozenset[str] = frozenset()


async def read_policy_change(
    services: Services, actor: Actor, files: PolicyDirectory, proposal_id: int
) -> ProposalView:
    """One proposal with its diff, and whether the live file moved on since (``policy.change.read``)."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("policy.change.read", resource_type="policy_proposal", resource_id=proposal_id)
        proposal = await uow.policy_proposals.get(proposal_id)
        if proposal is None:
            guard.record_missing("policy.change.read", "policy_proposal", proposal_id)
            raise NotFound("policy_proposal")
        live = await files.read(proposal.file) if proposal.file in files.editable() else None
        governs = await governing(services, uow, actor)
        await uow.commit()
    facts = who_proposed(proposal, actor) | governs
    offered = frozenset(
        workflow
        for workflow in DECIDING
        if proposal.state is ProposalState.PROPOSED
        and guard.policy.decide(actor.role.value, workflow, facts).allowed
    )
    return ProposalView(
        proposal,
        unified_diff(proposal.file, proposal.base_content, proposal.content),
        stale=live is None or sha256_of(live) != proposal.base_sha256,
        offered=offered,
    )


# --- proposing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProposePolicyChange:
    file: str
    content: str
    reason: str


@dataclass(frozen=True)
class RestorePolicyVersion:
    """Propose bringing back a version of a file: the one an applied change replaced (``before``)
    or the one it left (``after``)."""

    proposal_id: int
    version: str
    reason: str


async def _store(
    guard: Guard[PolicyChangesUnitOfWork],
    files: PolicyDirectory,
    new: NewPolicyProposal,
) -> PolicyProposal:
    """Check the proposed content as a reload would and store the proposal; the decision's record
    gets its id, file, reason and diff."""
    if new.content == new.base_content:
        field = "version" if new.restores_id is not None else "content"
        raise InvalidInput([FieldError(field, "This is the file as it is in force: nothing would change.")])
    problems = await files.problems(new.file, new.content)
    if problems:
        guard.annotate(file=new.file, problems=len(problems))
        raise _refused(
            problems, "The proposed file does not pass policy check and policy test; nothing was proposed."
        )
    proposal = await guard.uow.policy_proposals.add(new, at=guard.now)
    guard.identify(resource_id=proposal.id)
    guard.annotate(**_details(proposal))
    return proposal


async def propose_policy_change(
    services: Services, actor: Actor, files: PolicyDirectory, cmd: ProposePolicyChange
) -> PolicyProposal:
    """Propose new content for one policy file (``policy.propose``); nothing changes until a second
    compliance officer approves it. Content that fails the check or the tests is refused (422 with
    each problem's file and line) and not stored."""
    content = normalized(cmd.content)
    reason, errors = _text(cmd.reason, "reason", MAX_REASON, required=True)
    if cmd.file not in files.editable():
        errors.append(FieldError("file", f"Choose one of the policy files: {', '.join(files.editable())}."))
    if not content.strip() and cmd.file != "sms.toml":
        errors.append(FieldError("content", "The file cannot be empty."))
    if len(content) > MAX_CONTENT:
        errors.append(FieldError("content", f"At most {MAX_CONTENT} characters; edit larger files directly."))
    errors += _controls(content, "content")
    if errors:
        raise InvalidInput(errors)
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require(
            "policy.propose", await governing(services, uow, actor), resource_type="policy_proposal"
        )
        base = await files.read(cmd.file)
        new = NewPolicyProposal(cmd.file, content, base, reason, actor.user_id, actor.organization_id)
        proposal = await _store(guard, files, new)
        await uow.commit()
    return proposal


async def restore_policy_version(
    services: Services, actor: Actor, files: PolicyDirectory, cmd: RestorePolicyVersion
) -> PolicyProposal:
    """Propose restoring a version from a file's history (``policy.restore``): a proposal like any
    other, approved by a second compliance officer. Only an applied change's versions are in the
    history; another proposal id answers 404."""
    reason, errors = _text(cmd.reason, "reason", MAX_REASON, required=True)
    if cmd.version not in RESTORABLE:
        errors.append(FieldError("version", "Choose before or after."))
    if errors:
        raise InvalidInput(errors)
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require(
            "policy.restore",
            await governing(services, uow, actor),
            resource_type="policy_proposal",
            resource_id=cmd.proposal_id,
        )
        source = await uow.policy_proposals.get(cmd.proposal_id)
        if source is None or source.state is not ProposalState.APPLIED or source.file not in files.editable():
            guard.record_missing("policy.restore", "policy_version", cmd.proposal_id)
            raise NotFound("policy_version")
        content = source.base_content if cmd.version == "before" else source.content
        base = await files.read(source.file)
        new = NewPolicyProposal(
            source.file,
            content,
            base,
            reason,
            actor.user_id,
            actor.organization_id,
            restores_id=source.id,
            restores_version=cmd.version,
        )
        proposal = await _store(guard, files, new)
        await uow.commit()
    return proposal


# --- deciding --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecidePolicyChange:
    proposal_id: int
    note: str = ""


async def _open_proposal(
    guard: Guard[PolicyChangesUnitOfWork], workflow: str, proposal_id: int, governs: frozenset[str]
) -> PolicyProposal:
    """The proposal, decided as ``workflow`` with the facts between the actor and it (who proposed
    it, and ``governs``: see :func:`governing`); 404 if there is none, 409 if it is no longer open."""

    async def facts_of() -> frozenset[str] | None:
        # For the record of a refused role only (`policy diff` replays it): the answer is the same.
        found = await guard.uow.policy_proposals.get(proposal_id)
        return None if found is None else who_proposed(found, guard.actor) | governs

    await guard.require_role_recording_facts(
        workflow, facts_of, resource_type="policy_proposal", resource_id=proposal_id
    )
    proposal = await guard.uow.policy_proposals.get(proposal_id)
    if proposal is None:
        guard.record_missing(workflow, "policy_proposal", proposal_id)
        raise NotFound("policy_proposal")
    guard.require(
        workflow,
        who_proposed(proposal, guard.actor) | governs,
        resource_type="policy_proposal",
        resource_id=proposal.id,
        details=_details(proposal),
    )
    if proposal.state is not ProposalState.PROPOSED:
        raise Conflict(f"This proposal is {proposal.state.value}; only an open proposal can be decided.")
    return proposal


@dataclass(frozen=True)
class Applied:
    proposal: PolicyProposal
    reload: ReloadResult
    superseded: tuple[int, ...]


async def approve_policy_change(
    services: Services, actor: Actor, files: PolicyDirectory, cmd: DecidePolicyChange
) -> Applied:
    """Approve a proposal someone else made and apply it (``policy.approve``, fact
    ``proposed_by_other``).

    Under one lock for every application (on any instance): refused (409) if the live file is no
    longer the content the proposal was based on, refused (422) if the check or the tests fail
    now; else the file is written atomically and reloaded through validate-then-swap. If the
    approval cannot then be recorded (audit included), the previous content is written back: no
    change is ever live without its record.
    """
    note, errors = _text(cmd.note, "note", MAX_NOTE, required=False)
    if errors:
        raise InvalidInput(errors)
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        await uow.policy_proposals.lock_files()
        proposal = await _open_proposal(
            guard, "policy.approve", cmd.proposal_id, await governing(services, uow, actor)
        )
        if proposal.file not in files.editable():
            guard.annotate(refused="missing_file")
            raise Conflict(
                f"{proposal.file} is no longer a policy file here; the proposal cannot be applied."
            )
        live = await files.read(proposal.file)
        if sha256_of(live) != proposal.base_sha256:
            guard.annotate(refused="stale")
            raise Conflict(
                f"{proposal.file} changed since this proposal was made: it is stale and cannot be "
                "approved. Propose the edit again on the file as it is now."
            )
        problems = await files.problems(proposal.file, proposal.content)
        if problems:
            guard.annotate(refused="check", problems=len(problems))
            raise _refused(problems, "The proposal no longer passes policy check and policy test.")
        try:
            result = await files.apply(proposal.file, proposal.content)
            if result.outcome == "rejected":
                guard.annotate(refused="reload", problems=len(result.problems))
                raise _refused(
                    result.problems, "The live reload refused the file; the previous version serves."
                )
            if not await uow.policy_proposals.decide(
                proposal.id,
                ProposalState.APPLIED,
                by=actor.user_id,
                at=guard.now,
                note=note or None,
                applied_version=result.version,
            ):
                raise Conflict("This proposal was decided meanwhile.")
            superseded = await uow.policy_proposals.supersede(
                proposal.file, applied=proposal, by=actor.user_id, at=guard.now
            )
            guard.annotate(
                approver_id=actor.user_id,
                approval_note=note or None,
                version_before=result.previous_version,
                version_after=result.version,
                reload=result.outcome,
                superseded=",".join(map(str, superseded)) or None,
            )
            await uow.commit()
        except BaseException:
            await files.apply(proposal.file, live)
            raise
    applied = await _reread(services, proposal.id)
    return Applied(applied or proposal, result, superseded)


async def _reread(services: Services, proposal_id: int) -> PolicyProposal | None:
    async with _unit_of_work(services) as uow:
        return await uow.policy_proposals.get(proposal_id)


async def _close(
    services: Services,
    actor: Actor,
    workflow: str,
    state: ProposalState,
    cmd: DecidePolicyChange,
    *,
    required: bool,
) -> PolicyProposal:
    note, errors = _text(cmd.note, "note", MAX_NOTE, required=required)
    if errors:
        raise InvalidInput(errors)
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        proposal = await _open_proposal(
            guard, workflow, cmd.proposal_id, await governing(services, uow, actor)
        )
        if not await uow.policy_proposals.decide(
            proposal.id, state, by=actor.user_id, at=guard.now, note=note or None
        ):
            raise Conflict("This proposal was decided meanwhile.")
        guard.annotate(decided_by=actor.user_id, decision_note=note or None)
        await uow.commit()
    closed = await _reread(services, proposal.id)
    assert closed is not None
    return closed


async def reject_policy_change(services: Services, actor: Actor, cmd: DecidePolicyChange) -> PolicyProposal:
    """Reject someone else's proposal with a reason (``policy.reject``, ``proposed_by_other``);
    the files are not touched."""
    return await _close(services, actor, "policy.reject", ProposalState.REJECTED, cmd, required=True)


async def withdraw_policy_change(services: Services, actor: Actor, cmd: DecidePolicyChange) -> PolicyProposal:
    """Take back one's own proposal (``policy.withdraw``, ``proposed_by_self``)."""
    return await _close(services, actor, "policy.withdraw", ProposalState.WITHDRAWN, cmd, required=False)
