"""What an app costs before it serves anything: CPU to start and stop one, and CPU while idle.

    python bench/app_start.py [--starts 10] [--idle-seconds 10]

A throwaway embedded PostgreSQL, migrated. In one run: ``--starts`` starts and stops of the real
app (``create_app`` on its development defaults: both emulators, the relay, the schedules, the
policy with its test tables) after one warm-up start, beside the same count of a bare aiohttp app
holding an asyncpg pool (the baseline); then one real app left idle for ``--idle-seconds`` with the
outbox polled every 50 ms and every 0.5 s (the test suite's old and new settings), as the share of
a core its process used. The test suite starts hundreds of apps and keeps one alive per module;
these are the figures behind README.md's "Test run time" (issue 11).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.http_harness import embedded_database, load_average


def _settings(url: str, poll: float = 1.0) -> object:
    from handlers.settings import load_settings

    return load_settings(
        env={},
        service={"environment": "development", "log_format": "json", "log_level": "error"},
        database={"url": url},
        outbox={"poll_interval_seconds": poll},
    )


async def _starts(url: str, count: int) -> tuple[list[float], list[float]]:
    """CPU seconds to start, and to stop, the real app, ``count`` times after a warm-up."""
    from aiohttp.test_utils import TestClient, TestServer

    from handlers.app import create_app

    settings = _settings(url)
    starts, stops = [], []
    for i in range(count + 1):
        t0 = time.process_time()
        client: TestClient = TestClient(TestServer(create_app(settings)))  # type: ignore[arg-type,type-arg]
        await client.start_server()
        t1 = time.process_time()
        await client.close()
        if i:  # the first start imports and warms what every later one reuses
            starts.append(t1 - t0)
            stops.append(time.process_time() - t1)
    return starts, stops


async def _bare_starts(dsn: dict[str, object], count: int) -> list[float]:
    """CPU seconds to start and stop a bare aiohttp app with an asyncpg pool (the baseline)."""
    import asyncpg
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    async def pool(app: web.Application) -> object:
        app["pool"] = await asyncpg.create_pool(**dsn, min_size=1, max_size=10)  # type: ignore[arg-type]
        yield
        await app["pool"].close()

    found = []
    for i in range(count + 1):
        t0 = time.process_time()
        app = web.Application()
        app.cleanup_ctx.append(pool)  # type: ignore[arg-type]
        client: TestClient = TestClient(TestServer(app))  # type: ignore[type-arg]
        await client.start_server()
        await client.close()
        if i:
            found.append(time.process_time() - t0)
    return found


async def _idle(url: str, poll: float, seconds: float) -> float:
    """The share of a core the real app's process uses while idle, outbox polled every ``poll`` s."""
    from aiohttp.test_utils import TestClient, TestServer

    from handlers.app import create_app

    client: TestClient = TestClient(TestServer(create_app(_settings(url, poll))))  # type: ignore[arg-type,type-arg]
    await client.start_server()
    try:
        await asyncio.sleep(2)  # past the start-up's own work
        t0, w0 = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        return (time.process_time() - t0) / (time.monotonic() - w0)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args()
    from handlers.logs import configure_logging

    configure_logging(fmt="json", level="error")
    before = load_average()
    with embedded_database() as db:
        starts, stops = asyncio.run(_starts(db.url, args.starts))
        bare = asyncio.run(_bare_starts(db.dsn, args.starts))
        idle_old = asyncio.run(_idle(db.url, 0.05, args.idle_seconds))
        idle_new = asyncio.run(_idle(db.url, 0.5, args.idle_seconds))
    start, stop, base = statistics.median(starts), statistics.median(stops), statistics.median(bare)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"app start benchmark — {when}, {before} before, {load_average()} after")
    each = ", ".join(f"{1000 * s:.0f}" for s in starts)
    print(f"  caremsg start  median {1000 * start:6.1f} ms CPU [{each}]")
    print(f"  caremsg stop   median {1000 * stop:6.1f} ms CPU")
    print(f"  bare aiohttp + asyncpg pool, start and stop: median {1000 * base:6.1f} ms CPU")
    print(f"  caremsg start / bare: {start / base:.1f}x")
    print(
        f"  idle app, outbox polled every 50 ms: {100 * idle_old:.1f} % of a core;"
        f" every 0.5 s: {100 * idle_new:.1f} %"
    )


if __name__ == "__main__":
    main()
