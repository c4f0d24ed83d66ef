"""Roster ports: a care team's on-call shifts, staff away with a delegate, and conversations that
include the on-call role of a care team (see :mod:`engine.rosters` for what they mean)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from engine.rosters import OnCallShift, StaffAway


class RosterRepository(Protocol):
    """A care team's on-call shifts, in the workflow's transaction."""

    async def lock_team(self, care_team_id: int) -> None:
        """Hold the care team's roster until the transaction ends: two changes to one roster are made
        one after the other, so an overlap check cannot miss a shift being added at the same moment."""
        ...

    async def between(self, care_team_id: int, starts_at: datetime, ends_at: datetime) -> list[OnCallShift]:
        """The team's shifts sharing any moment with ``[starts_at, ends_at)``, earliest first."""
        ...

    async def get(self, shift_id: int) -> OnCallShift | None: ...

    async def add(
        self, care_team_id: int, user_id: int, starts_at: datetime, ends_at: datetime, created_by: int
    ) -> OnCallShift: ...

    async def remove(self, shift_id: int) -> None: ...


class AwayRepository(Protocol):
    """Staff away with a delegate, in the workflow's transaction."""

    async def of_user(self, user_id: int, at: datetime) -> list[StaffAway]:
        """The user's away windows holding at ``at`` or starting later, earliest first."""
        ...

    async def add(
        self, user_id: int, delegate_id: int, starts_at: datetime, ends_at: datetime | None
    ) -> StaffAway: ...

    async def end_from(self, user_id: int, at: datetime) -> int:
        """End the user's away from ``at`` on: a window holding then ends at ``at``, a later one is
        dropped. Returns how many windows changed."""
        ...


@dataclass(frozen=True)
class OnCallRole:
    """A conversation's on-call role: whose care team, and who holds it in the channel now."""

    conversation_id: int
    care_team_id: int
    holder_id: int | None


class OnCallRoutes(Protocol):
    """Conversations that include a care team's on-call role instead of a person."""

    async def include(
        self, conversation_id: int, care_team_id: int, holder_id: int | None, added_by: int
    ) -> None:
        """Make the conversation include the care team's on-call role, held now by ``holder_id``."""
        ...

    async def of_conversation(self, conversation_id: int) -> OnCallRole | None: ...
