"""What the HTTP benchmarks share (bench/send_message.py, bench/read_patient.py): the real caremsg
app and the Sendbird emulator each in a process of their own, a closed-loop aiohttp load generator,
latency percentiles, CPU per request from /proc, and an optional cProfile of the caremsg process.

Closed loop: each of N clients sends its next request when the previous one is answered, so mean
latency is N / throughput (Little's law) and a p99 target at 64 clients is also a throughput target.

Longer than 400 lines because it is the one way the HTTP benchmarks measure: :func:`measure` drives
the server processes, the closed-loop load, the CPU read from /proc and the profile together, and
each benchmark takes them from here so that their figures compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import multiprocessing
import os
import pstats
import secrets
import signal
import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.proc_cpu import postgres_pids, ticks

PROFILE_START = signal.SIGUSR1
PROFILE_STOP = signal.SIGUSR2


def caremsg_settings(url: str, sendbird_port: int, token: str) -> Any:
    from handlers.settings import load_settings

    return load_settings(
        # CAREMSG_* variables reach the benchmarked service (e.g. CAREMSG_AUDIT_SEALER_ENABLED=false to
        # see what the sealer costs); the sections below override them.
        env={k: v for k, v in os.environ.items() if k.startswith("CAREMSG_")},
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
        # themselves, not the service.
        ratelimit={
            "per_address_per_second": 1e9,
            "per_address_burst": 10**9,
            "per_token_per_second": 1e9,
            "per_token_burst": 10**9,
        },
    )


def _install_profiler(path: str) -> None:
    """SIGUSR1 starts a cProfile of this process, SIGUSR2 stops it and writes its stats to ``path``:
    the load generator brackets the measured run with them, so warm-up and set-up are left out."""
    profiler = cProfile.Profile()
    loop = asyncio.get_running_loop()

    def stop() -> None:
        profiler.disable()
        profiler.dump_stats(f"{path}.{os.getpid()}")
        # Renamed into place whole: the load generator waits for this file to appear.
        os.replace(f"{path}.{os.getpid()}", path)

    loop.add_signal_handler(PROFILE_START, profiler.enable)
    loop.add_signal_handler(PROFILE_STOP, stop)


def serve_caremsg(
    url: str, sendbird_port: int, token: str, port: int, profile: str | None, limits: str | None, ready: Any
) -> None:
    """The real app (``create_app``: relay, sealer, consent listener and all) on ``port``; ``limits``
    is the directory of the rate limits' buckets that several processes share (:func:`shared_limits`)."""

    from handlers.app import create_app, for_serving
    from handlers.logs import configure_logging

    settings = caremsg_settings(url, sendbird_port, token)
    configure_logging(fmt="json", level="error")

    async def main() -> None:
        if profile:
            _install_profiler(profile)
        # As `caremsg serve` runs it: what the start built is frozen out of the collector's way
        # (CAREMSG_BENCH_NO_FREEZE=1: as before, for a side-by-side run; bench/README.md).
        app = create_app(settings, shared_rate_limits=limits)
        served = app if os.environ.get("CAREMSG_BENCH_NO_FREEZE") else for_serving(app)
        await serve_forever(served, port, ready)

    asyncio.run(main())


async def serve_forever(app: Any, port: int, ready: Any) -> None:
    """Serve ``app`` on loopback ``port`` without an access log, say which port on ``ready``, and
    serve until the process is stopped. Several processes on one port share it as `caremsg serve
    --workers N` does (SO_REUSEPORT)."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_port=True)
    await site.start()
    ready.put(runner.addresses[0][1])
    await asyncio.Event().wait()


def serve_emulator(token: str, ready: Any) -> None:
    """The Sendbird emulator in a process of its own: in production Sendbird's work is not on our CPU."""
    from integrations.sendbird_emulator import start_emulator

    async def main() -> None:
        emulator = await start_emulator(api_token=token, app_id="bench")
        ready.put(int(emulator.base_url.rsplit(":", 1)[1]))
        await asyncio.Event().wait()

    asyncio.run(main())


@dataclass(frozen=True)
class BenchDatabase:
    """The benchmark's embedded PostgreSQL, migrated: caremsg's URL, the bare baseline's asyncpg
    arguments (the superuser, database ``postgres``), and the data directory its processes run from."""

    url: str
    dsn: dict[str, Any]
    pgdata: Path


@contextlib.contextmanager
def embedded_database(*, statements: bool = False) -> Iterator[BenchDatabase]:
    """A throwaway embedded PostgreSQL migrated to head, stopped and removed on the way out.

    With ``statements`` it runs with ``pg_stat_statements`` loaded (a server of the same binaries that
    the harness starts itself, as the restart tests do) and, on the way out, prints the statements that
    took the most time since the migrations (:func:`print_statements`)."""
    from sqlalchemy.engine import make_url

    from integrations.db.embedded import start_embedded_postgres
    from integrations.db.migrate import upgrade

    if statements:
        with _database_with_statements() as db:
            yield db
        return
    with tempfile.TemporaryDirectory(prefix="caremsg-bench-") as tmp:
        pgdata = Path(tmp) / "pgdata"
        server = start_embedded_postgres(pgdata, temporary=True)
        try:
            upgrade(server.url)
            u = make_url(server.url)
            dsn = {
                "user": "postgres",
                "host": u.query["host"],
                "port": int(u.query.get("port", 5432)),
                "database": "postgres",
            }
            yield BenchDatabase(server.url, dsn, pgdata)
        finally:
            server.stop()


@contextlib.contextmanager
def _database_with_statements() -> Iterator[BenchDatabase]:
    from integrations.db.embedded import RestartablePostgres
    from integrations.db.migrate import upgrade

    with tempfile.TemporaryDirectory(prefix="caremsg-bench-") as tmp:
        server = RestartablePostgres(Path(tmp), max_connections=200)
        server.init()
        with (server.data / "postgresql.auto.conf").open("a") as conf:
            conf.write("shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = 'all'\n")
        server.start()
        try:
            upgrade(server.url())
            dsn = {"user": "postgres", "host": str(server.dir), "port": 5432, "database": "postgres"}
            asyncio.run(_statements_reset(dsn))
            yield BenchDatabase(server.url(), dsn, server.data)
            asyncio.run(print_statements(dsn))
        finally:
            server.stop()


async def _statements_reset(dsn: dict[str, Any]) -> None:
    import asyncpg

    conn = await asyncpg.connect(**dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute("SELECT pg_stat_statements_reset()")
    finally:
        await conn.close()


async def print_statements(dsn: dict[str, Any], limit: int = 25) -> None:
    """The statements that took the most executor time (wall time, so inflated alike on a saturated
    machine): calls, total, mean per call, rows, and the statement's start."""
    import asyncpg

    conn = await asyncpg.connect(**dsn)
    try:
        total = await conn.fetchval("SELECT sum(total_exec_time) FROM pg_stat_statements")
        rows = await conn.fetch(
            "SELECT calls, total_exec_time, mean_exec_time, rows,"
            " left(regexp_replace(query, '\\s+', ' ', 'g'), 100) AS query"
            " FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT $1",
            limit,
        )
    finally:
        await conn.close()
    print(f"\nPostgreSQL executor time, all statements: {total:.0f} ms (pg_stat_statements)")
    for r in rows:
        share = 100 * r["total_exec_time"] / total if total else 0.0
        print(
            f"  {r['calls']:8d} calls {r['total_exec_time']:8.0f} ms {share:4.1f} %"
            f" {r['mean_exec_time'] * 1000:7.0f} µs/call {r['rows']:8d} rows  {r['query']}"
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def shared_limits(workers: int) -> Iterator[str | None]:
    """With several caremsg processes, the directory of the rate limits' buckets they share, as
    ``caremsg serve --workers N`` makes it; with one, None (its buckets are its own)."""
    if workers == 1:
        yield None
        return
    from handlers.ratelimit import create_shared_limits

    with tempfile.TemporaryDirectory(prefix="caremsg-bench-limits-") as directory:
        create_shared_limits(directory)
        yield directory


def start(target: Any, *args: Any) -> tuple[multiprocessing.Process, int]:
    """``target(*args, ready)`` in a spawned process; returns it and the port it put on ``ready``."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    process = ctx.Process(target=target, args=(*args, ready), daemon=True)
    process.start()
    return process, int(ready.get(timeout=120))


def stop(processes: list[multiprocessing.Process]) -> None:
    for process in processes:
        process.terminate()
        process.join(10)


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    body: dict[str, Any] | None
    headers: dict[str, str]
    status: int


async def load(request: Request, clients: int, total: int, seconds: float) -> tuple[float, list[float]]:
    """``clients`` closed-loop clients until ``total`` requests are answered or ``seconds`` pass;
    returns requests answered per second and each one's latency in seconds."""
    latencies: list[float] = []
    remaining = total
    deadline = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            started = time.perf_counter()
            async with session.request(
                request.method, request.url, json=request.body, headers=request.headers
            ) as resp:
                await resp.read()
                if resp.status != request.status:
                    raise RuntimeError(f"unexpected status {resp.status}: {await resp.text()}")
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies


def cpu(groups: dict[str, Callable[[], list[int]]]) -> dict[str, dict[int, int]]:
    """Clock ticks used so far by each process of each group ("client": this process). The groups
    are looked up each time: PostgreSQL forks a backend per connection as pools grow."""
    used = {name: {pid: ticks(pid) for pid in pids()} for name, pids in groups.items()}
    used["client"] = {os.getpid(): ticks(os.getpid())}
    return used


Ticks = dict[str, dict[int, int]]


def cpu_us(before: Ticks, after: Ticks, count: int) -> dict[str, float]:
    """CPU µs per request of each group between two :func:`cpu` readings, counting processes that
    started in between from zero and leaving out those that ended (their last ticks are unknown)."""
    tick = os.sysconf("SC_CLK_TCK")
    return {
        name: sum(t - before[name].get(pid, 0) for pid, t in now.items()) / tick / max(count, 1) * 1e6
        for name, now in after.items()
    }


def pct(values: list[float], q: int) -> float:
    """The q-th percentile of latencies in seconds, in milliseconds."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000 if len(values) > 1 else 0.0


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


async def register(base: str, role: str) -> dict[str, str]:
    """A self-registered, logged-in user of ``role``; returns the Authorization header."""
    async with aiohttp.ClientSession() as s:
        email = f"bench.{secrets.token_hex(4)}@example.org"
        registration = {
            "email": email,
            "password": "bench-password-123",
            "firstName": "Bench",
            "lastName": "User",
            "role": role,
        }
        async with s.post(f"{base}/api/auth/register", json=registration) as r:
            assert r.status == 202, await r.text()
        login = {"email": email, "password": registration["password"]}
        async with s.post(f"{base}/api/auth/login", json=login) as r:
            token = (await r.json())["token"]
    return {"Authorization": f"Bearer {token}"}


async def send_message_request(base: str) -> Request:
    """A registered peer support user's send-message request into a ready conversation of their
    patient, set up through the API (bench/send_message.py and bench/retention.py load it)."""
    auth = await register(base, "peer_support")
    async with aiohttp.ClientSession(headers=auth) as s:
        patient = {"firstName": "P", "lastName": "Q", "riskLevel": "low"}
        async with s.post(f"{base}/api/patients", json=patient) as r:
            patient_id = (await r.json())["id"]
        async with s.post(f"{base}/api/conversations", json={"title": "Bench", "patientId": patient_id}) as r:
            conversation_id = (await r.json())["id"]
        for _ in range(500):
            async with s.get(f"{base}/api/conversations/{conversation_id}") as r:
                if (await r.json())["channelState"] == "ready":
                    break
            await asyncio.sleep(0.02)
    body = {"conversationId": conversation_id, "message": "Checking in after discharge."}
    return Request("POST", f"{base}/api/conversations/send-message", body, auth, 202)


@dataclass(frozen=True)
class Contender:
    """One server under load: its request, and the processes whose CPU is charged to it."""

    name: str
    request: Request
    groups: dict[str, Callable[[], list[int]]]
    profiled: list[int]  # pids to signal PROFILE_START / PROFILE_STOP around its measured loads
    profile: str = ""  # where the (one) profiled process writes its stats


def baseline_and_caremsg(
    db: BenchDatabase,
    baseline: tuple[Request, list[multiprocessing.Process]],
    caremsg: tuple[Request, list[multiprocessing.Process]],
    *,
    profile: str | None = None,
    also: dict[str, list[multiprocessing.Process]] | None = None,
) -> list[Contender]:
    """The two contenders of a benchmark against its bare baseline: each server's own processes and
    PostgreSQL charged to it, caremsg also ``also``'s (e.g. the emulator, for delivery work after
    acceptance); with ``profile``, the caremsg process is profiled into that file."""

    def pids(group: list[multiprocessing.Process]) -> Callable[[], list[int]]:
        return lambda: [p.pid for p in group if p.pid]

    def postgres() -> list[int]:
        return postgres_pids(db.pgdata)

    (baseline_request, baseline_processes), (caremsg_request, caremsg_processes) = baseline, caremsg
    baseline_groups = {"server": pids(baseline_processes), "postgres": postgres}
    caremsg_groups = {"server": pids(caremsg_processes), "postgres": postgres}
    caremsg_groups.update((name, pids(group)) for name, group in (also or {}).items())
    return [
        Contender("baseline", baseline_request, baseline_groups, []),
        Contender(
            "caremsg",
            caremsg_request,
            caremsg_groups,
            pids(caremsg_processes)() if profile else [],
            profile or "",
        ),
    ]


@dataclass(frozen=True)
class Sample:
    name: str
    clients: int
    round: int
    rate: float
    latencies: list[float]
    cpu_us: dict[str, float]  # CPU µs per answered request, by process group


def _collect_profile(pid: int, path: str) -> None:
    """Stop the profile of ``pid`` and wait until it has written its (cumulative) stats to ``path``."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.kill(pid, PROFILE_STOP)
    for _ in range(1000):
        if os.path.exists(path):
            return
        time.sleep(0.01)
    raise RuntimeError(f"no profile from process {pid}")


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No collection in the load generator while a round is measured; one before and after.

    Its heap grows round by round (every latency is kept), so its full collections grew to
    50 to 70 ms each, and one landing inside a round held all 64 clients' responses unread: the
    round's p99 was the generator's pause, whichever server it was loading (the fourth round of
    ``bench/read_patient.py`` in most runs: 70 to 80 ms against 23 to 35 ms in the others). The servers'
    own collectors run as they do in service."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def measure(
    contenders: list[Contender], levels: list[int], rounds: int, total: int, seconds: float, warmup: int
) -> list[Sample]:
    """Each round, each concurrency level, each contender in turn (the order alternating round by
    round, so neither always runs on a machine the other just warmed or loaded)."""
    for contender in contenders:
        asyncio.run(load(contender.request, max(levels), warmup, seconds))
    samples: list[Sample] = []
    for round_ in range(rounds):
        order = contenders if round_ % 2 == 0 else contenders[::-1]
        for clients in levels:
            for contender in order:
                for pid in contender.profiled:
                    os.kill(pid, PROFILE_START)
                before = cpu(contender.groups)
                with collector_paused():
                    rate, latencies = asyncio.run(load(contender.request, clients, total, seconds))
                after = cpu(contender.groups)
                for pid in contender.profiled:
                    _collect_profile(pid, contender.profile)
                per = cpu_us(before, after, len(latencies))
                samples.append(Sample(contender.name, clients, round_, rate, latencies, per))
    return samples


def report(samples: list[Sample], baseline: str, subject: str, unit: str) -> None:
    """Per concurrency level: each contender's median throughput over the rounds, p50 / p99 of all
    its latencies, the same-run throughput ratio of each round and its median, and CPU per request."""
    levels = sorted({s.clients for s in samples})
    for clients in levels:
        print(f"  {clients} concurrent clients")
        at = [s for s in samples if s.clients == clients]
        for name in (baseline, subject):
            mine = [s for s in at if s.name == name]
            lat = [x for s in mine for x in s.latencies]
            rates = " ".join(f"{s.rate:.0f}" for s in mine)
            p99s = " ".join(f"{pct(s.latencies, 99):.1f}" for s in mine)
            print(
                f"    {name:9s} {statistics.median(s.rate for s in mine):7.0f} {unit}/s [{rates}]"
                f"   p50 {pct(lat, 50):6.1f} ms   p99 {pct(lat, 99):6.1f} ms [{p99s}]   n={len(lat)}"
            )
        ratios = [
            s.rate / b.rate
            for s in at
            if s.name == subject
            for b in at
            if b.name == baseline and b.round == s.round
        ]
        print(
            f"    {subject} / {baseline} throughput: median {statistics.median(ratios):.0%}"
            f" [{' '.join(f'{r:.0%}' for r in ratios)}]"
        )
        for name in (baseline, subject):
            mine = [s for s in at if s.name == name]
            groups = mine[0].cpu_us
            per = {k: statistics.median(s.cpu_us[k] for s in mine) for k in groups}
            parts = "   ".join(f"{k} {v:5.0f}" for k, v in per.items())
            print(f"    CPU µs/request {name:9s} {parts}   total {sum(per.values()):5.0f}")


def print_profile(path: str, limit: int = 25) -> None:
    """The caremsg process's hottest functions by own time, and by time including callees."""
    stats = pstats.Stats(path)
    for order in ("tottime", "cumulative"):
        stats.sort_stats(order).print_stats(limit)
