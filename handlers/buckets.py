"""Token buckets for the abuse limits (handlers/ratelimit.py): one process's, or one service's.

A bucket holds ``burst`` tokens and refills at ``per_second``; a request takes one token or is
refused, and a refused request does not dig its bucket deeper. Buckets are kept per key (a source
address, a hash of an access token):

- :class:`TokenBuckets` in this process's memory: a service of one process (``caremsg serve``),
  the tests' apps;
- :class:`SharedTokenBuckets` in a file that every worker of ``caremsg serve --workers N`` maps
  into memory. The parent makes the file before it starts the workers
  (:meth:`SharedTokenBuckets.create`), so the limits configured are the service's whichever worker
  the kernel hands a connection to, not N times them.

The shared file is a table of 65,536 slots (1.5 MiB) of (key fingerprint, tokens, time). A key lives
in one of the 8 slots from its fingerprint's position on; a key found in none takes the one of those
8 whose bucket is fullest: an empty slot, or a bucket refilled to ``burst``, remembers nothing. Only
when all 8 hold keys still spending is the least spent of them forgotten, which forgives that key
and never charges another. Each take holds an exclusive ``flock`` on the file (a take costs 4-8 µs
of CPU here, against ~2 µs in memory: bench/rate_limits.py); the kernel lets go of it when a worker
dies, so a killed worker never blocks the others. The lock is no queue: a process taking in a tight
loop may win it again and again, but a worker takes twice per request between milliseconds of other
work, so none waits long. Times are ``time.monotonic()``, one clock for every process on the host.
Addresses and tokens have a file each: made-up tokens can move only token buckets, and only to
forgive them.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

#: A shared slot: the key's fingerprint (0: never used), its tokens, and when they were counted.
SLOT = struct.Struct("<Qdd")
SLOTS = 1 << 16
PROBES = 8


@dataclass(frozen=True)
class Verdict:
    """One take: allowed or not, and the figures the ``RateLimit`` fields carry."""

    policy: str
    allowed: bool
    quota: int
    window: int
    remaining: int
    reset: int
    retry_after: float


@dataclass(frozen=True)
class Limit:
    """A bucket's size and refill rate, and the arithmetic every store shares."""

    name: str
    per_second: float
    burst: int

    def refilled(self, tokens: float, at: float, now: float) -> float:
        return min(float(self.burst), tokens + max(0.0, now - at) * self.per_second)

    def take(self, tokens: float) -> tuple[float, Verdict]:
        """Take one token from a bucket holding ``tokens`` (refilled up to now): what it holds then,
        and the verdict."""
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        return tokens, self.verdict(tokens, allowed)

    def verdict(self, tokens: float, allowed: bool) -> Verdict:
        """The verdict on a bucket left holding ``tokens``."""
        return Verdict(
            policy=self.name,
            allowed=allowed,
            quota=self.burst,
            window=max(1, math.ceil(self.burst / self.per_second)),
            remaining=int(tokens),
            reset=math.ceil((self.burst - tokens) / self.per_second),
            retry_after=0.0 if allowed else (1.0 - tokens) / self.per_second,
        )


class Buckets(Protocol):
    """One limit's buckets, by key."""

    def take(self, key: str) -> Verdict:
        """Spend a token of ``key``'s bucket, if it holds one."""
        ...

    def peek(self, key: str) -> Verdict:
        """Whether a take would be allowed now, spending nothing."""
        ...


class TokenBuckets:
    """One limit's buckets in this process's memory, refilled lazily on use; at most ``max_keys``
    are kept (full buckets, which hold nothing worth remembering, are dropped first)."""

    def __init__(
        self,
        name: str,
        per_second: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._limit = Limit(name, per_second, burst)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> Verdict:
        now = self._clock()
        tokens, at = self._buckets.get(key, (float(self._limit.burst), now))
        tokens, verdict = self._limit.take(self._limit.refilled(tokens, at, now))
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            self._prune(now)
        self._buckets[key] = (tokens, now)
        return verdict

    def peek(self, key: str) -> Verdict:
        now = self._clock()
        tokens, at = self._buckets.get(key, (float(self._limit.burst), now))
        tokens = self._limit.refilled(tokens, at, now)
        return self._limit.verdict(tokens, tokens >= 1.0)

    def _prune(self, now: float) -> None:
        burst = self._limit.burst
        full = [k for k, (t, at) in self._buckets.items() if self._limit.refilled(t, at, now) >= burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self._max_keys:  # all busy: forget half rather than grow
            for key in list(self._buckets)[: self._max_keys // 2]:
                del self._buckets[key]


class SharedTokenBuckets:
    """One limit's buckets in the file ``directory/name`` that every worker of one service maps."""

    @staticmethod
    def create(directory: str | Path, name: str, *, slots: int = SLOTS) -> Path:
        """Make the (empty) file for limit ``name``: the parent, before it starts any worker."""
        if slots < PROBES:
            raise ValueError(f"a shared table needs at least {PROBES} slots")
        path = Path(directory) / name
        with path.open("xb") as file:
            file.truncate(slots * SLOT.size)
        return path

    def __init__(
        self,
        directory: str | Path,
        name: str,
        per_second: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = Limit(name, per_second, burst)
        self._clock = clock
        self._fd = os.open(Path(directory) / name, os.O_RDWR | os.O_CLOEXEC)
        try:
            size = os.fstat(self._fd).st_size
            if size % SLOT.size or size < PROBES * SLOT.size:
                raise ValueError(f"the shared rate-limit file {name!r} is no table of slots ({size} bytes)")
            self._slots = size // SLOT.size
            self._table = mmap.mmap(self._fd, size)
        except BaseException:
            os.close(self._fd)
            raise

    def take(self, key: str) -> Verdict:
        fingerprint = _fingerprint(key)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            now = self._clock()
            offset, tokens = self._slot(fingerprint, now)
            tokens, verdict = self._limit.take(tokens)
            SLOT.pack_into(self._table, offset, fingerprint, tokens, now)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return verdict

    def peek(self, key: str) -> Verdict:
        fingerprint = _fingerprint(key)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            _, tokens = self._slot(fingerprint, self._clock())
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return self._limit.verdict(tokens, tokens >= 1.0)

    def _slot(self, fingerprint: int, now: float) -> tuple[int, float]:
        """The offset of the key's slot (or of the one it would take) and its tokens refilled up to
        ``now`` (a full bucket for a key that has none). Under the lock."""
        slots, limit, table = self._slots, self._limit, self._table
        start = fingerprint % slots
        fullest, fullest_tokens = -1, -1.0
        for probe in range(PROBES):
            offset = (start + probe) % slots * SLOT.size
            held, tokens, at = SLOT.unpack_from(table, offset)
            if held == fingerprint:
                return offset, limit.refilled(tokens, at, now)
            unused = float(limit.burst) if held == 0 else limit.refilled(tokens, at, now)
            if unused > fullest_tokens:
                fullest, fullest_tokens = offset, unused
        return fullest, float(limit.burst)


def _fingerprint(key: str) -> int:
    """64 bits of the key's hash, never 0 (0 marks a slot never used)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") or 1
