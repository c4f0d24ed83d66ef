"""``BackgroundTasks`` (integrations/background.py): the emulators' webhook deliveries and the policy
reloads a signal asks for. What a drain waits for, what it raises, and that it returns on every
Python the project supports (3.11-3.13)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from integrations.background import BackgroundTasks


async def test_a_drain_waits_for_every_task_and_for_the_tasks_they_start_meanwhile() -> None:
    tasks = BackgroundTasks()
    ended: list[str] = []
    release = asyncio.Event()

    async def second() -> None:
        await asyncio.sleep(0.01)
        ended.append("second")

    async def first() -> None:
        await release.wait()
        tasks.spawn(second())  # started while the drain waits for this one
        ended.append("first")

    tasks.spawn(first())
    asyncio.get_running_loop().call_later(0.01, release.set)
    await tasks.drain()

    assert ended == ["first", "second"]
    assert len(tasks) == 0


async def test_a_drain_raises_the_error_of_a_task_that_failed() -> None:
    tasks = BackgroundTasks()

    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("delivery bug")

    tasks.spawn(fails())

    with pytest.raises(ValueError, match="delivery bug"):
        await tasks.drain()


def test_a_drain_returns_when_a_task_has_ended_but_is_not_yet_forgotten() -> None:
    """The task ends and its done callback, which forgets it, is queued behind the drain. On Python
    3.12+ ``asyncio.gather`` of ended tasks completes without yielding, so the emulators' former
    ``while tasks: await gather(*tasks)`` never let that callback run and spun forever (the suite
    hung on Python 3.13). The scenario runs in a thread, so a spin fails this test, not the run."""
    returned = threading.Event()

    async def scenario() -> None:
        tasks = BackgroundTasks()

        async def quick() -> None:
            return None

        task = tasks.spawn(quick())
        await asyncio.sleep(0)  # quick() runs to its end; the callback that forgets it is queued
        assert task.done()
        await tasks.drain()
        returned.set()

    thread = threading.Thread(target=asyncio.run, args=(scenario(),), daemon=True)
    thread.start()
    thread.join(timeout=10)

    assert returned.is_set(), "the drain did not return (a thread is left spinning)"


async def test_cancel_stops_the_unfinished_tasks_and_waits_for_them() -> None:
    tasks = BackgroundTasks()
    stopped: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.append("forever")

    task = tasks.spawn(forever())
    await asyncio.sleep(0)
    assert len(tasks) == 1

    await tasks.cancel()

    assert task.cancelled()
    assert stopped == ["forever"]
    assert len(tasks) == 0
