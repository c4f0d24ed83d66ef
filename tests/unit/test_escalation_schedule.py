"""Which escalation steps are due when (engine/escalation.py): pure, on fixed times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.escalation import EscalationSchedule, Step, Taken, due_steps, first_due, next_due

SENT = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
DEFAULT = EscalationSchedule()
NONE_TAKEN = Taken()


def at(minutes: float) -> datetime:
    return SENT + timedelta(minutes=minutes)


def due(
    minutes: float, taken: Taken = NONE_TAKEN, schedule: EscalationSchedule = DEFAULT
) -> list[tuple[Step, int]]:
    return [(d.step, d.round) for d in due_steps(schedule, SENT, at(minutes), taken)]


def test_nothing_is_due_before_the_first_re_alert() -> None:
    assert due(1.99) == []
    assert first_due(DEFAULT, SENT) == at(2)


def test_each_step_falls_due_at_its_minute() -> None:
    assert due(2) == [(Step.REALERT, 1)]
    assert due(5, Taken(2)) == [(Step.TEXT, 1)]
    assert due(10, Taken(4, frozenset({Step.TEXT}))) == [(Step.REALERT, 5), (Step.ON_CALL, 1)]
    assert due(15, Taken(7, frozenset({Step.TEXT, Step.ON_CALL}))) == [(Step.ADMIN, 1)]


def test_a_step_taken_is_not_due_again_and_missed_rounds_are_not_made_up() -> None:
    assert due(2.5, Taken(1)) == []
    assert due(9, Taken(1, frozenset({Step.TEXT}))) == [(Step.REALERT, 4)]


def test_the_next_look_is_the_earliest_step_not_taken() -> None:
    assert next_due(DEFAULT, SENT, at(2), Taken(1)) == at(4)
    assert next_due(DEFAULT, SENT, at(4), Taken(2)) == at(5)  # the text comes before re-alert 3
    everything = frozenset({Step.TEXT, Step.ON_CALL, Step.ADMIN})
    assert next_due(DEFAULT, SENT, at(16), Taken(8, everything)) == at(18)


def test_zero_switches_a_step_off_and_all_off_means_never() -> None:
    no_text = EscalationSchedule(text_after_minutes=0)
    assert due(5, Taken(2), no_text) == []
    off = EscalationSchedule(0, 0, 0, 0)
    assert due(600, Taken(), off) == []
    assert first_due(off, SENT) is None
