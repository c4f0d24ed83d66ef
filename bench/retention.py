"""The retention sweep over a large expired set: messages whose content it deletes per second.

    python bench/retention.py [--messages 1000000] [--batch 500] [--sweepers 1]

A throwaway embedded PostgreSQL, migrated, gets one organization, one sender, one patient, 100
ready conversations and ``--messages`` messages sent a year ago (one ``INSERT … SELECT`` over
``generate_series``); a policy whose ``retention.toml`` gives that organization 30 days. Then
``--sweepers`` concurrent sweeps (``engine.workflows.retention.sweep_retention``, the function the
service's schedule calls, each on an engine of its own as separate instances would be) run batch
after batch until nothing is due. Each batch is what production does: claim with ``SKIP LOCKED``,
empty the bodies, one audit record per message, one outbox entry per message (no relay runs here:
the channel deletions are left queued, and the audit sealer is not running). It prints messages
deleted per second, the batches' p50/p99 and the check that every message was deleted once.

    python bench/retention.py --with-sends [--messages 1000000] [--seconds 30] [--clients 16]
                              [--rounds 2] [--duty-cycle SHARE]

The issue's second figure: send-message throughput while the sweep runs, as a ratio of it without,
in the same run on the same database (target >= 80 %). The real app (bench/http_harness.py: caremsg
and the Sendbird emulator each in a process of their own) is loaded over HTTP the way
bench/send_message.py does (``POST /api/conversations/send-message``, closed loop) for ``--seconds``
without a sweep, then as long again while a sweep runs in a process of its own, on an engine of its
own, as another instance's schedule would: batch after batch of ``--batch``, busy at most
``--duty-cycle`` of the time (default: config.toml's ``retention.sweep_duty_cycle``; 1: no waits).
Rounds alternate which comes first; after each sweep the load waits for the service's audit sealer
to chain the sweep's records, so the next load without a sweep does not pay for it. It prints
both throughputs, p50/p99, the ratio per round, and what the sweep deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.http_harness import (
    embedded_database,
    free_port,
    load,
    load_average,
    pct,
    send_message_request,
    serve_caremsg,
    serve_emulator,
    start,
    stop,
)
from bench.proc_cpu import cpu_seconds, postgres_pids

POLICY_DIR = Path(__file__).resolve().parents[1] / "policies"

_SEED = """
WITH o AS (INSERT INTO organizations (name) VALUES ('Bench retention') RETURNING id),
u AS (
    INSERT INTO users (organization_id, email, password_hash, first_name, last_name, role, chat_user_id)
    SELECT id, 'bench.retention@example.org', 'x', 'Bench', 'Sender', 'care_team_member', 'bench_sender'
    FROM o
    RETURNING id, organization_id
),
p AS (
    INSERT INTO patients (organization_id, first_name, last_name, risk_level, created_by)
    SELECT organization_id, 'Bench', 'Patient', 'low', id FROM u RETURNING id, organization_id, created_by
)
INSERT INTO conversations (patient_id, title, channel_url, organization_id, created_by, channel_state)
SELECT p.id, 'Bench ' || k, 'bench_channel_' || k, p.organization_id, p.created_by, 'ready'
FROM p, generate_series(1, 100) k;
"""

_MESSAGES = """
INSERT INTO messages (conversation_id, sender_id, body, state, created_at)
SELECT c.id, c.created_by, 'Bench message body number ' || k, 'sent',
       now() - interval '365 days' + k * interval '1 ms'
FROM generate_series(1, {n}) k
JOIN conversations c ON c.channel_url = 'bench_channel_' || (1 + k % 100);
"""


async def seed(url: str, messages: int) -> tuple[int, float]:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    started = time.perf_counter()
    try:
        async with engine.begin() as c:
            await c.execute(text(_SEED))
            await c.execute(text(_MESSAGES.format(n=messages)))
            await c.execute(text("ANALYZE messages"))
            org = (
                await c.execute(text("SELECT id FROM organizations WHERE name = 'Bench retention'"))
            ).scalar_one()
    finally:
        await engine.dispose()
    return org, time.perf_counter() - started


def _policy(org: int) -> Any:
    """The repository's policy, with ``org``'s content living 30 days."""
    from engine.policy import Policy
    from integrations.policy_files import read_policy_sources

    sources = dataclasses.replace(
        read_policy_sources(POLICY_DIR), retention=f"[organization.{org}]\ncontent_days = 30\n"
    )
    return Policy.from_sources(sources)


async def sweep(url: str, org: int, batch: int, sweepers: int) -> tuple[int, float, list[float]]:
    from engine.workflows.retention import sweep_retention
    from integrations.retention_runner import retention_services

    policy = _policy(org)
    timings: list[float] = []

    async def one() -> int:
        done = 0
        async with retention_services(url, policy) as services:
            while True:
                t = time.perf_counter()
                n = await sweep_retention(services, limit=batch)
                if not n:
                    return done
                timings.append(time.perf_counter() - t)
                done += n

    started = time.perf_counter()
    counts = await asyncio.gather(*(one() for _ in range(sweepers)))
    return sum(counts), time.perf_counter() - started, timings


async def check(url: str, messages: int) -> tuple[int, int]:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as c:
            left = (
                await c.execute(text("SELECT count(*) FROM messages WHERE content_deleted_at IS NULL"))
            ).scalar_one()
            audited = (
                await c.execute(text("SELECT count(*) FROM audit_events WHERE workflow = 'retention.sweep'"))
            ).scalar_one()
    finally:
        await engine.dispose()
    return left, audited


def _sweeper(url: str, org: int, batch: int, duty: float, halt: Any, done: Any, ready: Any) -> None:
    """Another instance's retention schedule, in a process of its own: batch after batch, busy at
    most ``duty`` of the time (as handlers/schedules.py waits), until ``halt`` is set or nothing is
    due; puts (deleted, seconds, batch timings, its own CPU seconds) on ``done``."""
    from engine.workflows.retention import sweep_retention
    from handlers.logs import configure_logging
    from handlers.schedules import wait_after
    from integrations.retention_runner import retention_services

    configure_logging(fmt="json", level="error")

    async def main() -> None:
        timings: list[float] = []
        deleted = 0
        async with retention_services(url, _policy(org)) as services:
            ready.put(0)
            started, cpu = time.perf_counter(), time.process_time()
            while not halt.is_set():
                t = time.perf_counter()
                n = await sweep_retention(services, limit=batch)
                if not n:
                    break
                timings.append(time.perf_counter() - t)
                deleted += n
                if duty < 1:
                    await asyncio.sleep(wait_after(timings[-1], duty))
            done.put((deleted, time.perf_counter() - started, timings, time.process_time() - cpu))

    asyncio.run(main())


async def _sealed(url: str) -> float:
    """Wait until the service's audit sealer has chained every record written so far (the sweep's
    included: the serving instances seal them), so that a load without the sweep does not pay for
    the one before it; returns how long that took."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    started = time.perf_counter()
    try:
        async with engine.connect() as c:
            last = (await c.execute(text("SELECT coalesce(max(id), 0) FROM audit_events"))).scalar_one()
            while time.perf_counter() - started < 600:
                head = (
                    await c.execute(text("SELECT coalesce(max(event_id), 0) FROM audit_chain"))
                ).scalar_one()
                await c.rollback()
                if head >= last:
                    break
                await asyncio.sleep(0.2)
    finally:
        await engine.dispose()
    return time.perf_counter() - started


@dataclasses.dataclass(frozen=True)
class _Round:
    alone: tuple[float, list[float]]  # sends/s and latencies without a sweep
    swept: tuple[float, list[float]]  # the same while the sweep runs
    deleted: int
    sweep_seconds: float
    batches: list[float]
    sealing: float  # seconds the sealer took to catch up after the sweep stopped
    # cores busy during each load: (caremsg, postgres) without; (caremsg, postgres, sweeper) with
    cpu_alone: tuple[float, float]
    cpu_swept: tuple[float, float, float]


def with_sends(args: argparse.Namespace) -> int:
    """Send-message throughput without, then with, a sweep running alongside; rounds alternate."""
    import multiprocessing

    load_before = load_average()
    sealer = os.environ.get("CAREMSG_AUDIT_SEALER_ENABLED", "true").lower() not in ("false", "0")
    ctx = multiprocessing.get_context("spawn")
    rounds: list[_Round] = []
    processes: list[multiprocessing.Process] = []
    with embedded_database() as db:
        org, fill = asyncio.run(seed(db.url, args.messages))
        print(f"seeded {args.messages} expired messages in {fill:.1f} s")
        try:
            token = secrets.token_hex(20)
            emulator, emulator_port = start(serve_emulator, token)
            processes.append(emulator)
            port = free_port()
            processes.append(start(serve_caremsg, db.url, emulator_port, token, port, None, None)[0])
            request = asyncio.run(send_message_request(f"http://127.0.0.1:{port}"))
            asyncio.run(load(request, args.clients, args.warmup, args.seconds))

            app_pid = processes[-1].pid or 0

            def busy() -> tuple[float, float]:
                """CPU seconds used so far by caremsg's process and by PostgreSQL's."""
                return cpu_seconds([app_pid]), cpu_seconds(postgres_pids(db.pgdata))

            def sends() -> tuple[tuple[float, list[float]], tuple[float, float]]:
                """The load, and the cores caremsg and PostgreSQL kept busy meanwhile."""
                before, started = busy(), time.perf_counter()
                measured = asyncio.run(load(request, args.clients, 10**9, args.seconds))
                after, elapsed = busy(), time.perf_counter() - started
                return measured, ((after[0] - before[0]) / elapsed, (after[1] - before[1]) / elapsed)

            def swept() -> tuple[
                tuple[float, list[float]], tuple[float, float], tuple[int, float, list[float], float]
            ]:
                halt, done, ready = ctx.Event(), ctx.Queue(), ctx.Queue()
                sweeper = ctx.Process(
                    target=_sweeper,
                    args=(db.url, org, args.batch, args.duty_cycle, halt, done, ready),
                    daemon=True,
                )
                sweeper.start()
                ready.get(timeout=120)
                measured, cores = sends()
                halt.set()
                result = done.get(timeout=600)
                sweeper.join(30)
                return measured, cores, result

            def sealed() -> float:
                return asyncio.run(_sealed(db.url)) if sealer else 0.0

            for round_ in range(args.rounds):
                if round_ % 2 == 0:
                    alone, cores = sends()
                    with_sweep, swept_cores, (deleted, seconds, batches, cpu) = swept()
                    sealing = sealed()
                else:
                    with_sweep, swept_cores, (deleted, seconds, batches, cpu) = swept()
                    sealing = sealed()
                    alone, cores = sends()
                rounds.append(
                    _Round(
                        alone,
                        with_sweep,
                        deleted,
                        seconds,
                        batches,
                        sealing,
                        cores,
                        (*swept_cores, cpu / seconds),
                    )
                )
        finally:
            stop(processes)

    print(
        f"send-message while the retention sweep runs — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.node()}, {os.cpu_count()} CPUs, {load_before} before, {load_average()} after; "
        f"{args.clients} clients, {args.seconds:.0f} s each, sweep batch {args.batch},"
        f" duty cycle {args.duty_cycle}"
    )
    for name, pick in (("no sweep", lambda r: r.alone), ("sweeping", lambda r: r.swept)):
        lat = [x for r in rounds for x in pick(r)[1]]
        rates = " ".join(f"{pick(r)[0]:.0f}" for r in rounds)
        print(
            f"  {name:9s} {statistics.median(pick(r)[0] for r in rounds):6.0f} sends/s [{rates}]"
            f"   p50 {pct(lat, 50):6.1f} ms   p99 {pct(lat, 99):6.1f} ms   n={len(lat)}"
        )
    ratios = [r.swept[0] / r.alone[0] for r in rounds]
    print(
        f"  sweeping / no sweep throughput: median {statistics.median(ratios):.0%}"
        f" [{' '.join(f'{x:.0%}' for x in ratios)}] (target >= 80%)"
    )
    deleted = sum(r.deleted for r in rounds)
    seconds = sum(r.sweep_seconds for r in rounds)
    batches = [b for r in rounds for b in r.batches]
    print(
        f"  the sweep meanwhile: {deleted} messages in {seconds:.1f} s, {deleted / max(seconds, 1e-9):.0f}"
        f" messages/s; batch p50 {statistics.median(batches) * 1000 if batches else 0:.0f} ms,"
        f" p99 {pct(batches, 99):.0f} ms; the service's sealer then took"
        f" [{' '.join(f'{r.sealing:.1f}' for r in rounds)}] s to chain its audit records"
    )
    alone_cores = [statistics.median(r.cpu_alone[i] for r in rounds) for i in range(2)]
    swept_cores = [statistics.median(r.cpu_swept[i] for r in rounds) for i in range(3)]
    print(
        f"  cores busy (median): no sweep: caremsg {alone_cores[0]:.2f}, postgres {alone_cores[1]:.2f};"
        f" sweeping: caremsg {swept_cores[0]:.2f}, postgres {swept_cores[1]:.2f} (the sweep's"
        f" statements included), the sweeper's process {swept_cores[2]:.2f}"
    )
    if deleted:
        sweeper_cpu = sum(r.cpu_swept[2] * r.sweep_seconds for r in rounds)
        print(f"  the sweeper's own CPU per message deleted: {sweeper_cpu / deleted * 1e6:.0f} µs")
    return 0


def main() -> int:
    from handlers.settings import RetentionSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=RetentionSettings().sweep_batch_size)
    parser.add_argument("--sweepers", type=int, default=1)
    parser.add_argument("--with-sends", action="store_true", help="send-message throughput with/without")
    parser.add_argument("--seconds", type=float, default=30.0, help="--with-sends: each load, seconds")
    parser.add_argument("--clients", type=int, default=16, help="--with-sends: closed-loop clients")
    parser.add_argument("--rounds", type=int, default=2, help="--with-sends: alternating rounds")
    parser.add_argument("--warmup", type=int, default=300, help="--with-sends: warm-up requests")
    parser.add_argument(
        "--duty-cycle",
        type=float,
        default=RetentionSettings().sweep_duty_cycle,
        help="--with-sends: the share of its time the sweep may spend in batches (1: no waits)",
    )
    args = parser.parse_args()
    from handlers.logs import configure_logging

    if args.with_sends:
        configure_logging(fmt="json", level="error")
        return with_sends(args)

    configure_logging(fmt="json", level="error")  # an info line per audit record would measure stdout
    with embedded_database() as db:
        org, fill = asyncio.run(seed(db.url, args.messages))
        print(f"seeded {args.messages} expired messages in {fill:.1f} s")
        deleted, seconds, timings = asyncio.run(sweep(db.url, org, args.batch, args.sweepers))
        left, audited = asyncio.run(check(db.url, args.messages))
    print(
        f"swept {deleted} messages in {seconds:.1f} s with {args.sweepers} sweeper(s), batch {args.batch}: "
        f"{deleted / seconds:.0f} messages/s; batch p50 {statistics.median(timings) * 1000:.0f} ms, "
        f"p99 {pct(timings, 99):.0f} ms; {load_average()}"
    )
    print(
        f"check: {left} messages left with content, {audited} deletion audit records"
        f" (expected 0 and {deleted})"
    )
    return 0 if left == 0 and audited == deleted == args.messages else 1


if __name__ == "__main__":
    sys.exit(main())
