"""Tasks an object starts in the background and must be able to wait for or abandon: the emulators'
webhook deliveries, the policy reloads a signal or another instance asks for; and how a background
loop waits for its next round (:func:`woken_or_after`).

asyncio keeps only a weak reference to a task, so whoever starts one keeps it until it ends; this
set forgets each task once done. :meth:`BackgroundTasks.drain` waits on the unfinished ones only:
on Python 3.12 and later ``asyncio.gather`` of tasks that are all done completes without yielding
to the event loop, so the loop ``while tasks: await gather(*tasks)`` spun forever on a task that
had finished but whose done callback (the one that forgets it) had not run yet.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundTasks:
    """The tasks started through :meth:`spawn` and not finished yet."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return sum(1 for task in self._tasks if not task.done())

    def spawn(self, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coroutine`` as a task of the running loop, kept until it ends."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self) -> None:
        """Wait until every task started so far, and every task those start meanwhile, has ended.
        A task that failed raises its error here, as ``asyncio.gather`` would."""
        while pending := [task for task in self._tasks if not task.done()]:
            done, _ = await asyncio.wait(pending)
            for task in done:
                if not task.cancelled():
                    task.result()

    async def cancel(self) -> None:
        """Cancel every unfinished task and wait until each has ended, errors ignored."""
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def woken_or_after(wake: asyncio.Event, seconds: float) -> None:
    """Return when ``wake`` is set or after ``seconds``, whichever comes first; a cancellation always
    ends the wait.

    ``asyncio.wait_for(wake.wait(), seconds)`` did not always: on Python 3.11, cancelled at the
    moment the event was set, it returned as if woken and the cancellation was lost (fixed in 3.12).
    The relay, the webhook processor and the audit sealer wait so between rounds; one of them lost
    the cancellation of the app's shutdown and the shutdown waited for it for ever (a CI run hung
    in a fixture's teardown, the webhook processor "cancelling" and polling on).
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await wake.wait()
