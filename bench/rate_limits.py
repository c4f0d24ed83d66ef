"""What a rate-limit take costs: one process's buckets (the baseline, same run) against the buckets
the workers of ``caremsg serve --workers N`` share (a mapped file, a flock per take).

    python bench/rate_limits.py [--keys 1 1000 50000] [--takes 200000] [--contenders 0 1]

For each count of distinct keys (taken round-robin), the CPU time per ``take`` in this process of
``TokenBuckets`` and of ``SharedTokenBuckets``; with ``--contenders 1``, the shared store again
while another process takes from the same file as fast as it can (the lock contended).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.http_harness import load_average
from handlers.buckets import Buckets, SharedTokenBuckets, TokenBuckets

RATE, BURST = 1e6, 10**9  # never refuses: the cost measured is the bookkeeping


def _per_take(buckets: Buckets, keys: list[str], takes: int) -> float:
    """Microseconds of this process's CPU per take."""
    count = len(keys)
    for key in keys:  # every key present before the clock starts
        buckets.take(key)
    started = time.process_time()
    for i in range(takes):
        buckets.take(keys[i % count])
    return (time.process_time() - started) / takes * 1e6


def _contend(directory: str, stop: multiprocessing.synchronize.Event) -> None:
    buckets = SharedTokenBuckets(directory, "address", RATE, BURST)
    while not stop.is_set():
        for _ in range(1000):
            buckets.take("contender")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, nargs="+", default=[1, 1000, 50_000])
    parser.add_argument("--takes", type=int, default=200_000)
    parser.add_argument("--contenders", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()

    load_before = load_average()
    rows = []
    with tempfile.TemporaryDirectory(prefix="caremsg-bench-limits-") as directory:
        SharedTokenBuckets.create(directory, "address")
        context = multiprocessing.get_context("spawn")
        for count in args.keys:
            keys = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(count)]
            memory = _per_take(TokenBuckets("address", RATE, BURST), keys, args.takes)
            row = [count, memory]
            for contenders in args.contenders:
                stop = context.Event()
                others = [context.Process(target=_contend, args=(directory, stop)) for _ in range(contenders)]
                for other in others:
                    other.start()
                time.sleep(0.5 if others else 0)  # the contenders' interpreters up and taking
                row.append(_per_take(SharedTokenBuckets(directory, "address", RATE, BURST), keys, args.takes))
                stop.set()
                for other in others:
                    other.join()
            rows.append(row)

    print(
        f"rate-limit takes — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {load_before} before, "
        f"{load_average()} after; {args.takes:,} takes per figure, CPU µs per take"
    )
    shared = [f"shared, {n} contending" for n in args.contenders]
    print(f"    {'keys':>7}  {'in memory':>10}  " + "  ".join(f"{h:>20}" for h in shared))
    for count, memory, *others in rows:
        ratios = "  ".join(f"{o:>13.2f} ({o / memory:3.1f}x)" for o in others)
        print(f"    {count:>7,}  {memory:>10.2f}  {ratios}")


if __name__ == "__main__":
    main()
