"""The on-call roster of a care team and staff away with a delegate: what they are and what follows
from them at a moment (who is on call, who takes an away person's urgent messages, where the
roster has gaps, what a hand-off asks of the chat channel). Pure: no I/O.

Times are UTC instants. A shift holds from ``starts_at`` (inclusive) to ``ends_at`` (exclusive);
an away window from ``starts_at`` (inclusive) until ``ends_at`` (exclusive; None: until ended).
When several windows hold at one moment the latest-starting one wins (the roster workflow refuses
overlapping shifts, so for shifts this only matters for rows written some other way).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from engine.effects import Effect, InviteMembers, RemoveMembers

#: How far ahead the roster reports gaps when a shift is added or removed.
GAP_HORIZON = timedelta(days=7)
#: The longest window a roster read covers (``from``/``to``).
MAX_ROSTER_WINDOW = timedelta(days=62)
#: The longest single shift: longer ones are almost always a typing mistake in a date.
MAX_SHIFT = timedelta(days=31)


@dataclass(frozen=True)
class OnCallShift:
    id: int
    care_team_id: int
    user_id: int
    starts_at: datetime
    ends_at: datetime
    created_by: int
    created_at: datetime

    def holds_at(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at

    def overlaps(self, starts_at: datetime, ends_at: datetime) -> bool:
        return self.starts_at < ends_at and starts_at < self.ends_at


@dataclass(frozen=True)
class StaffAway:
    id: int
    user_id: int
    delegate_id: int
    starts_at: datetime
    ends_at: datetime | None
    created_at: datetime

    def holds_at(self, at: datetime) -> bool:
        return self.starts_at <= at and (self.ends_at is None or at < self.ends_at)


@dataclass(frozen=True)
class Gap:
    """A stretch of the roster's window in which nobody is on call."""

    starts_at: datetime
    ends_at: datetime


def on_call_at(shifts: Iterable[OnCallShift], at: datetime) -> OnCallShift | None:
    """The shift holding at ``at``: the latest-starting one if several do (then the highest id)."""
    holding = [s for s in shifts if s.holds_at(at)]
    return max(holding, key=lambda s: (s.starts_at, s.id)) if holding else None


def next_after(shifts: Iterable[OnCallShift], at: datetime) -> OnCallShift | None:
    """The first shift starting after ``at``."""
    later = [s for s in shifts if s.starts_at > at]
    return min(later, key=lambda s: (s.starts_at, s.id)) if later else None


def away_at(windows: Iterable[StaffAway], at: datetime) -> StaffAway | None:
    """The away window holding at ``at``: the latest-starting one if several do (then the highest id).
    Its SQL spelling is ``integrations.db.rosters.away_at_sql``."""
    holding = [w for w in windows if w.holds_at(at)]
    return max(holding, key=lambda w: (w.starts_at, w.id)) if holding else None


def delegate_at(windows: Iterable[StaffAway], at: datetime, active: Container[int]) -> int | None:
    """Who takes the urgent messages of the person whose away windows these are, at ``at``: the
    delegate of the window holding then (:func:`away_at`) if their account is active (``active``
    holds the active user ids), else nobody — the person is then alerted themself, not the delegate
    of an earlier window the latest one overrides. Its SQL spelling is
    ``integrations.db.rosters.delegate_at_sql``."""
    away = away_at(windows, at)
    return away.delegate_id if away is not None and away.delegate_id in active else None


def gaps(shifts: Iterable[OnCallShift], starts_at: datetime, ends_at: datetime) -> list[Gap]:
    """The stretches of ``[starts_at, ends_at)`` no shift covers, in time order."""
    found: list[Gap] = []
    cursor = starts_at
    for shift in sorted(shifts, key=lambda s: (s.starts_at, s.ends_at)):
        if shift.ends_at <= cursor or shift.starts_at >= ends_at:
            continue
        if shift.starts_at > cursor:
            found.append(Gap(cursor, shift.starts_at))
        cursor = max(cursor, shift.ends_at)
        if cursor >= ends_at:
            break
    if cursor < ends_at:
        found.append(Gap(cursor, ends_at))
    return found


def overlapping(shifts: Iterable[OnCallShift], starts_at: datetime, ends_at: datetime) -> list[OnCallShift]:
    """The shifts that share any moment with ``[starts_at, ends_at)``, earliest first."""
    return sorted((s for s in shifts if s.overlaps(starts_at, ends_at)), key=lambda s: (s.starts_at, s.id))


@dataclass(frozen=True)
class Handoff:
    """A conversation's on-call role changing hands: who held it in the channel, who holds it now."""

    conversation_id: int
    care_team_id: int
    patient_id: int
    from_user_id: int | None
    to_user_id: int | None
    #: The shift that makes ``to_user_id`` the holder (None when nobody is on call).
    shift_id: int | None
    from_chat_id: str | None = None
    to_chat_id: str | None = None
    #: The previous holder is also a member of the conversation in their own right: they stay.
    from_is_member: bool = False


def handoff_effects(handoff: Handoff) -> list[Effect]:
    """What the chat channel needs when the role changes hands: the new holder invited, the old one
    removed unless they are a member in their own right (or hold the role again)."""
    effects: list[Effect] = []
    if handoff.to_chat_id is not None:
        effects.append(InviteMembers(handoff.conversation_id, (handoff.to_chat_id,)))
    if (
        handoff.from_chat_id is not None
        and not handoff.from_is_member
        and handoff.from_user_id != handoff.to_user_id
    ):
        effects.append(RemoveMembers(handoff.conversation_id, (handoff.from_chat_id,)))
    return effects


def window_problems(
    starts_at: datetime, ends_at: datetime | None, *, max_length: timedelta | None
) -> str | None:
    """Why a window is refused (empty, reversed, too long), or None."""
    if ends_at is None:
        return None
    if ends_at <= starts_at:
        return "Must be after startsAt: an empty or reversed window is refused."
    if max_length is not None and ends_at - starts_at > max_length:
        return f"A window may last at most {max_length.days} days."
    return None


def sorted_shifts(shifts: Sequence[OnCallShift]) -> list[OnCallShift]:
    return sorted(shifts, key=lambda s: (s.starts_at, s.id))
