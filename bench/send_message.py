"""send-message throughput and latency at 64 concurrent clients, next to a bare aiohttp + asyncpg
single-INSERT endpoint measured in the same run on the same PostgreSQL.

    python bench/send_message.py [--clients 64 ...] [--rounds 3] [--requests 3000] [--seconds 10]
                                 [--workers 1] [--baseline-workers 1] [--profile FILE] [--pg-statements]

Both servers run in their own process(es) side by side (the machine has 2 cores: one for the server,
one for the load generator and PostgreSQL) and are loaded in turn, round by round; the load
generator is an aiohttp client on loopback. The caremsg side is the real app: embedded PostgreSQL,
migrations, policy decision, audit record, message, delivery rows and outbox entries in one
transaction, the relay and the emulator running alongside. Prints accepted messages/s and p50/p99
latency of each, caremsg's share of the baseline round by round, and CPU per request; with
``--profile``, the caremsg process's cProfile of the measured rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.http_harness import (
    Request,
    baseline_and_caremsg,
    embedded_database,
    free_port,
    load_average,
    measure,
    print_profile,
    report,
    send_message_request,
    serve_caremsg,
    serve_emulator,
    serve_forever,
    shared_limits,
    start,
    stop,
)

BASELINE_TABLE = (
    "CREATE TABLE IF NOT EXISTS bench_messages (id serial PRIMARY KEY, conversation_id int, body text)"
)


def _serve_baseline(dsn: dict[str, Any], port: int, ready: Any) -> None:
    import asyncpg
    from aiohttp import web

    async def main() -> None:
        pool = await asyncpg.create_pool(**dsn, min_size=10, max_size=20)
        await pool.execute(BASELINE_TABLE)

        async def insert(request: web.Request) -> web.Response:
            body = await request.json()
            row = await pool.fetchrow(
                "INSERT INTO bench_messages (conversation_id, body) VALUES ($1, $2) RETURNING id",
                body["conversationId"],
                body["message"],
            )
            return web.json_response({"id": row["id"], "state": "queued"}, status=202)

        app = web.Application()
        app.router.add_post("/insert", insert)
        await serve_forever(app, port, ready)

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[64], help="concurrency levels")
    parser.add_argument("--rounds", type=int, default=3, help="alternating baseline/caremsg rounds")
    parser.add_argument("--requests", type=int, default=3000, help="per round and level")
    parser.add_argument("--seconds", type=float, default=10.0, help="at most, per round and level")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--workers", type=int, default=1, help="caremsg processes sharing the port")
    parser.add_argument("--baseline-workers", type=int, default=1, help="baseline processes sharing the port")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the caremsg process's measured runs")
    parser.add_argument(
        "--pg-statements",
        action="store_true",
        help="load pg_stat_statements and print the statements that took PostgreSQL the most time",
    )
    args = parser.parse_args()

    load_before = load_average()
    processes: list[multiprocessing.Process] = []
    with embedded_database(statements=args.pg_statements) as db, shared_limits(args.workers) as limits:
        try:
            port = free_port()
            baseline = [start(_serve_baseline, db.dsn, port)[0] for _ in range(args.baseline_workers)]
            processes += baseline
            base = f"http://127.0.0.1:{port}"
            body = {"conversationId": 1, "message": "Checking in after discharge."}
            baseline_request = Request("POST", f"{base}/insert", body, {}, 202)

            token = secrets.token_hex(20)
            emulator, emulator_port = start(serve_emulator, token)
            processes.append(emulator)
            port = free_port()
            caremsg = [
                start(serve_caremsg, db.url, emulator_port, token, port, args.profile, limits)[0]
                for _ in range(args.workers)
            ]
            processes += caremsg
            base = f"http://127.0.0.1:{port}"
            caremsg_request = asyncio.run(send_message_request(base))

            # the emulator: the Sendbird stand-in, delivery work after acceptance
            contenders = baseline_and_caremsg(
                db,
                (baseline_request, baseline),
                (caremsg_request, caremsg),
                profile=args.profile,
                also={"emulator": [emulator]},
            )
            samples = measure(contenders, args.clients, args.rounds, args.requests, args.seconds, args.warmup)
        finally:
            stop(processes)

    print(
        f"send-message benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {load_before} before, "
        f"{load_average()} after; caremsg x{args.workers}, baseline x{args.baseline_workers}"
    )
    report(samples, "baseline", "caremsg", "accepted")
    print("  targets at 64 clients: caremsg >= 30% of the baseline's throughput, caremsg p99 < 50 ms")
    if args.profile:
        print_profile(args.profile)


if __name__ == "__main__":
    main()
