"""The rate limiter's token buckets: burst, refill, and the numbers the RateLimit fields carry."""

from __future__ import annotations

from handlers.ratelimit import TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_refuses_until_it_refills() -> None:
    clock = Clock()
    buckets = TokenBuckets("address", per_second=2.0, burst=3, clock=clock)

    verdicts = [buckets.take("10.0.0.1") for _ in range(4)]

    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert [v.remaining for v in verdicts] == [2, 1, 0, 0]
    assert verdicts[-1].retry_after == 0.5
    clock.now += 0.5
    assert buckets.take("10.0.0.1").allowed


def test_each_key_has_its_own_bucket() -> None:
    buckets = TokenBuckets("token", per_second=1.0, burst=1, clock=Clock())
    assert buckets.take("a").allowed
    assert not buckets.take("a").allowed
    assert buckets.take("b").allowed


def test_the_verdict_says_the_quota_its_window_and_when_the_bucket_is_full_again() -> None:
    clock = Clock()
    buckets = TokenBuckets("address", per_second=10.0, burst=100, clock=clock)
    for _ in range(30):
        verdict = buckets.take("k")
    assert (verdict.quota, verdict.window, verdict.remaining, verdict.reset) == (100, 10, 70, 3)


def test_a_refused_request_does_not_dig_the_bucket_deeper() -> None:
    clock = Clock()
    buckets = TokenBuckets("address", per_second=1.0, burst=1, clock=clock)
    buckets.take("k")
    for _ in range(50):
        assert not buckets.take("k").allowed
    clock.now += 1.0
    assert buckets.take("k").allowed


def test_memory_stays_bounded_dropping_idle_buckets_first() -> None:
    clock = Clock()
    buckets = TokenBuckets("address", per_second=1.0, burst=5, clock=clock, max_keys=10)
    for i in range(10):
        buckets.take(f"idle-{i}")
    clock.now += 60  # every bucket full again: nothing worth keeping
    buckets.take("new")
    assert len(buckets._buckets) == 1
