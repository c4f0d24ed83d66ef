"""The rate limiter's token buckets: burst, refill, and the numbers the RateLimit fields carry, for
one process's buckets and for the ones the workers of ``caremsg serve --workers N`` share."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from handlers.buckets import PROBES, SLOT, Buckets, SharedTokenBuckets, TokenBuckets
from handlers.settings import PROJECT_ROOT


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


MakeBuckets = Callable[..., Buckets]


@pytest.fixture(params=["this process's", "shared"])
def make_buckets(request: pytest.FixtureRequest, tmp_path: Path) -> MakeBuckets:
    """Either store, built as ``TokenBuckets(name, per_second, burst, clock=...)`` is."""
    if request.param == "shared":

        def shared(name: str, per_second: float, burst: int, *, clock: Clock) -> Buckets:
            SharedTokenBuckets.create(tmp_path, name)
            return SharedTokenBuckets(tmp_path, name, per_second, burst, clock=clock)

        return shared
    return TokenBuckets


def test_a_bucket_allows_its_burst_then_refuses_until_it_refills(make_buckets: MakeBuckets) -> None:
    clock = Clock()
    buckets = make_buckets("address", per_second=2.0, burst=3, clock=clock)

    verdicts = [buckets.take("10.0.0.1") for _ in range(4)]

    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert [v.remaining for v in verdicts] == [2, 1, 0, 0]
    assert verdicts[-1].retry_after == 0.5
    clock.now += 0.5
    assert buckets.take("10.0.0.1").allowed


def test_each_key_has_its_own_bucket(make_buckets: MakeBuckets) -> None:
    buckets = make_buckets("token", per_second=1.0, burst=1, clock=Clock())
    assert buckets.take("a").allowed
    assert not buckets.take("a").allowed
    assert buckets.take("b").allowed


def test_the_verdict_says_the_quota_its_window_and_when_the_bucket_is_full_again(
    make_buckets: MakeBuckets,
) -> None:
    clock = Clock()
    buckets = make_buckets("address", per_second=10.0, burst=100, clock=clock)
    for _ in range(30):
        verdict = buckets.take("k")
    assert (verdict.quota, verdict.window, verdict.remaining, verdict.reset) == (100, 10, 70, 3)


def test_a_refused_request_does_not_dig_the_bucket_deeper(make_buckets: MakeBuckets) -> None:
    clock = Clock()
    buckets = make_buckets("address", per_second=1.0, burst=1, clock=clock)
    buckets.take("k")
    for _ in range(50):
        assert not buckets.take("k").allowed
    clock.now += 1.0
    assert buckets.take("k").allowed


def test_a_peek_spends_nothing_and_says_whether_a_take_would_pass(make_buckets: MakeBuckets) -> None:
    clock = Clock()
    buckets = make_buckets("address", per_second=1.0, burst=2, clock=clock)
    assert [buckets.peek("k").allowed for _ in range(5)] == [True] * 5  # a bucket nobody spent: full
    assert buckets.peek("k").remaining == 2
    buckets.take("k")
    buckets.take("k")

    assert (buckets.peek("k").allowed, buckets.peek("k").remaining) == (False, 0)
    clock.now += 1.0
    assert buckets.peek("k").allowed
    assert buckets.take("k").allowed


def test_memory_stays_bounded_dropping_idle_buckets_first() -> None:
    clock = Clock()
    buckets = TokenBuckets("address", per_second=1.0, burst=5, clock=clock, max_keys=10)
    for i in range(10):
        buckets.take(f"idle-{i}")
    clock.now += 60  # every bucket full again: nothing worth keeping
    buckets.take("new")
    assert len(buckets._buckets) == 1


# --- shared by the workers of one service -------------------------------------------------------


def test_workers_mapping_one_file_spend_one_bucket(tmp_path: Path) -> None:
    clock = Clock()
    SharedTokenBuckets.create(tmp_path, "address")
    first, second = (SharedTokenBuckets(tmp_path, "address", 1.0, 4, clock=clock) for _ in range(2))

    taken = [worker.take("10.0.0.1") for worker in (first, second, first, second, first)]

    assert [v.allowed for v in taken] == [True, True, True, True, False]
    assert [v.remaining for v in taken] == [3, 2, 1, 0, 0]
    clock.now += 1.0
    assert second.take("10.0.0.1").allowed  # the refill is the service's too


def test_a_full_table_forgets_the_least_spent_bucket_and_no_other(tmp_path: Path) -> None:
    """A table of PROBES slots: every key competes for the same ones."""
    clock = Clock()
    SharedTokenBuckets.create(tmp_path, "token", slots=PROBES)
    buckets = SharedTokenBuckets(tmp_path, "token", 1.0, 10, clock=clock)
    spent = {f"key-{i}": 2 + i % 5 for i in range(PROBES)}
    spent["key-3"] = 1  # the least spent
    for key, count in spent.items():
        for _ in range(count):
            buckets.take(key)

    assert buckets.take("newcomer").remaining == 9  # took key-3's slot

    assert buckets.take("key-3").remaining == 9  # forgotten: a full bucket again ...
    for key, count in spent.items():
        if key != "key-3":  # ... and every other key's spending kept
            assert buckets.take(key).remaining == 10 - count - 1, key
    assert (tmp_path / "token").stat().st_size == PROBES * SLOT.size


def test_an_idle_bucket_makes_room_before_a_spending_one(tmp_path: Path) -> None:
    clock = Clock()
    SharedTokenBuckets.create(tmp_path, "token", slots=PROBES)
    buckets = SharedTokenBuckets(tmp_path, "token", 1.0, 10, clock=clock)
    for i in range(PROBES):
        buckets.take(f"key-{i}")
    clock.now += 100.0  # every bucket full again: idle
    for _ in range(9):
        buckets.take("key-0")  # spending: 1 left

    buckets.take("newcomer")

    assert buckets.take("key-0").remaining == 0  # its spending still counted


def test_a_file_that_is_no_table_is_refused(tmp_path: Path) -> None:
    (tmp_path / "address").write_bytes(b"\0" * (SLOT.size * PROBES + 1))
    with pytest.raises(ValueError, match="no table of slots"):
        SharedTokenBuckets(tmp_path, "address", 1.0, 1)


async def test_processes_taking_at_once_never_take_more_than_the_burst(tmp_path: Path) -> None:
    """Two processes spending one bucket as fast as they can, from the same moment: exactly ``burst``
    takes allowed (without the lock, one process's write overwrites the other's and lets more by).
    A busy machine may run one process's whole loop before the other's starts, which proves nothing
    about the lock: then the pair runs again, on a fresh bucket, up to three times."""
    burst, attempts = 30_000, 20_000
    spans: list[tuple[float, float, float, float]] = []
    for round_ in range(3):
        directory = tmp_path / str(round_)
        directory.mkdir()
        SharedTokenBuckets.create(directory, "address")
        (allowed, first, last), (allowed_too, first_too, last_too) = await _take_at_once(
            directory, burst, attempts
        )
        assert allowed + allowed_too == burst, (allowed, allowed_too)
        spans.append((first, last, first_too, last_too))
        # Both were taking at the same time (the lock is no queue: one may have held it most of it).
        if max(first, first_too) < min(last, last_too):
            return
    raise AssertionError(f"the processes never took at once: {spans}")


async def _take_at_once(directory: Path, burst: int, attempts: int) -> list[list[float]]:
    """Each process says when it is ready and waits for the word, so both start taking together
    however long their interpreters took to start; each prints what it was allowed, and when its
    taking began and ended."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from handlers.buckets import SharedTokenBuckets
        buckets = SharedTokenBuckets({str(directory)!r}, "address", 1e-9, {burst})
        print("ready", flush=True)
        sys.stdin.readline()
        started = time.monotonic()
        allowed = sum(buckets.take("10.0.0.1").allowed for _ in range({attempts}))
        print(allowed, started, time.monotonic(), flush=True)
        """
    )
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            cwd=PROJECT_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for process in processes:
        assert process.stdout is not None
        assert await process.stdout.readline() == b"ready\n"
    printed = await asyncio.gather(*(process.communicate(b"go\n") for process in processes))
    assert [process.returncode for process in processes] == [0, 0]
    return [[float(x) for x in out.split()] for out, _ in printed]
