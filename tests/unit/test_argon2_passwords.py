"""argon2id passwords: a login for an email no account has costs what a real account's costs, and
no more hashes run at once than the service allows (a storm of logins takes that share of the CPU)."""

from __future__ import annotations

import asyncio
import os
import threading
import time

from argon2 import extract_parameters

from integrations.security import Argon2Passwords


async def test_an_unknown_email_is_verified_against_a_hash_of_the_configured_cost() -> None:
    passwords = Argon2Passwords(time_cost=2, memory_kib=256)
    real = await passwords.hash("correct horse battery")

    assert await passwords.verify(real, "correct horse battery")
    assert not await passwords.verify(None, "correct horse battery")
    # The same parameters as a real hash: the same work, so the same time (a fixed hash of the
    # library's defaults would cost another time than the configured cost, telling them apart).
    assert extract_parameters(passwords._no_account_hash) == extract_parameters(real)


class _Watched:
    """Stands in for argon2's hasher: counts the hashes running at once, each taking a moment, and
    with ``meet`` makes that many wait for each other (a deadlock, ended by the barrier's timeout,
    if fewer may run at once)."""

    def __init__(self, meet: int = 0) -> None:
        self.running = self.most = 0
        self._lock = threading.Lock()
        self._barrier = threading.Barrier(meet, timeout=5) if meet else None

    def hash(self, password: str) -> str:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            if self._barrier is not None:
                self._barrier.wait()
            time.sleep(0.02)
            return "hashed"
        finally:
            with self._lock:
                self.running -= 1


async def test_no_more_hashes_run_at_once_than_the_concurrency_allows() -> None:
    passwords = Argon2Passwords(time_cost=1, memory_kib=64, concurrency=1)
    passwords._hasher = watched = _Watched()  # type: ignore[assignment]

    await asyncio.gather(*(passwords.hash("p") for _ in range(6)))

    assert watched.most == 1


async def test_as_many_as_the_concurrency_allows_run_together() -> None:
    passwords = Argon2Passwords(time_cost=1, memory_kib=64, concurrency=3)
    passwords._hasher = watched = _Watched(meet=3)  # type: ignore[assignment]

    assert await asyncio.gather(*(passwords.hash("p") for _ in range(3))) == ["hashed"] * 3
    assert watched.most == 3


async def test_by_default_half_the_cores_hash_at_once_and_at_least_one() -> None:
    expected = max(1, (os.cpu_count() or 2) // 2)
    passwords = Argon2Passwords(time_cost=1, memory_kib=64)
    passwords._hasher = watched = _Watched(meet=expected)  # type: ignore[assignment]

    await asyncio.gather(*(passwords.hash("p") for _ in range(2 * expected)))

    assert watched.most == expected
