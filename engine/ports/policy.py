"""Policy administration ports: reloading the policy files, and reading them as they are on disk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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
