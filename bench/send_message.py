"""send-message throughput and latency at 64 concurrent clients, next to a bare aiohttp + asyncpg
single-INSERT endpoint measured in the same run on the same PostgreSQL.

    python bench/send_message.py [--clients 64] [--requests 4000] [--seconds 20]
                                 [--workers 1] [--baseline-workers 1]

Both servers run in their own process (the machine has 2 cores: one for the server, one for the
load generator and PostgreSQL); the load generator is an aiohttp client on loopback. The caremsg
side is the real app: embedded PostgreSQL, migrations, policy decision, audit record, message,
delivery rows and outbox entries in one transaction, the relay and the emulator running alongside.
Prints accepted messages/s and p50/p99 latency of each, and caremsg's share of the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import secrets
import socket
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.proc_cpu import cpu_seconds, postgres_pids

BASELINE_TABLE = (
    "CREATE TABLE IF NOT EXISTS bench_messages (id serial PRIMARY KEY, conversation_id int, body text)"
)


# --- servers (child processes) --------------------------------------------------------------------


def _serve_caremsg(url: str, sendbird_port: int, token: str, port: int, ready: Any) -> None:
    from aiohttp import web

    from handlers.app import create_app
    from handlers.logs import configure_logging
    from handlers.settings import load_settings

    settings = load_settings(
        env={},
        service={"environment": "development", "log_format": "json", "log_level": "error"},
        database={"url": url},
        # The real client against the emulator's process. Plan rate limits would only pace delivery,
        # not acceptance, which is what is measured here.
        sendbird={
            "app_id": "bench",
            "api_token": token,
            "base_url": f"http://127.0.0.1:{sendbird_port}",
            "get_per_second": 10000,
            "write_per_second": 10000,
        },
        messaging={"bm_api_token": token, "bm_base_url": f"http://127.0.0.1:{sendbird_port}"},
        # One load generator, one address and one token: the API's abuse limits would measure
        # themselves, not the send path.
        ratelimit={
            "per_address_per_second": 1e9,
            "per_address_burst": 10**9,
            "per_token_per_second": 1e9,
            "per_token_burst": 10**9,
        },
    )
    configure_logging(fmt="json", level="error")

    async def main() -> None:
        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        # Several processes on one port share it as `caremsg serve --workers N` does (SO_REUSEPORT).
        site = web.TCPSite(runner, "127.0.0.1", port, reuse_port=True)
        await site.start()
        ready.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


def _serve_emulator(token: str, ready: Any) -> None:
    """The Sendbird emulator in a process of its own: in production Sendbird's work is not on our CPU."""
    from integrations.sendbird_emulator import start_emulator

    async def main() -> None:
        emulator = await start_emulator(api_token=token, app_id="bench")
        ready.put(int(emulator.base_url.rsplit(":", 1)[1]))
        await asyncio.Event().wait()

    asyncio.run(main())


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
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, reuse_port=True)
        await site.start()
        ready.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(target: Any, *args: Any) -> tuple[multiprocessing.Process, int]:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    process = ctx.Process(target=target, args=(*args, ready), daemon=True)
    process.start()
    return process, int(ready.get(timeout=120))


# --- load --------------------------------------------------------------------------------------------


async def _load(
    url: str, body: dict[str, Any], headers: dict[str, str], clients: int, total: int, seconds: float
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    remaining = total
    deadline = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            started = time.perf_counter()
            async with session.post(url, json=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 202:
                    raise RuntimeError(f"unexpected status {resp.status}")
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies


# --- CPU per request (Linux /proc): robust where throughput is not, on a machine shared with others ---


def _cpu(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each group of processes ("client" is this process)."""
    used = {name: cpu_seconds(pids) for name, pids in groups.items()}
    used["client"] = time.process_time()
    return used


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000 if len(values) > 1 else 0.0


async def _caremsg_setup(base: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A registered peer support user with a patient and a ready conversation, through the API."""
    async with aiohttp.ClientSession() as s:
        email = f"bench.{secrets.token_hex(4)}@example.org"
        registration = {
            "email": email,
            "password": "bench-password-123",
            "firstName": "Bench",
            "lastName": "User",
            "role": "peer_support",
        }
        async with s.post(f"{base}/api/auth/register", json=registration) as r:
            assert r.status == 202, await r.text()
        login = {"email": email, "password": registration["password"]}
        async with s.post(f"{base}/api/auth/login", json=login) as r:
            token = (await r.json())["token"]
        auth = {"Authorization": f"Bearer {token}"}
        patient = {"firstName": "P", "lastName": "Q", "riskLevel": "low"}
        async with s.post(f"{base}/api/patients", json=patient, headers=auth) as r:
            patient_id = (await r.json())["id"]
        async with s.post(
            f"{base}/api/conversations", json={"title": "Bench", "patientId": patient_id}, headers=auth
        ) as r:
            conversation_id = (await r.json())["id"]
        for _ in range(500):
            async with s.get(f"{base}/api/conversations/{conversation_id}", headers=auth) as r:
                if (await r.json())["channelState"] == "ready":
                    break
            await asyncio.sleep(0.02)
    return {"conversationId": conversation_id, "message": "Checking in after discharge."}, auth


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--workers", type=int, default=1, help="caremsg processes sharing the port")
    parser.add_argument("--baseline-workers", type=int, default=1, help="baseline processes sharing the port")
    args = parser.parse_args()

    from sqlalchemy.engine import make_url

    from integrations.db.embedded import start_embedded_postgres
    from integrations.db.migrate import upgrade

    with tempfile.TemporaryDirectory(prefix="caremsg-bench-") as tmp:
        server = start_embedded_postgres(Path(tmp) / "pgdata", temporary=True)
        try:
            upgrade(server.url)
            u = make_url(server.url)
            dsn = {
                "user": "postgres",
                "host": u.query["host"],
                "port": int(u.query.get("port", 5432)),
                "database": "postgres",
            }
            results = {}
            cpu: dict[str, dict[str, float]] = {}
            helpers: list[multiprocessing.Process] = []
            for name, workers in (("baseline", args.baseline_workers), ("caremsg", args.workers)):
                port = _free_port()
                if name == "baseline":
                    processes = [_start(_serve_baseline, dsn, port) for _ in range(workers)]
                    base = f"http://127.0.0.1:{port}"
                    body, headers, url = (
                        {"conversationId": 1, "message": "Checking in after discharge."},
                        {},
                        f"{base}/insert",
                    )
                else:
                    token = secrets.token_hex(20)
                    emulator, emulator_port = _start(_serve_emulator, token)
                    helpers.append(emulator)
                    processes = [
                        _start(_serve_caremsg, server.url, emulator_port, token, port) for _ in range(workers)
                    ]
                    base = f"http://127.0.0.1:{port}"
                    body, headers = asyncio.run(_caremsg_setup(base))
                    url = f"{base}/api/conversations/send-message"
                label = f"{name} x{workers}" if workers > 1 else name
                try:
                    asyncio.run(_load(url, body, headers, args.clients, args.warmup, args.seconds))
                    groups = {
                        "server": [process.pid for process, _ in processes if process.pid],
                        "postgres": postgres_pids(Path(tmp) / "pgdata"),
                        "emulator": [h.pid for h in helpers if h.pid],
                    }
                    before = _cpu(groups)
                    results[label] = asyncio.run(
                        _load(url, body, headers, args.clients, args.requests, args.seconds)
                    )
                    after = _cpu(groups)
                    served = len(results[label][1])
                    cpu[label] = {k: (after[k] - before[k]) / served * 1e6 for k in after}
                finally:
                    for process, _ in processes:
                        process.terminate()
                        process.join(10)
        finally:
            for helper in helpers:
                helper.terminate()
            server.stop()

    print(
        f"send-message benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {args.clients} concurrent clients"
    )
    for name, (rate, lat) in results.items():
        p50, p99 = _pct(lat, 50), _pct(lat, 99)
        print(f"  {name:12s} {rate:8.0f} accepted/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   n={len(lat)}")
    (baseline_rate, _), (caremsg_rate, _) = results.values()
    ratio = caremsg_rate / baseline_rate
    print(f"  caremsg / baseline throughput: {ratio:.0%} (target >= 30%); caremsg p99 target < 50 ms")
    print("  CPU per accepted request (µs; emulator: the Sendbird stand-in, delivery work after acceptance):")
    for name, used in cpu.items():
        parts = "   ".join(f"{k} {v:6.0f}" for k, v in used.items())
        print(f"  {name:12s} {parts}   total {sum(used.values()):6.0f}")
    (baseline_cpu, caremsg_cpu) = (sum(c.values()) for c in cpu.values())
    print(f"  baseline / caremsg CPU per request: {baseline_cpu / caremsg_cpu:.0%}")


if __name__ == "__main__":
    main()
