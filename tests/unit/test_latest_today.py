"""``engine.model.latest_today``: the latest date a person anywhere may write down as today."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from engine.model import latest_today


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 3, 1, 0, 0, tzinfo=UTC), date(2026, 3, 1)),  # 14:00 on Kiritimati
        (datetime(2026, 3, 1, 9, 59, 59, tzinfo=UTC), date(2026, 3, 1)),  # 23:59:59 there
        (datetime(2026, 3, 1, 10, 0, tzinfo=UTC), date(2026, 3, 2)),  # midnight there
        (datetime(2026, 12, 31, 23, 0, tzinfo=UTC), date(2027, 1, 1)),
        # The same instant given in another zone is the same answer.
        (datetime(2026, 3, 1, 5, 0, tzinfo=timezone(timedelta(hours=-5))), date(2026, 3, 2)),
    ],
    ids=["utc-midnight", "just-before-ten", "ten-utc", "new-year", "given-in-new-york"],
)
def test_the_latest_today_is_the_date_fourteen_hours_ahead_of_utc(now: datetime, expected: date) -> None:
    assert latest_today(now) == expected
