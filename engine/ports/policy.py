"""Policy administration port: reloading the policy files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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
