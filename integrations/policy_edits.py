"""The policy directory as the four-eyes workflows edit it (engine/ports/policy.py ``PolicyDirectory``).

A proposal is checked with the code ``caremsg policy check`` and ``caremsg policy test`` run
(:func:`integrations.policy_files.tested_sources`), over the live files read into memory with the
one proposed file replaced: nothing is written to check it. Applying writes a temporary file next to
the target and renames it over the target (atomic on one filesystem: a reader sees the old file or
the new one, never half of it), then reloads through the live reload
(:class:`integrations.policy_reload.FilePolicyReloader`): validated, tested, swapped, and announced
to the other instances, which also find the new file at their next poll as for any edit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path

from engine.policy_edits import TABLES_DIR
from engine.ports.policy import PolicyReloader, ReloadResult
from integrations.policy_files import (
    ESCALATION_FILE,
    MODEL_FILE,
    NOTICES_FILE,
    RETENTION_FILE,
    RULES_FILE,
    SMS_FILE,
    WORKFLOWS_FILE,
    read_policy_files,
    tested_sources,
)

#: The files a proposal may change, besides the existing test tables.
POLICY_FILES = (
    RULES_FILE,
    WORKFLOWS_FILE,
    SMS_FILE,
    NOTICES_FILE,
    ESCALATION_FILE,
    RETENTION_FILE,
    MODEL_FILE,
)
#: What the reload is told triggered it (the reloader announces it to the other instances).
TRIGGER = "approval"


class EditablePolicyDirectory:
    """``directory``'s policy files; ``reloader`` takes an applied edit in."""

    def __init__(self, directory: Path, reloader: PolicyReloader) -> None:
        self.directory = directory
        self.reloader = reloader

    def editable(self) -> tuple[str, ...]:
        tables = tuple(f"{TABLES_DIR}/{p.name}" for p in sorted((self.directory / TABLES_DIR).glob("*.csv")))
        return POLICY_FILES + tables

    def _path(self, name: str) -> Path:
        if name not in self.editable():
            raise ValueError(f"not an editable policy file: {name!r}")
        return self.directory / name

    async def read(self, name: str) -> str:
        path = self._path(name)
        return await asyncio.to_thread(_read, path)

    async def problems(self, name: str, content: str) -> tuple[str, ...]:
        self._path(name)
        return await asyncio.to_thread(self._problems, name, content)

    def _problems(self, name: str, content: str) -> tuple[str, ...]:
        try:
            files = read_policy_files(self.directory)
        except OSError as exc:
            return (f"{name}:1: error: cannot read the policy directory: {exc.strerror}",)
        edited = files.replaced(name, content)
        _policy, messages = tested_sources(edited.sources, list(edited.tables))
        return tuple(messages)

    async def apply(self, name: str, content: str) -> ReloadResult:
        path = self._path(name)
        await asyncio.to_thread(write_atomically, path, content)
        return await self.reloader.reload(TRIGGER)


def _read(path: Path) -> str:
    """The file as an editor shows it; bytes that are not UTF-8 read as U+FFFD, so a proposal can
    replace a file saved in another encoding (which no reload takes in) with its UTF-8 text."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def write_atomically(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` through a temporary file in the same directory, flushed to disk,
    then renamed over ``path``; the file keeps its permissions."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
