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

Not measured here (yet): send-message throughput while the sweep runs, as a ratio of it without.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.http_harness import embedded_database, load_average, pct

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


async def sweep(url: str, org: int, batch: int, sweepers: int) -> tuple[int, float, list[float]]:
    from engine.policy import Policy
    from engine.workflows.retention import sweep_retention
    from integrations.policy_files import read_policy_sources
    from integrations.retention_runner import retention_services

    sources = dataclasses.replace(
        read_policy_sources(POLICY_DIR), retention=f"[organization.{org}]\ncontent_days = 30\n"
    )
    policy = Policy.from_sources(sources)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--sweepers", type=int, default=1)
    args = parser.parse_args()
    from handlers.logs import configure_logging

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
