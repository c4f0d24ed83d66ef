"""Policy administration ports: reloading the policy files, reading them as they are on disk, editing
them, and the proposals that a second compliance officer approves before an edit made in the console
is applied (four eyes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from engine.model import Page
from engine.policy_edits import PolicyFiles


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did: ``swapped`` in a new version, found it ``unchanged``, or ``rejected`` it
    (``problems`` says why, with file and line; the previous version keeps serving)."""

    outcome: str
    version: str
    previous_version: str
    problems: tuple[str, ...] = ()


class PolicyReloader(Protocol):
    async def reload(self, trigger: str) -> ReloadResult:
        """Read the policy files, check them and run their test tables; swap only if all pass."""
        ...


class PolicyFileReader(Protocol):
    async def read(self) -> PolicyFiles:
        """The policy files and test tables where the service reads its policy (as they are now,
        which is the policy in force unless an edit there was refused)."""
        ...


class PolicyDirectory(Protocol):
    """The policy directory the service reads (``policy.directory``), as the four-eyes workflows
    see it. Names are relative to it (``roles.csv``, ``tests/default.csv``), never server paths."""

    def editable(self) -> tuple[str, ...]:
        """The files a proposal may change: the policy files and the existing test tables."""
        ...

    async def read(self, name: str) -> str:
        """The file's content as it is now ("" for an optional file that does not exist)."""
        ...

    async def problems(self, name: str, content: str) -> tuple[str, ...]:
        """What ``caremsg policy check`` and ``caremsg policy test`` say about the live files with
        ``name`` replaced by ``content`` (file and line each); empty when it would be taken."""
        ...

    async def apply(self, name: str, content: str) -> ReloadResult:
        """Write ``content`` to ``name`` atomically (a temporary file renamed over it, in the
        policy directory), then reload through the live reload's validate-then-swap gate."""
        ...


class ProposalState(StrEnum):
    """Where a proposal stands. Only a ``proposed`` one is ever decided, and it is decided once."""

    PROPOSED = "proposed"
    #: Approved by a second compliance officer and written to the live file in the same step.
    APPLIED = "applied"
    REJECTED = "rejected"
    #: Taken back by the person who proposed it.
    WITHDRAWN = "withdrawn"
    #: Another proposal for the same file was applied first: this one was based on content that is
    #: no longer in force, so it can never be approved.
    SUPERSEDED = "superseded"


@dataclass(frozen=True)
class NewPolicyProposal:
    """A proposed edit of one policy file: the content proposed, and the content it was based on
    (the live file when it was proposed; the diff is between the two)."""

    file: str
    content: str
    base_content: str
    reason: str
    proposed_by: int
    #: The proposer's organization (the fact ``own_org`` compares it with the decider's).
    organization_id: int
    #: For a restore: the applied proposal whose version this one brings back, and which side of
    #: it (``before``: the file as it was before that change; ``after``: as that change left it).
    restores_id: int | None = None
    restores_version: str | None = None


@dataclass(frozen=True)
class PolicyProposal:
    id: int
    file: str
    content: str
    content_sha256: str
    base_content: str
    base_sha256: str
    reason: str
    proposed_by: int
    organization_id: int
    proposed_at: datetime
    state: ProposalState
    restores_id: int | None = None
    restores_version: str | None = None
    #: Who approved, rejected or withdrew it, when, and their note.
    decided_by: int | None = None
    decided_at: datetime | None = None
    decision_note: str | None = None
    #: The policy version in force once it was applied (the hash every decision records).
    applied_version: str | None = None


class PolicyProposalRepository(Protocol):
    """Proposed policy edits, in the workflow's transaction."""

    async def add(self, proposal: NewPolicyProposal, *, at: datetime) -> PolicyProposal:
        """Store a new proposal in state ``proposed``."""
        ...

    async def get(self, proposal_id: int) -> PolicyProposal | None:
        """One proposal by id."""
        ...

    async def list(
        self, *, state: ProposalState | None, file: str | None, before: int | None, limit: int
    ) -> Page[PolicyProposal]:
        """Proposals newest first (ids below ``before``), optionally of one state or file; the
        next cursor is the last id shown."""
        ...

    async def history(self, file: str, limit: int) -> tuple[PolicyProposal, ...]:
        """The applied proposals of one file, the latest first: the versions it went through."""
        ...

    async def lock_files(self) -> None:
        """Hold, until the transaction ends, the one lock every application of a proposal takes,
        so two approvals (on any instance) never write the policy files at once."""
        ...

    async def decide(
        self,
        proposal_id: int,
        state: ProposalState,
        *,
        by: int,
        at: datetime,
        note: str | None,
        applied_version: str | None = None,
    ) -> bool:
        """Move a ``proposed`` proposal to ``state``; False if it was no longer ``proposed``."""
        ...

    async def supersede(
        self, file: str, *, applied: PolicyProposal, by: int, at: datetime
    ) -> tuple[int, ...]:
        """Mark every other open proposal of ``file`` that was based on other content than
        ``applied`` left superseded (decided by ``by``, who applied it); their ids."""
        ...
