"""How a background loop waits between rounds (integrations/background.py): woken, or after a
while, and always ended by a cancellation, even one that arrives as it is woken."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from integrations.background import woken_or_after


async def test_it_returns_when_woken() -> None:
    wake = asyncio.Event()
    waiting = asyncio.create_task(woken_or_after(wake, 60))
    await asyncio.sleep(0)
    wake.set()
    await asyncio.wait_for(waiting, 1)


async def test_it_returns_after_the_time_unwoken() -> None:
    await asyncio.wait_for(woken_or_after(asyncio.Event(), 0.01), 1)


@pytest.mark.parametrize("steps", range(6))
async def test_a_cancellation_arriving_as_the_loop_is_woken_ends_it(steps: int) -> None:
    """A loop as the relay's: woken, then cancelled ``steps`` turns of the event loop later. With
    ``asyncio.wait_for`` on Python 3.11 the cancellation was lost at 0, 1 and 2 steps and the loop
    went on polling, so whoever cancelled it waited for ever."""
    wake = asyncio.Event()

    async def loop() -> None:
        while True:
            await woken_or_after(wake, 10)
            wake.clear()

    task = asyncio.create_task(loop())
    for _ in range(3):
        await asyncio.sleep(0)
    wake.set()
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()

    try:
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), 1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 1)
