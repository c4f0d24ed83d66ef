"""The login back-off arithmetic: free failures, doubling waits up to the cap, the lockout count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.login_throttle import ACCOUNT_BACKOFF, Backoff, ThrottleState, blocked_until

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def test_free_failures_cost_nothing_then_each_one_doubles_the_wait_up_to_the_cap() -> None:
    backoff = Backoff(3, 1.0, 10.0, timedelta(minutes=15))
    assert [backoff.delay(n) for n in range(1, 9)] == [0, 0, 0, 1, 2, 4, 8, 10]


def test_a_huge_failure_count_stays_at_the_cap() -> None:
    assert ACCOUNT_BACKOFF.delay(10_000) == ACCOUNT_BACKOFF.max_seconds


def test_the_lockout_count_locks_and_no_count_never_does() -> None:
    assert not ACCOUNT_BACKOFF.locks(9)
    assert ACCOUNT_BACKOFF.locks(10)
    assert not Backoff(3, 1.0, 10.0, timedelta(minutes=15)).locks(10_000)


def test_a_state_waits_until_its_block_ends() -> None:
    backoff = Backoff(0, 4.0, 10.0, timedelta(minutes=15))
    state = ThrottleState(1, blocked_until(backoff, 1, NOW))
    assert state.retry_after(NOW) == 4.0
    assert state.retry_after(NOW + timedelta(seconds=4)) is None
    assert ThrottleState(1).retry_after(NOW) is None
