"""How long message content lives, per organization: pure, no I/O.

``policies/retention.toml`` sets it (absent or empty: every organization keeps content)::

    [default]
    content_days = "keep"        # or a whole number of days, 1 to 36500

    [organization.12]
    content_days = 2555          # this organization's messages lose their content after 7 years

An organization's own entry wins over ``[default]``; ``"keep"`` in either means content is never
deleted. Only message *content* has a lifespan: a message's metadata and every audit record stay
(HIPAA asks for six years of audit records; retention never deletes one). The rules are policy:
read, checked at file and line, and reloaded with the other policy files (``Policy.retention``),
and their hash (``Policy.retention_version``) is recorded with each sweep's records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

#: The value that means "never delete".
KEEP = "keep"
#: The longest lifespan that can be set (100 years): anything longer is surely a typo.
MAX_DAYS = 36_500
KEY = "content_days"


@dataclass(frozen=True)
class RetentionRules:
    """Content lifespans: ``default_days`` for every organization without its own entry in
    ``by_organization``; ``None`` keeps content forever."""

    default_days: int | None = None
    by_organization: Mapping[int, int | None] = field(default_factory=dict)

    def days_for(self, organization_id: int) -> int | None:
        """The lifespan, in days, of ``organization_id``'s message content (None: kept)."""
        if organization_id in self.by_organization:
            return self.by_organization[organization_id]
        return self.default_days

    def cutoff(self, organization_id: int, now: datetime) -> datetime | None:
        """Messages of ``organization_id`` sent before this have outlived their content (None:
        nothing has)."""
        days = self.days_for(organization_id)
        return None if days is None else now - timedelta(days=days)

    @property
    def keeps_everything(self) -> bool:
        """True when no organization's content ever expires (the shipped default)."""
        return self.default_days is None and all(d is None for d in self.by_organization.values())


def parse_rules(
    data: Mapping[str, Any], line_of: Callable[[str], int]
) -> tuple[RetentionRules, list[tuple[int, str]]]:
    """The rules ``data`` (parsed TOML) sets, and its problems as (line, message); ``line_of(key)``
    finds the line a key or table header is on."""
    problems: list[tuple[int, str]] = []
    for table in sorted(set(data) - {"default", "organization"}):
        problems.append(
            (line_of(table), f"unknown table or key {table!r} (known: [default], [organization.ID])")
        )

    def days(where: str, table: Any, line: int) -> int | None:
        if not isinstance(table, dict):
            problems.append((line, f"{where} must be a table"))
            return None
        for key in sorted(set(table) - {KEY}):
            problems.append((line_of(key), f"{where}: unknown key {key!r} (known: {KEY})"))
        value = table.get(KEY, KEY_ABSENT)
        if value is KEY_ABSENT or value == KEEP:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DAYS:
            problems.append(
                (
                    line_of(KEY) if KEY in table else line,
                    f'{where}.{KEY} must be "keep" or 1 to {MAX_DAYS} days',
                )
            )
            return None
        return value

    default = days("default", data.get("default", {}), line_of("default"))
    by_org: dict[int, int | None] = {}
    organizations = data.get("organization", {})
    if not isinstance(organizations, dict):
        problems.append((line_of("organization"), "organization must hold tables [organization.ID]"))
        organizations = {}
    for key, table in organizations.items():
        header = f"organization.{key}"
        if not (key.isascii() and key.isdigit()) or int(key) < 1:
            problems.append(
                (line_of(header), f"[{header}]: an organization is named by its id, a whole number")
            )
            continue
        by_org[int(key)] = days(header, table, line_of(header))
    return RetentionRules(default, by_org), problems


KEY_ABSENT = object()


@dataclass(frozen=True)
class LegalHold:
    """A legal hold on a patient's messages or one conversation's (exactly one of the two is set):
    while it lasts (``lifted_at`` None) the retention sweep leaves their content alone."""

    id: int
    organization_id: int
    patient_id: int | None
    conversation_id: int | None
    #: The patient whose record it concerns (a conversation's patient for a hold on a conversation).
    subject_patient_id: int
    placed_by: int
    placed_at: datetime
    reason: str = field(repr=False)
    lifted_by: int | None = None
    lifted_at: datetime | None = None
    lift_reason: str | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.lifted_at is None
