"""Outbox relay throughput: deliveries/s of N pending send_message entries over M conversations, next to
the same N messages posted straight to the Sendbird emulator (no database at all) in the same run.

    python bench/relay.py [--messages 2000] [--conversations 50] [--rounds 3] [--concurrency 8]
                          [--latency-ms 0] [--compare OLD_RELAY.py] [--claim-before] [--heads-only]
                          [--long-runs]

A throwaway embedded PostgreSQL is migrated and seeded with one sender and M ready conversations
(their channels exist in the emulator). Each round, for each contender in turn:

- **baseline**: the N messages posted through the real ``SendbirdChatGateway`` (``integrations/
  sendbird/``), a conversation's messages one after the other, conversations side by side with at
  most ``--concurrency`` posts in flight (and once more with one in flight, as the old relay worked);
- **relay**: N ``send_message`` outbox entries (with their messages and channel delivery rows) are
  seeded, then ``OutboxRelay.run_once`` is called until none is pending; the figure is N / elapsed.
  ``--compare`` loads another single-file ``integrations/relay.py`` and measures it the same way in
  the same run; a relay from before ``integrations/relay/`` became a package no longer imports
  against this checkout, so compare with those from a worktree of their revision.
- **claim before** (``--claim-before``): this checkout's relay with the claim it had before the
  claim learnt to skip a conversation's backlog (:data:`WALKING_CLAIM`, one statement that walks
  every pending entry in id order). With ``--conversations 1`` every entry waits behind the one
  before it: a backlog of N in one conversation, drained.
- **heads only** (``--heads-only``): this checkout's relay with the claim it had before it took a
  conversation's next entries with its first (``heads_claim`` in tests/support/outbox_claims.py:
  each conversation's first pending entry only, so one conversation's backlog drains one entry
  per claim).
- **runs of a batch** (``--long-runs``): this checkout's claim with as many of a conversation's
  entries behind its head as the batch holds, instead of ``CLAIM_RUN``.

The emulator runs in a process of its own (Sendbird's work is not on our CPU), answering at once
unless ``--latency-ms`` holds each request for a network round trip; the relay runs in this process,
like in the service. Besides deliveries/s it prints this process's CPU time, PostgreSQL's CPU time
(the embedded server's processes) and the SQL statements and transactions per delivered message,
the cost the relay puts on a process and a database it shares with the request handlers. Rate
limits are lifted: plan limits pace delivery in production, here the relay's own cost is measured.

Longer than 400 lines because its contenders (the gateway alone, the relay, the relay with the claim
before, another revision's relay) share one seeding, one emulator and one way of counting CPU and
statements, which keeps their figures comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import multiprocessing
import os
import platform
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from bench.proc_cpu import cpu_seconds, postgres_pids
from bench.seed import SENDER, Seeded, queue_posts, seed_conversations
from integrations.http_clients import http_client
from integrations.relay.statements import claim
from integrations.sendbird import RateLimits, SendbirdChatGateway, SendbirdClient
from tests.support.outbox_claims import heads_claim, walking_claim

BODY = "Checking in after discharge."
CLAIM_BEFORE = "relay, claim before"
HEADS_ONLY = "relay, heads only"
LONG_RUNS = "relay, runs of a batch"


async def long_runs_claim(session: Any, parameters: dict[str, Any]) -> list[Any]:
    """This checkout's claim with runs as long as its batch (``run`` = ``limit``), not CLAIM_RUN."""
    return await claim(session, {**parameters, "run": parameters["limit"]})


#: The claims other than this checkout's that the relay is measured with, by contender.
OLD_CLAIMS = {CLAIM_BEFORE: walking_claim, HEADS_ONLY: heads_claim, LONG_RUNS: long_runs_claim}


def _serve_emulator(token: str, latency: float, ready: Any) -> None:
    """The Sendbird emulator in a process of its own: in production Sendbird's work is not on our CPU.

    With ``latency``, every API request is held that long first (the emulator's own "hang" fault,
    without end), standing in for the round trip to Sendbird's region.
    """
    from handlers.logs import configure_logging
    from integrations.sendbird_emulator import start_emulator

    configure_logging(fmt="json", level="error")

    async def main() -> None:
        emulator = await start_emulator(api_token=token, app_id="bench")
        if latency > 0:
            emulator.state.faults.hang_next(latency, count=10**12)
        ready.put(int(emulator.base_url.rsplit(":", 1)[1]))
        await asyncio.Event().wait()

    asyncio.run(main())


def _start_emulator(token: str, latency: float) -> tuple[BaseProcess, int]:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    process = ctx.Process(target=_serve_emulator, args=(token, latency, ready), daemon=True)
    process.start()
    return process, int(ready.get(timeout=120))


def _load_relay(path: str | None) -> ModuleType:
    """This checkout's relay, or another version of integrations/relay.py read from a file."""
    if path is None:
        import integrations.relay

        return integrations.relay
    spec = importlib.util.spec_from_file_location("bench_compared_relay", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@dataclass
class Counter:
    """SQL statements and transactions the relay's engine ran, and this process's CPU time."""

    statements: int = 0
    transactions: int = 0

    def install(self, engine: AsyncEngine) -> None:
        def on_execute(*_: Any) -> None:
            self.statements += 1

        def on_commit(*_: Any) -> None:
            self.transactions += 1

        event.listen(engine.sync_engine, "before_cursor_execute", on_execute)
        event.listen(engine.sync_engine, "commit", on_commit)
        event.listen(engine.sync_engine, "rollback", on_commit)


@dataclass
class Result:
    """Totals of one contender over all rounds."""

    name: str
    messages: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    db_cpu_seconds: float = 0.0
    statements: int = 0
    transactions: int = 0
    rates: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


async def _seed(conn: asyncpg.Connection, seeded: Seeded, messages: int) -> None:
    """N chat posts queued round-robin over the conversations (bench/seed.py), then what autovacuum
    would have done by the time a real backlog is worked off."""
    await queue_posts(conn, seeded, messages, BODY)
    await conn.execute("VACUUM ANALYZE outbox, messages, message_deliveries")


async def _measure(
    result: Result, counter: Counter, work: Awaitable[None], messages: int, data_dir: Path
) -> None:
    statements, transactions = counter.statements, counter.transactions
    cpu = time.process_time()
    server = postgres_pids(data_dir)
    db_cpu = cpu_seconds(server)
    started = time.perf_counter()
    await work
    elapsed = time.perf_counter() - started
    result.cpu_seconds += time.process_time() - cpu
    result.db_cpu_seconds += cpu_seconds(server) - db_cpu
    result.seconds += elapsed
    result.messages += messages
    result.statements += counter.statements - statements
    result.transactions += counter.transactions - transactions
    result.rates.append(messages / elapsed)


async def _baseline(chat: SendbirdChatGateway, setup: Seeded, messages: int, in_flight: int) -> None:
    """The relay's HTTP work alone: per conversation in order, conversations side by side."""
    lanes: list[list[tuple[str, int]]] = [[] for _ in setup.conversations]
    for g in range(messages):
        lanes[g % len(lanes)].append((setup.conversations[g % len(lanes)][1], g))
    gate = asyncio.Semaphore(in_flight)
    run = secrets.token_hex(4)

    async def lane(items: list[tuple[str, int]]) -> None:
        for channel_url, g in items:
            async with gate:
                await chat.send_message(
                    channel_url,
                    sender_id=SENDER,
                    text=f"{BODY} #{g}",
                    dedup_id=f"bench_{run}_{g}",
                    custom_type="caremsg_message",
                    data="{}",
                )

    await asyncio.gather(*(lane(items) for items in lanes))


async def _relay(
    module: ModuleType,
    sessions: async_sessionmaker[Any],
    chat: SendbirdChatGateway,
    conn: asyncpg.Connection,
    args: argparse.Namespace,
    claim: Callable[..., Awaitable[Any]] | None = None,
) -> None:
    names = {f.name for f in dataclasses.fields(module.RelaySettings)}
    options: dict[str, Any] = {"batch_size": args.batch_size}
    if "concurrency" in names:
        options["concurrency"] = args.concurrency
    relay = module.OutboxRelay(sessions, chat, module.RelaySettings(**options))
    runner = sys.modules[f"{module.__name__}.runner"] if claim is not None else None
    kept = runner.claim if runner is not None else None
    try:
        if runner is not None:
            runner.claim = claim  # what the relay's cycle calls to claim a batch
        while True:
            if await relay.run_once() == 0:
                if not await conn.fetchval("SELECT count(*) FROM outbox WHERE status = 'pending'"):
                    return
                await asyncio.sleep(0.01)  # only if something is waiting out a retry
    finally:
        if runner is not None:
            runner.claim = kept


async def _check(conn: asyncpg.Connection, messages: int) -> None:
    """Every entry delivered, every message sent, one audit record per entry: a fast relay that
    skipped bookkeeping would not count."""
    done = await conn.fetchval("SELECT count(*) FROM outbox WHERE status = 'done'")
    sent = await conn.fetchval("SELECT count(*) FROM messages WHERE state = 'sent'")
    audited = await conn.fetchval(
        "SELECT count(*) FROM audit_events WHERE workflow = 'delivery.send_message'"
    )
    channel = await conn.fetchval(
        "SELECT count(*) FROM message_deliveries WHERE recipient = 'channel' AND state = 'sent'"
    )
    if not done == sent == audited == channel == messages:
        raise SystemExit(f"bookkeeping mismatch: {done=} {sent=} {audited=} {channel=}, expected {messages}")


async def _run(
    url: str, data_dir: Path, emulator_port: int, token: str, args: argparse.Namespace
) -> list[Result]:
    from handlers.logs import configure_logging

    configure_logging(fmt="json", level="error")
    u = make_url(url)
    conn = await asyncpg.connect(
        user="postgres",
        host=str(u.query["host"]),
        port=int(str(u.query.get("port", 5432))),
        database="postgres",
    )
    # As integrations.db.resources.create_engine builds it.
    engine = create_async_engine(
        url,
        pool_size=10,
        max_overflow=10,
        pool_recycle=1800,
        connect_args={"server_settings": {"statement_timeout": "5000"}, "timeout": 5},
    )
    counter = Counter()
    counter.install(engine)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    contenders: list[tuple[str, ModuleType | None]] = [
        ("baseline, 1 in flight", None),
        (f"baseline, {args.concurrency} in flight", None),
        ("relay (this checkout)", _load_relay(None)),
    ]
    if args.claim_before:
        contenders.append((CLAIM_BEFORE, _load_relay(None)))
    if args.heads_only:
        contenders.append((HEADS_ONLY, _load_relay(None)))
    if args.long_runs:
        contenders.append((LONG_RUNS, _load_relay(None)))
    if args.compare:
        contenders.append((f"relay ({Path(args.compare).name})", _load_relay(args.compare)))
    results = {name: Result(name) for name, _ in contenders}
    try:
        async with http_client() as http:
            client = SendbirdClient(
                http,
                base_url=f"http://127.0.0.1:{emulator_port}",
                api_token=token,
                rate_limits=RateLimits(get_per_second=100_000, write_per_second=100_000),
            )
            chat = SendbirdChatGateway(client)
            setup = await seed_conversations(conn, chat, args.conversations)
            delivered = 0
            for round_no in range(args.warmup_rounds + args.rounds):
                warmup = round_no < args.warmup_rounds
                n = args.warmup if warmup else args.messages
                # Alternate the order round by round: the VM's speed drifts.
                order = contenders if round_no % 2 == 0 else list(reversed(contenders))
                for name, module in order:
                    into = Result(name) if warmup else results[name]
                    if module is None:
                        in_flight = 1 if name.startswith("baseline, 1 ") else args.concurrency
                        await _measure(into, counter, _baseline(chat, setup, n, in_flight), n, data_dir)
                    else:
                        await _seed(conn, setup, n)
                        claim = OLD_CLAIMS.get(name)
                        work = _relay(module, sessions, chat, conn, args, claim)
                        await _measure(into, counter, work, n, data_dir)
                        delivered += n
                        await _check(conn, delivered)
    finally:
        await conn.close()
        await engine.dispose()
    return list(results.values())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2000, help="outbox entries per round")
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=200, help="messages per warm-up round")
    parser.add_argument("--warmup-rounds", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=20, help="the relay's claim batch (config default)")
    parser.add_argument("--concurrency", type=int, default=8, help="posts in flight (new relay, baseline)")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="hold every emulator request this long (network)"
    )
    parser.add_argument("--compare", help="another integrations/relay.py to measure in the same run")
    parser.add_argument(
        "--claim-before",
        action="store_true",
        help="also measure this relay with the claim that walked every pending entry (WALKING_CLAIM)",
    )
    parser.add_argument(
        "--heads-only",
        action="store_true",
        help="also measure this relay with the claim that took a conversation's first entry alone",
    )
    parser.add_argument(
        "--long-runs",
        action="store_true",
        help="also measure this relay with runs behind a head as long as the batch, not CLAIM_RUN",
    )
    args = parser.parse_args()

    from integrations.db.embedded import start_embedded_postgres
    from integrations.db.migrate import upgrade

    token = secrets.token_hex(20)
    with tempfile.TemporaryDirectory(prefix="caremsg-bench-") as tmp:
        server = start_embedded_postgres(Path(tmp) / "pgdata", temporary=True)
        emulator = None
        try:
            upgrade(server.url)
            emulator, port = _start_emulator(token, args.latency_ms / 1000)
            results = asyncio.run(_run(server.url, server.data_dir, port, token, args))
        finally:
            if emulator is not None:
                emulator.terminate()
                emulator.join(10)
            server.stop()

    print(
        f"relay benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs,"
        f" Python {platform.python_version()}, {args.messages} send_message entries x {args.rounds} rounds"
        f" over {args.conversations} conversations, batch {args.batch_size},"
        f" emulator latency {args.latency_ms:g} ms, load {os.getloadavg()[0]:.1f}"
    )
    concurrent = next(r for r in results if r.name.startswith(f"baseline, {args.concurrency} "))
    sequential = results[0]
    for r in results:
        per_msg_cpu = r.cpu_seconds / r.messages * 1e6 if r.messages else 0.0
        per_msg_db = r.db_cpu_seconds / r.messages * 1e6 if r.messages else 0.0
        rounds = " ".join(f"{x:.0f}" for x in r.rates)
        line = f"  {r.name:34s} {r.rate:7.0f} deliveries/s  [{rounds}]  CPU {per_msg_cpu:5.0f} µs/msg"
        line += f"  PostgreSQL {per_msg_db:5.0f} µs/msg"
        if not r.name.startswith("baseline"):
            line += (
                f"  SQL {r.statements / r.messages:4.2f} stmt + {r.transactions / r.messages:4.2f} tx /msg"
                f"  vs baseline: {r.rate / sequential.rate:4.0%} (1 in flight),"
                f" {r.rate / concurrent.rate:4.0%} ({args.concurrency} in flight)"
            )
        print(line)
    now = next(r for r in results if r.name == "relay (this checkout)")
    for before in (r for r in results if r.name in OLD_CLAIMS and r.rate):
        print(
            f"  this checkout / {before.name.removeprefix('relay, ')}:"
            f" {now.rate / before.rate:.1f}x deliveries/s,"
            f" CPU per message {before.cpu_seconds / max(now.cpu_seconds, 1e-9):.1f}x less (relay),"
            f" {before.db_cpu_seconds / max(now.db_cpu_seconds, 1e-9):.1f}x less (PostgreSQL)"
        )


if __name__ == "__main__":
    main()
