"""Authorized patient reads per second with durable audit, as a ratio of the same reads without audit,
measured in the same run on the same database.

    python bench/audited_reads.py                 # embedded PostgreSQL in a temporary directory
    DATABASE_URL=postgresql+asyncpg://... python bench/audited_reads.py
    python bench/audited_reads.py --seconds 5 --concurrency 16 --rounds 3

One read is the whole ``get_patient`` workflow as a request runs it after authentication: the policy
decision (role check, relationship facts from PostgreSQL, Casbin), the patient row, and the audit
event. *Audited*: the event is written durably in the read's own transaction (shared advisory lock
plus INSERT, fail closed) while the background sealer hash-chains the trail every second, as in the
service. *Unaudited*: the same workflow with the unit of work's audit sink swapped for one that
writes nothing (``DiscardingAuditSink``, a bench-only double). Rounds alternate between the two so
drift on a noisy machine hits both alike; the ratio is of the totals.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from engine.model import Actor, RiskLevel, Role
from engine.policy import PolicyHolder
from engine.services import Services
from engine.workflows import patients
from engine.workflows.identity import CreateUser, bootstrap_user
from handlers.logs import configure_logging
from integrations.audit_sealer import AuditSealer
from integrations.db.migrate import upgrade_async
from integrations.db.uow import AuditSink, DiscardingAuditSink, PostgresAuditSink, SqlUnitOfWork
from integrations.offline import NoDelivery
from integrations.policy_files import load_policy
from integrations.security import Argon2Passwords, JwtTokens

POLICY_DIR = Path(__file__).resolve().parents[1] / "policies"


def services(engine: AsyncEngine, sink: AuditSink) -> Services:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    return Services(
        uow=lambda: SqlUnitOfWork(sessions, sink),
        policy=PolicyHolder(load_policy(POLICY_DIR)),
        passwords=Argon2Passwords(),
        tokens=JwtTokens("b" * 32, issuer="bench", audience="bench", lifetime_seconds=3600),
        delivery=NoDelivery(),
    )


async def setup(engine: AsyncEngine, count: int) -> tuple[Actor, list[int]]:
    """An organization, a care-team member, and ``count`` patients on their care team."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        org = (
            await session.execute(
                text("INSERT INTO organizations (name) VALUES (:n) RETURNING id"),
                {"n": f"Bench {secrets.token_hex(3)}"},
            )
        ).scalar_one()
    user = await bootstrap_user(
        lambda: SqlUnitOfWork(sessions),
        Argon2Passwords(),
        CreateUser(
            f"bench.{secrets.token_hex(3)}@example.org",
            "bench-password",
            "B",
            "N",
            Role.CARE_TEAM_MEMBER,
            org,
        ),
    )
    actor = Actor(user.id, Role.CARE_TEAM_MEMBER, org, request_id="bench", source_address="127.0.0.1")
    svc = services(engine, PostgresAuditSink())
    ids = []
    for i in range(count):
        patient = await patients.register_patient(
            svc, actor, patients.RegisterPatient("P", f"N{i}", RiskLevel.LOW)
        )
        ids.append(patient.id)
    return actor, ids


async def measure(svc: Services, actor: Actor, ids: list[int], seconds: float, concurrency: int) -> int:
    """Reads completed by ``concurrency`` workers in ``seconds``."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < deadline:
            await patients.get_patient(svc, actor, ids[i % len(ids)])
            done += 1
            i += concurrency

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return done


async def run(url: str, args: argparse.Namespace) -> None:
    await upgrade_async(url)
    engine = create_async_engine(url, pool_size=args.concurrency + 4, max_overflow=4)
    try:
        actor, ids = await setup(engine, 50)
        audited, unaudited = services(engine, PostgresAuditSink()), services(engine, DiscardingAuditSink())
        sealer = AuditSealer(engine, interval=1.0)
        sealing = asyncio.create_task(sealer.run())
        await measure(audited, actor, ids, 1.0, args.concurrency)  # warm-up: pool, caches, JIT-free paths
        await measure(unaudited, actor, ids, 1.0, args.concurrency)
        totals = {"audited": 0, "unaudited": 0}
        for round_ in range(args.rounds):
            order = [("audited", audited), ("unaudited", unaudited)]
            for name, svc in order if round_ % 2 == 0 else reversed(order):
                n = await measure(svc, actor, ids, args.seconds, args.concurrency)
                totals[name] += n
                print(f"  round {round_ + 1} {name:>9}: {n / args.seconds:8.0f} reads/s")
        sealing.cancel()
        await asyncio.gather(sealing, return_exceptions=True)
        sealed = await sealer.seal_pending()
        seconds = args.seconds * args.rounds
        a, u = totals["audited"] / seconds, totals["unaudited"] / seconds
        print()
        python = platform.python_version()
        print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {python}")
        when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        print(
            f"date: {when}; concurrency {args.concurrency}; {args.rounds} rounds x {args.seconds}s per mode"
        )
        print(f"audited (durable, same transaction, chain sealed in the background): {a:8.0f} reads/s")
        print(f"unaudited (same workflow, audit sink discards):                       {u:8.0f} reads/s")
        print(f"ratio audited / unaudited: {a / u:.0%}  (target >= 60%); sealed at the end: {sealed} events")
    finally:
        await engine.dispose()


def main() -> None:
    # The service's JSON logging, above info: the per-event audit log line (emitted the same way in
    # both modes) would otherwise measure the terminal, not the database.
    configure_logging(fmt="json", level="warning")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per round and mode")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if url:
        asyncio.run(run(url, args))
        return
    from integrations.db.embedded import start_embedded_postgres

    with tempfile.TemporaryDirectory(prefix="caremsg-bench-") as tmp:
        server = start_embedded_postgres(Path(tmp) / "pgdata", temporary=True)
        try:
            asyncio.run(run(server.url, args))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
