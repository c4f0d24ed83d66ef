"""The escalation schedule of urgent messages, and which of its steps are due: pure, no I/O.

An urgent message (``priority = "urgent"``) must be acknowledged by a member of the patient's care
team. Until it is, the scheduler (``integrations/escalation.py``) takes these steps, at these times
after the message was sent, as ``policies/escalation.toml`` sets them (defaults in brackets):

- ``realert``: re-alert, in the conversation's channel, every member who has not read it, every
  ``realert_every_minutes`` [2]; rounds 1, 2, 3 ... (a round missed while no scheduler ran is
  skipped: the next one taken is the latest due, so a restart never re-alerts five times at once);
- ``text``: a text without clinical content to each unread member's registered phone, once, after
  ``text_after_minutes`` [5];
- ``on_call``: the care team's on-call member is added to the conversation and alerted, once, after
  ``on_call_after_minutes`` [10];
- ``admin``: the admins of the patient's organization are alerted, once, after
  ``admin_after_minutes`` [15].

0 turns a step off. The schedule is policy: read, checked and reloaded with the other policy files
(``Policy.escalation``), and its hash (``Policy.escalation_version``) is recorded with each step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

#: The workflow a sender needs on top of ``message.send`` to send an urgent message.
SEND_URGENT = "message.send_urgent"
#: The workflow of acknowledging an urgent message.
ACKNOWLEDGE = "message.acknowledge"
#: The workflow decided for each person an escalation step alerts (the subject of the decision).
ESCALATE = "message.escalate"

ROUTINE, URGENT = "routine", "urgent"
PRIORITIES = (ROUTINE, URGENT)


class Step(StrEnum):
    """The escalation steps, in the order they normally come."""

    REALERT = "realert"
    TEXT = "text"
    ON_CALL = "on_call"
    ADMIN = "admin"


#: What escalation.toml may hold: table -> keys (and their defaults, in minutes).
DEFAULT_MINUTES: Mapping[str, int] = {
    "realert_every_minutes": 2,
    "text_after_minutes": 5,
    "on_call_after_minutes": 10,
    "admin_after_minutes": 15,
}
TABLE = "urgent"
#: The longest a step may be set to wait (a day): a longer wait is surely a typo.
MAX_MINUTES = 24 * 60


@dataclass(frozen=True)
class EscalationSchedule:
    """When each step of an unacknowledged urgent message is due, in minutes after it was sent."""

    realert_every_minutes: int = DEFAULT_MINUTES["realert_every_minutes"]
    text_after_minutes: int = DEFAULT_MINUTES["text_after_minutes"]
    on_call_after_minutes: int = DEFAULT_MINUTES["on_call_after_minutes"]
    admin_after_minutes: int = DEFAULT_MINUTES["admin_after_minutes"]

    def once_after(self) -> dict[Step, int]:
        """The one-off steps and their delays (minutes), those switched off (0) left out."""
        delays = {
            Step.TEXT: self.text_after_minutes,
            Step.ON_CALL: self.on_call_after_minutes,
            Step.ADMIN: self.admin_after_minutes,
        }
        return {step: minutes for step, minutes in delays.items() if minutes > 0}


@dataclass(frozen=True)
class Taken:
    """The steps already taken for one message: the last re-alert round, and the one-off steps."""

    last_realert_round: int = 0
    once: frozenset[Step] = frozenset()


@dataclass(frozen=True)
class DueStep:
    """One step to take now: which, its round (1 for one-off steps) and when it fell due."""

    step: Step
    round: int
    due_at: datetime


def due_steps(schedule: EscalationSchedule, sent_at: datetime, now: datetime, taken: Taken) -> list[DueStep]:
    """The steps due at ``now`` for a message sent at ``sent_at`` that nobody has acknowledged.

    Re-alerts: only the latest round due, if it is later than the last one taken (rounds missed while
    no scheduler ran are not made up). One-off steps: each once, when its time has come.
    """
    due: list[DueStep] = []
    every = schedule.realert_every_minutes
    if every > 0:
        current = int((now - sent_at) // timedelta(minutes=every))
        if current >= 1 and current > taken.last_realert_round:
            due.append(DueStep(Step.REALERT, current, sent_at + timedelta(minutes=every * current)))
    for step, minutes in schedule.once_after().items():
        at = sent_at + timedelta(minutes=minutes)
        if step not in taken.once and at <= now:
            due.append(DueStep(step, 1, at))
    return due


def next_due(schedule: EscalationSchedule, sent_at: datetime, now: datetime, taken: Taken) -> datetime | None:
    """When the next step falls due after ``now`` (with ``taken`` already taken); None: no step is left."""
    times: list[datetime] = []
    every = schedule.realert_every_minutes
    if every > 0:
        rounds = max(taken.last_realert_round, int((now - sent_at) // timedelta(minutes=every)))
        times.append(sent_at + timedelta(minutes=every * (rounds + 1)))
    for step, minutes in schedule.once_after().items():
        if step not in taken.once:
            times.append(max(sent_at + timedelta(minutes=minutes), now))
    return min(times) if times else None


def first_due(schedule: EscalationSchedule, sent_at: datetime) -> datetime | None:
    """When the first step of a message sent at ``sent_at`` falls due (None: every step is off)."""
    return next_due(schedule, sent_at, sent_at, Taken())


def parse_schedule(
    data: Mapping[str, Any], line_of: Callable[[str], int]
) -> tuple[EscalationSchedule, list[tuple[int, str]]]:
    """The schedule escalation.toml's parsed ``data`` sets, or its problems as (line, message).

    Keys left out keep their defaults; an empty file is the default schedule.
    """
    problems: list[tuple[int, str]] = []
    for table in sorted(set(data) - {TABLE}):
        problems.append((line_of(table), f"unknown table or key {table!r} (known: [{TABLE}])"))
    urgent = data.get(TABLE, {})
    if not isinstance(urgent, dict):
        return EscalationSchedule(), [*problems, (line_of(TABLE), f"{TABLE} must be a table")]
    known = ", ".join(DEFAULT_MINUTES)
    values = dict(DEFAULT_MINUTES)
    for key in sorted(urgent):
        value = urgent[key]
        if key not in DEFAULT_MINUTES:
            problems.append((line_of(key), f"{TABLE}: unknown key {key!r} (known: {known})"))
        elif isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_MINUTES:
            problems.append(
                (
                    line_of(key),
                    f"{TABLE}.{key}: {value!r} is not a number of minutes from 0 (off) to {MAX_MINUTES}",
                )
            )
        else:
            values[key] = value
    if problems:
        return EscalationSchedule(), problems
    return EscalationSchedule(**values), []
