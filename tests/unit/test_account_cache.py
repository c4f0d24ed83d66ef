"""The account check cache: a positive answer is reused for its time to live, a negative never; requests
with the same token share the read in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field

from engine.errors import ServiceUnavailable
from engine.model import Actor, Role
from integrations.db.identity import CachedAccountDirectory


@dataclass
class FakeDirectory:
    answer: bool = True
    calls: list[int] = field(default_factory=list)

    async def current(self, actor: Actor) -> bool:
        self.calls.append(actor.user_id)
        return self.answer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


ALICE = Actor(user_id=1, role=Role.PEER_SUPPORT, organization_id=7)


async def test_a_current_account_is_not_read_again_within_the_time_to_live() -> None:
    inner, clock = FakeDirectory(), Clock()
    cache = CachedAccountDirectory(inner, ttl=2.0, clock=clock)  # type: ignore[arg-type]
    assert await cache.current(ALICE)
    clock.now += 1.9
    assert await cache.current(ALICE)
    assert inner.calls == [1]


async def test_an_account_is_read_again_once_the_time_to_live_has_passed() -> None:
    inner, clock = FakeDirectory(), Clock()
    cache = CachedAccountDirectory(inner, ttl=2.0, clock=clock)  # type: ignore[arg-type]
    await cache.current(ALICE)
    clock.now += 2.1
    inner.answer = False  # deactivated meanwhile
    assert not await cache.current(ALICE)
    assert inner.calls == [1, 1]


async def test_a_refusal_is_never_remembered() -> None:
    inner, clock = FakeDirectory(answer=False), Clock()
    cache = CachedAccountDirectory(inner, ttl=2.0, clock=clock)  # type: ignore[arg-type]
    assert not await cache.current(ALICE)
    inner.answer = True
    assert await cache.current(ALICE)
    assert inner.calls == [1, 1]


async def test_a_token_claiming_another_role_is_checked_on_its_own() -> None:
    inner, clock = FakeDirectory(), Clock()
    cache = CachedAccountDirectory(inner, ttl=2.0, clock=clock)  # type: ignore[arg-type]
    await cache.current(ALICE)
    await cache.current(Actor(user_id=1, role=Role.ADMIN, organization_id=7))
    assert inner.calls == [1, 1]


async def test_a_zero_time_to_live_checks_every_time() -> None:
    inner, clock = FakeDirectory(), Clock()
    cache = CachedAccountDirectory(inner, ttl=0.0, clock=clock)  # type: ignore[arg-type]
    await cache.current(ALICE)
    await cache.current(ALICE)
    assert inner.calls == [1, 1]


async def test_a_forgotten_account_is_read_again_and_others_are_still_remembered() -> None:
    inner, clock = FakeDirectory(), Clock()
    cache = CachedAccountDirectory(inner, ttl=2.0, clock=clock)  # type: ignore[arg-type]
    bob = Actor(user_id=2, role=Role.PEER_SUPPORT, organization_id=7)
    await cache.current(ALICE)
    await cache.current(Actor(user_id=1, role=Role.ADMIN, organization_id=7))
    await cache.current(bob)
    inner.answer = False  # Alice's sessions ended
    cache.forget(ALICE.user_id)
    assert not await cache.current(ALICE)
    assert await cache.current(bob)
    assert inner.calls == [1, 1, 2, 1]


@dataclass
class HeldDirectory(FakeDirectory):
    """Answers only once released: reads in flight can be joined, cancelled or overtaken."""

    released: asyncio.Event = field(default_factory=asyncio.Event)
    error: Exception | None = None

    async def current(self, actor: Actor) -> bool:
        self.calls.append(actor.user_id)
        await self.released.wait()
        if self.error is not None:
            raise self.error
        return self.answer


@dataclass
class ReadByRead(FakeDirectory):
    """Each read answers as the account was when it began, once released on its own."""

    gates: list[asyncio.Event] = field(default_factory=list)

    async def current(self, actor: Actor) -> bool:
        self.calls.append(actor.user_id)
        answer = self.answer
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        return answer

    def release(self, read: int) -> None:
        self.gates[read].set()


async def _started(*calls: Awaitable[bool]) -> list[asyncio.Task[bool]]:
    tasks = [asyncio.ensure_future(call) for call in calls]
    for _ in range(3):  # each has asked, and the read it started or joined is under way
        await asyncio.sleep(0)
    return tasks


async def test_requests_arriving_while_the_account_is_read_wait_for_that_read() -> None:
    inner, clock = HeldDirectory(), Clock()
    cache = CachedAccountDirectory(inner, ttl=2.0, clock=clock)  # type: ignore[arg-type]
    waiting = await _started(*(cache.current(ALICE) for _ in range(64)))
    inner.released.set()
    assert await asyncio.gather(*waiting) == [True] * 64
    assert inner.calls == [1]
    assert await cache.current(ALICE)  # and remembered
    assert inner.calls == [1]


async def test_a_refusal_read_once_refuses_every_request_that_waited_for_it() -> None:
    inner, clock = HeldDirectory(answer=False), Clock()
    cache = CachedAccountDirectory(inner, ttl=2.0, clock=clock)  # type: ignore[arg-type]
    waiting = await _started(cache.current(ALICE), cache.current(ALICE))
    inner.released.set()
    assert await asyncio.gather(*waiting) == [False, False]
    assert not await cache.current(ALICE)  # never remembered: read again
    assert inner.calls == [1, 1]


async def test_a_read_that_fails_fails_every_request_that_waited_and_the_next_reads_again() -> None:
    inner, clock = HeldDirectory(error=ServiceUnavailable.database()), Clock()
    cache = CachedAccountDirectory(inner, ttl=2.0, clock=clock)  # type: ignore[arg-type]
    waiting = await _started(cache.current(ALICE), cache.current(ALICE))
    inner.released.set()
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert [type(o) for o in outcomes] == [ServiceUnavailable, ServiceUnavailable]
    inner.error = None
    assert await cache.current(ALICE)
    assert inner.calls == [1, 1]


async def test_a_request_that_gives_up_does_not_cancel_the_read_others_wait_for() -> None:
    inner, clock = HeldDirectory(), Clock()
    cache = CachedAccountDirectory(inner, ttl=2.0, clock=clock)  # type: ignore[arg-type]
    gone, staying = await _started(cache.current(ALICE), cache.current(ALICE))
    gone.cancel()
    await asyncio.sleep(0)
    inner.released.set()
    assert await staying
    assert gone.cancelled()
    assert inner.calls == [1]


async def test_a_read_begun_before_the_account_is_forgotten_is_neither_joined_nor_remembered() -> None:
    inner, clock = ReadByRead(), Clock()
    cache = CachedAccountDirectory(inner, ttl=2.0, clock=clock)  # type: ignore[arg-type]
    (before,) = await _started(cache.current(ALICE))  # reads the account as it was
    inner.answer = False  # then its sessions end
    cache.forget(ALICE.user_id)
    (after,) = await _started(cache.current(ALICE))
    inner.release(1)  # the read after the forget answers first
    assert not await after
    inner.release(0)
    assert await before  # it asked before the sessions ended
    inner.answer = True  # (were anything read again now, it would let Alice in)
    waiting = await _started(cache.current(ALICE))
    inner.release(2)
    assert await asyncio.gather(*waiting) == [True]
    assert inner.calls == [1, 1, 1]  # read again: the answer read before the forget was not kept


async def test_a_remembered_check_lasts_its_time_to_live_from_when_the_read_began() -> None:
    inner, clock = HeldDirectory(), Clock()
    cache = CachedAccountDirectory(inner, ttl=2.0, clock=clock)  # type: ignore[arg-type]
    (reading,) = await _started(cache.current(ALICE))
    clock.now += 1.5  # a slow read
    inner.released.set()
    assert await reading
    clock.now += 0.6  # 2.1 s after the read began
    assert await cache.current(ALICE)
    assert inner.calls == [1, 1]
