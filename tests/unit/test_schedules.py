"""What the scheduled sweeps wait between batches (handlers/schedules.py): a sweep busy at most its
duty cycle of the time waits in proportion to how long its last batch took."""

from __future__ import annotations

import pytest

from handlers.schedules import wait_after
from handlers.settings import RetentionSettings


@pytest.mark.parametrize(
    ("batch_seconds", "duty_cycle", "wait"),
    [(0.1, 0.25, 0.3), (0.4, 0.25, 1.2), (0.1, 0.5, 0.1), (0.2, 1.0, 0.0)],
    ids=["quarter", "slower-batch-longer-wait", "half", "back-to-back"],
)
def test_a_sweep_waits_so_that_it_is_busy_only_its_duty_cycle(
    batch_seconds: float, duty_cycle: float, wait: float
) -> None:
    assert wait_after(batch_seconds, duty_cycle) == pytest.approx(wait)
    busy = batch_seconds / (batch_seconds + wait_after(batch_seconds, duty_cycle))
    assert busy == pytest.approx(duty_cycle)


def test_the_retention_sweep_yields_three_quarters_of_its_time_by_default() -> None:
    # bench/README.md, "Retention": back to back, send throughput fell to ~50 % on 2 cores; at 0.25
    # it stayed at 82-99 %.
    assert RetentionSettings().sweep_duty_cycle == 0.25
    with pytest.raises(ValueError, match="sweep_duty_cycle"):
        RetentionSettings(sweep_duty_cycle=0)
