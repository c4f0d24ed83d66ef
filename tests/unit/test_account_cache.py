"""The account check cache: a positive answer is reused for its time to live, a negative never."""

from __future__ import annotations

from dataclasses import dataclass, field

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
