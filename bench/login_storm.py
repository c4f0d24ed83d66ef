"""Patient reads while a storm of failed logins hashes passwords: how much of the service is left.

    python bench/login_storm.py [--concurrency 6 0] [--readers 16] [--stormers 32] [--seconds 10]

For each ``auth.argon2_concurrency`` given (6: what the default thread pool ran at once on two
cores before the cap; 0: the service's default, half the cores), a fresh caremsg process (the real
app, argon2 at its production cost) serves ``--readers`` closed-loop clients reading a patient, first
alone and then beside ``--stormers`` clients failing logins with unknown emails as fast as they are
answered, the login back-off lifted as for a storm spread over many addresses (each within its
free failures). Prints the reads' rate, p50 and p99 in both phases and the logins answered a
second, and the requests answered otherwise (503: the database could not be reached in time);
the reads alone are each run's baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.http_harness import (
    embedded_database,
    free_port,
    load_average,
    pct,
    register,
    serve_caremsg,
    serve_emulator,
    start,
    stop,
)


async def _patient(base: str) -> tuple[str, dict[str, str]]:
    auth = await register(base, "care_team_member")
    async with aiohttp.ClientSession(headers=auth) as s:
        body = {"firstName": "P", "lastName": "Q", "riskLevel": "low"}
        async with s.post(f"{base}/api/patients", json=body) as r:
            assert r.status == 201, await r.text()
            return f"{base}/api/patients/{(await r.json())['id']}", auth


async def _phase(
    url: str, auth: dict[str, str], readers: int, stormers: int, seconds: float
) -> dict[str, float]:
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    logins = 0
    failed = {"reads": 0, "logins": 0}  # answered otherwise than as asked (503: the database waited)

    async def read(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            async with session.get(url, headers=auth) as resp:
                await resp.read()
            if resp.status == 200:
                latencies.append(time.perf_counter() - started)
            else:
                failed["reads"] += 1

    async def storm(session: aiohttp.ClientSession) -> None:
        nonlocal logins
        login = url.split("/api/")[0] + "/api/auth/login"
        while time.perf_counter() < deadline:
            body = {"email": f"nobody.{secrets.token_hex(6)}@example.org", "password": "not-the-password"}
            async with session.post(login, json=body) as resp:
                await resp.read()
            if resp.status == 401:
                logins += 1
            else:
                failed["logins"] += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=readers + stormers)) as session:
        started = time.perf_counter()
        await asyncio.gather(
            *(read(session) for _ in range(readers)), *(storm(session) for _ in range(stormers))
        )
        elapsed = time.perf_counter() - started
    return {
        "reads/s": len(latencies) / elapsed,
        "p50 ms": pct(latencies, 50),
        "p99 ms": pct(latencies, 99),
        "logins/s": logins / elapsed,
        "reads failed": failed["reads"],
        "logins failed": failed["logins"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[6, 0])
    parser.add_argument("--readers", type=int, default=16)
    parser.add_argument("--stormers", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    load_before = load_average()
    # A storm spread over many addresses, each within its free failures: no back-off stops it.
    os.environ["CAREMSG_AUTH_LOGIN_ADDRESS_FREE_FAILURES"] = "1000000"
    results: list[tuple[int, dict[str, float], dict[str, float]]] = []
    with embedded_database() as db:
        token = secrets.token_hex(20)
        emulator, emulator_port = start(serve_emulator, token)
        try:
            for concurrency in args.concurrency:
                os.environ["CAREMSG_AUTH_ARGON2_CONCURRENCY"] = str(concurrency)
                port = free_port()
                caremsg, _ = start(serve_caremsg, db.url, emulator_port, token, port, None, None)
                try:
                    base = f"http://127.0.0.1:{port}"
                    url, auth = asyncio.run(_patient(base))
                    asyncio.run(_phase(url, auth, args.readers, 0, 2.0))  # warm-up
                    alone = asyncio.run(_phase(url, auth, args.readers, 0, args.seconds))
                    stormed = asyncio.run(_phase(url, auth, args.readers, args.stormers, args.seconds))
                    results.append((concurrency, alone, stormed))
                finally:
                    stop([caremsg])
        finally:
            stop([emulator])

    print(
        f"login storm — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {load_before} before, {load_average()} after; "
        f"{args.readers} readers, {args.stormers} stormers, {args.seconds:.0f} s a phase"
    )
    for concurrency, alone, stormed in results:
        label = f"argon2_concurrency={concurrency}" + (" (half the cores)" if concurrency == 0 else "")
        print(f"  {label}")
        print(
            f"    reads alone        {alone['reads/s']:7.0f}/s   p50 {alone['p50 ms']:6.1f} ms   "
            f"p99 {alone['p99 ms']:6.1f} ms"
        )
        print(
            f"    reads in the storm {stormed['reads/s']:7.0f}/s   p50 {stormed['p50 ms']:6.1f} ms   "
            f"p99 {stormed['p99 ms']:6.1f} ms   ({stormed['reads/s'] / alone['reads/s']:.0%} of alone); "
            f"failed logins answered {stormed['logins/s']:.1f}/s"
        )
        print(
            f"    answered otherwise (503s): reads {alone['reads failed']:.0f} alone, "
            f"{stormed['reads failed']:.0f} in the storm; logins {stormed['logins failed']:.0f}"
        )


if __name__ == "__main__":
    multiprocessing.set_start_method("spawn", force=True)
    main()
