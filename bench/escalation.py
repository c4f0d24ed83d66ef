"""Escalation scheduler cost at 10,000 open urgent messages, against an idle round in the same run.

    python bench/escalation.py [--messages 10000] [--conversations 100] [--rounds 24] [--interval 5]
                               [--batch-size 500] [--database-url URL]

A throwaway embedded PostgreSQL (or ``--database-url``, a database this script may fill) is migrated
and seeded with M conversations (each its own patient and care team: a sender, two unread members,
one with a registered phone, an on-call shift) and N urgent messages sent over the last two minutes,
evenly, as a steady stream would leave them. The real ``EscalationScheduler`` runs its rounds on a
fake clock, on a pool of ONE connection (so the database's per-backend statistics are all its
own), in three phases of ``--rounds`` rounds each:

- **idle**: no urgent message at all (before seeding);
- **open, none due**: N open urgent messages, the clock where none is due yet;
- **steady**: the clock moving ``--interval`` seconds per round (the service's default), so each
  round takes the re-alerts that fell due since the last: about N x interval / 120 s messages.

Per phase it prints the wall time per round, the SQL statements per round, and what the rounds
cost PostgreSQL (``pg_stat_database`` of the benchmark database, flushed after the phase: rows
read = tup_returned + tup_fetched, rows written = inserted + updated, shared buffers hit + read),
each as a ratio against the idle round; and ``EXPLAIN (ANALYZE, BUFFERS)`` of the claim with N
open messages, none due. Logging is at ``error``, as in the other benchmarks (an ``info`` line per
audit event would measure stdout). The relay does not run: the outbox entries the rounds queue are not
delivered (their cost is the relay's, bench/relay.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from engine.consent_index import ConsentIndex
from integrations.escalation import EscalationScheduler
from integrations.policy_files import load_policy

POLICIES = Path(__file__).resolve().parents[1] / "policies"


@dataclass
class Phase:
    name: str
    seconds: list[float]
    statements: int
    claimed: int
    stats: dict[str, int]

    @property
    def per_round(self) -> float:
        return sum(self.seconds) / len(self.seconds)

    def stat(self, key: str) -> float:
        return self.stats[key] / len(self.seconds)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _dsn(url: str) -> dict[str, Any]:
    u = make_url(url)
    dsn: dict[str, Any] = {"user": u.username, "database": u.database, "port": u.port or 5432}
    dsn["host"] = u.query.get("host", u.host) or "127.0.0.1"
    if u.password:
        dsn["password"] = u.password
    return dsn


_STATS = (
    "SELECT tup_returned + tup_fetched AS rows_read, tup_inserted + tup_updated AS rows_written,"
    " blks_hit + blks_read AS buffers, xact_commit AS commits FROM pg_stat_database"
    " WHERE datname = current_database()"
)


async def _stats(conn: asyncpg.Connection) -> dict[str, int]:
    """The database's counters, after the observer's own writes (the seed) are reported."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await asyncio.sleep(1.2)
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return dict(await conn.fetchrow(_STATS))


async def _seed(conn: asyncpg.Connection, conversations: int, messages: int, at: datetime) -> None:
    org = await conn.fetchval("INSERT INTO organizations (name) VALUES ('Bench escalation') RETURNING id")

    async def user(name: str, role: str, phone: str | None = None) -> int:
        uid: int = await conn.fetchval(
            "INSERT INTO users (organization_id, email, password_hash, first_name, last_name, role,"
            " chat_user_id, alert_phone) VALUES ($1, $2, 'x', 'B', $3, $4, $5, $6) RETURNING id",
            org,
            f"{name}@bench.example",
            name,
            role,
            f"bench_{name}",
            phone,
        )
        return uid

    sender = await user("sender", "care_team_member")
    nurse = await user("nurse", "care_team_member", "+12025550101")
    peer = await user("peer", "peer_support")
    on_call = await user("oncall", "care_team_member")
    await user("admin", "admin")
    ids = []
    for i in range(conversations):
        patient = await conn.fetchval(
            "INSERT INTO patients (organization_id, first_name, last_name, risk_level, created_by)"
            " VALUES ($1, 'P', 'Q', 'high', $2) RETURNING id",
            org,
            sender,
        )
        team = await conn.fetchval(
            "INSERT INTO care_teams (patient_id, name, organization_id, created_by)"
            " VALUES ($1, 'Team', $2, $3) RETURNING id",
            patient,
            org,
            sender,
        )
        await conn.executemany(
            "INSERT INTO care_team_members (care_team_id, user_id, added_by) VALUES ($1, $2, $3)",
            [(team, u, sender) for u in (sender, nurse, on_call)],
        )
        await conn.execute(
            "INSERT INTO on_call_shifts (care_team_id, user_id, starts_at, ends_at, created_by)"
            " VALUES ($1, $2, $3, $4, $5)",
            team,
            on_call,
            at - timedelta(hours=1),
            at + timedelta(hours=12),
            sender,
        )
        conversation = await conn.fetchval(
            "INSERT INTO conversations (patient_id, title, channel_url, channel_state, organization_id,"
            " created_by) VALUES ($1, 'Bench', $2, 'ready', $3, $4) RETURNING id",
            patient,
            f"bench_escalation_{i}",
            org,
            sender,
        )
        await conn.executemany(
            "INSERT INTO conversation_members (conversation_id, user_id) VALUES ($1, $2)",
            [(conversation, u) for u in (sender, nurse, peer)],
        )
        ids.append(conversation)
    # Sent evenly over the last two minutes: each is first due two minutes after it was sent.
    await conn.execute(
        """
        INSERT INTO messages
            (conversation_id, sender_id, body, state, priority, created_at, escalation_due_at)
        SELECT ($1::int[])[1 + g % cardinality($1::int[])], $2, 'urgent #' || g, 'sent', 'urgent',
               $3::timestamptz - make_interval(secs => (g % $4) * 120.0 / $4),
               $3::timestamptz - make_interval(secs => (g % $4) * 120.0 / $4) + interval '2 minutes'
        FROM generate_series(1, $4) AS g
        """,
        ids,
        sender,
        at,
        messages,
    )
    await conn.execute("VACUUM ANALYZE messages, escalation_steps, conversation_members, users")


async def _phase(
    name: str,
    scheduler: EscalationScheduler,
    clock: FakeClock,
    rounds: int,
    step: timedelta,
    counter: list[int],
    engine: Any,
    observer: asyncpg.Connection,
) -> Phase:
    before = await _stats(observer)
    counted = counter[0]
    seconds, claimed = [], 0
    for _ in range(rounds):
        clock.now += step
        start = time.perf_counter()
        claimed += await scheduler.run_once()
        seconds.append(time.perf_counter() - start)
    statements = counter[0] - counted
    # The scheduler's backend reports its statistics at most once a second: make it report.
    async with engine.connect() as conn:
        await conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")
        await conn.commit()
    await asyncio.sleep(0.1)
    after = await _stats(observer)
    stats = {k: after[k] - before[k] for k in before}
    stats["commits"] -= 1  # the flush's own
    return Phase(name, seconds, statements, claimed, stats)


async def _run(url: str, args: argparse.Namespace) -> tuple[list[Phase], str]:
    from handlers.logs import configure_logging

    # As the other benchmarks: an info line per audit event would measure stdout, not the scheduler.
    configure_logging(fmt="json", level="error")
    observer = await asyncpg.connect(**_dsn(url))
    engine = create_async_engine(url, pool_size=1, max_overflow=0)
    counter = [0]

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _count(*_: Any) -> None:
        counter[0] += 1

    at = datetime.now(UTC)
    clock = FakeClock(at)
    policy = load_policy(POLICIES)
    scheduler = EscalationScheduler(
        async_sessionmaker(engine, expire_on_commit=False),
        lambda: policy,
        ConsentIndex(),
        clock=clock,
        batch_size=args.batch_size,
    )
    still = timedelta(0)
    try:
        await scheduler.run_once()  # warm: connection, prepared statements, imports
        phases = [
            await _phase(
                "idle (no urgent message)", scheduler, clock, args.rounds, still, counter, engine, observer
            )
        ]
        await _seed(observer, args.conversations, args.messages, at)
        phases.append(
            await _phase(
                f"{args.messages:,} open, none due",
                scheduler,
                clock,
                args.rounds,
                still,
                counter,
                engine,
                observer,
            )
        )
        explain = await observer.fetch(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF)"
            " SELECT m.id FROM messages m WHERE m.escalation_due_at <= $1 AND m.acknowledged_at IS NULL"
            " ORDER BY m.escalation_due_at LIMIT $2 FOR UPDATE OF m SKIP LOCKED",
            at,
            args.batch_size,
        )
        phases.append(
            await _phase(
                f"{args.messages:,} open, steady ({args.interval:g} s a round)",
                scheduler,
                clock,
                args.rounds,
                timedelta(seconds=args.interval),
                counter,
                engine,
                observer,
            )
        )
        steps = await observer.fetchval("SELECT count(*) FROM escalation_steps")
    finally:
        await engine.dispose()
        await observer.close()
    plan = "\n".join(f"    {r[0]}" for r in explain)
    return phases, f"{plan}\n  steps taken in the steady phase: {steps:,}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--conversations", type=int, default=100)
    parser.add_argument(
        "--rounds", type=int, default=24, help="rounds per phase (24 x 5 s: one re-alert each)"
    )
    parser.add_argument("--interval", type=float, default=5.0, help="fake seconds between steady rounds")
    parser.add_argument(
        "--batch-size", type=int, default=500, help="the scheduler's claim batch (config default)"
    )
    parser.add_argument("--database-url", help="an empty database to use instead of an embedded server")
    args = parser.parse_args()

    if args.database_url:
        from integrations.db.migrate import upgrade

        upgrade(args.database_url)
        phases, plan = asyncio.run(_run(args.database_url, args))
    else:
        from integrations.db.embedded import start_embedded_postgres
        from integrations.db.migrate import upgrade

        with tempfile.TemporaryDirectory(prefix="caremsg-bench-") as tmp:
            server = start_embedded_postgres(Path(tmp) / "pgdata", temporary=True)
            try:
                upgrade(server.url)
                phases, plan = asyncio.run(_run(server.url, args))
            finally:
                server.stop()

    print(
        f"escalation scheduler benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()},"
        f" {os.cpu_count()} CPUs, Python {platform.python_version()}, {args.rounds} rounds a phase,"
        f" batch {args.batch_size}, load {os.getloadavg()[0]:.1f}"
    )
    idle = phases[0]
    print(
        f"  {'phase':38s} {'ms/round':>9s} {'x idle':>7s} {'msgs/round':>10s} {'stmts':>6s}"
        f" {'rows read':>10s} {'x idle':>7s} {'written':>8s} {'buffers':>8s} {'x idle':>7s}"
    )
    for p in phases:
        print(
            f"  {p.name:38s} {p.per_round * 1000:9.2f} {p.per_round / idle.per_round:7.1f}"
            f" {p.claimed / len(p.seconds):10.0f} {p.statements / len(p.seconds):6.1f}"
            f" {p.stat('rows_read'):10.0f} {p.stat('rows_read') / max(idle.stat('rows_read'), 1):7.1f}"
            f" {p.stat('rows_written'):8.0f} {p.stat('buffers'):8.0f}"
            f" {p.stat('buffers') / max(idle.stat('buffers'), 1):7.1f}"
        )
    print("  the claim with every message open and none due:")
    print(plan)


if __name__ == "__main__":
    main()
