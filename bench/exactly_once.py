"""Exactly-once under outages, in every way Sendbird may answer a repeated ``dedup_id``: messages
delivered, lost and duplicated, counted on the emulator's own record.

    python bench/exactly_once.py [--messages 300] [--conversations 10] [--relays 2] [--compare OLD_RELAY.py]

For each ``dedup_mode`` of the emulator (``original``, ``already_exists``, ``invalid``, ``ignored``:
see ``integrations.sendbird_emulator.DedupMode``), a fresh database on a throwaway embedded
PostgreSQL gets N ``send_message`` outbox entries over M conversations, and ``--relays`` relays
deliver them side by side while the emulator cycles through an outage: 503 to every request for
0.3 s, then accept-then-drop (every request takes effect, no answer comes back) for 0.3 s, then
0.4 s of normal service, over and over. Afterwards the emulator's channels are read back:

- delivered: distinct caremsg message ids found in the channels (``data``);
- lost: N minus delivered; duplicated: messages in the channels minus delivered;
- failed: outbox entries the relay gave up on (it must not: every fault here is transient);
- wrong id: messages whose recorded Sendbird message id is not the id of the post in the channel.

``--compare`` runs another ``integrations/relay.py`` (e.g. the one before reconciliation:
``git show ff3cf1a:integrations/relay.py > /tmp/old_relay.py``) through the same outages.
The emulator runs in this process here, so its record can be read directly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import secrets
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from bench.seed import queue_posts, seed_conversations
from integrations.http_clients import http_client
from integrations.sendbird import RateLimits, SendbirdChatGateway, SendbirdClient
from integrations.sendbird_emulator import DEDUP_MODES, RunningEmulator, start_emulator


def _load_relay(path: str | None) -> ModuleType:
    if path is None:
        import integrations.relay

        return integrations.relay
    spec = importlib.util.spec_from_file_location("bench_compared_relay", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def _admin(server_url: str, statement: str) -> None:
    u = make_url(server_url)
    conn = await asyncpg.connect(
        user="postgres",
        host=str(u.query["host"]),
        port=int(str(u.query.get("port", 5432))),
        database="postgres",
    )
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _outages(emulator: RunningEmulator) -> None:
    """503 for 0.3 s, accept-then-drop for 0.3 s, normal for 0.4 s, until cancelled."""
    faults = emulator.state.faults
    while True:
        faults.fail_for(0.3)
        await asyncio.sleep(0.3)
        faults.drop_for(0.3)
        await asyncio.sleep(0.7)


async def _until_settled(conn: asyncpg.Connection) -> None:
    """Poll until no outbox entry is pending (a benchmark, not a test: polling is the measurement)."""
    pending = True
    while pending:
        await asyncio.sleep(0.1)
        pending = bool(await conn.fetchval("SELECT count(*) FROM outbox WHERE status = 'pending'"))


async def _one(server_url: str, mode: str, module: ModuleType, args: argparse.Namespace) -> dict[str, Any]:
    from integrations.db.migrate import upgrade_async

    name = f"bench_once_{secrets.token_hex(4)}"
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    await upgrade_async(url)
    u = make_url(url)
    conn = await asyncpg.connect(
        user="postgres", host=str(u.query["host"]), port=int(str(u.query.get("port", 5432))), database=name
    )
    engine = create_async_engine(url, pool_size=10, max_overflow=10)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    emulator = await start_emulator(api_token="bench-token", dedup_mode=mode)  # type: ignore[arg-type]
    try:
        async with http_client() as http:
            client = SendbirdClient(
                http,
                base_url=emulator.base_url,
                api_token="bench-token",
                timeout=1.0,
                rate_limits=RateLimits(get_per_second=100_000, write_per_second=100_000),
            )
            chat = SendbirdChatGateway(client)
            seeded = await seed_conversations(conn, chat, args.conversations)
            await queue_posts(conn, seeded, args.messages, "Message")
            settings = module.RelaySettings(
                poll_interval=0.02, base_backoff=0.05, max_backoff=0.4, batch_size=20, lease_seconds=30
            )
            relays = [
                asyncio.create_task(module.OutboxRelay(sessions, chat, settings).run())
                for _ in range(args.relays)
            ]
            outages = asyncio.create_task(_outages(emulator))
            try:
                await _until_settled(conn)
            finally:
                for task in (*relays, outages):
                    task.cancel()
                for task in (*relays, outages):
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        posted = [m for c in emulator.state.channels.values() for m in c.messages]
        ids_in_chat = {
            json.loads(m.data)["message_id"]: m.message_id for m in posted if m.data.startswith("{")
        }
        failed = await conn.fetchval("SELECT count(*) FROM outbox WHERE status = 'failed'")
        recorded = dict(await conn.fetch("SELECT id, chat_message_id FROM messages WHERE state = 'sent'"))
        wrong = sum(1 for mid, chat_id in recorded.items() if ids_in_chat.get(mid) not in (chat_id,))
        post_requests = sum(
            1 for r in emulator.state.received if r.method == "POST" and r.path.endswith("/messages")
        )
        reads = sum(1 for r in emulator.state.received if r.method == "GET" and r.path.endswith("/messages"))
        return {
            "delivered": len(ids_in_chat),
            "lost": args.messages - len(ids_in_chat),
            "duplicated": len(posted) - len(ids_in_chat),
            "failed": failed,
            "wrong_id": wrong,
            "posts": post_requests,
            "reads": reads,
        }
    finally:
        await emulator.close()
        await conn.close()
        await engine.dispose()
        await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _run(server_url: str, args: argparse.Namespace) -> list[tuple[str, str, dict[str, Any]]]:
    from handlers.logs import configure_logging

    configure_logging(fmt="json", level="critical")
    contenders = [("this checkout", _load_relay(None))]
    if args.compare:
        contenders.append((Path(args.compare).name, _load_relay(args.compare)))
    rows = []
    for mode in DEDUP_MODES:
        for name, module in contenders:
            rows.append((mode, name, await _one(server_url, mode, module, args)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--relays", type=int, default=2)
    parser.add_argument("--compare", help="another integrations/relay.py to put through the same outages")
    args = parser.parse_args()

    from integrations.db.embedded import start_embedded_postgres

    with tempfile.TemporaryDirectory(prefix="caremsg-bench-") as tmp:
        server = start_embedded_postgres(Path(tmp) / "pgdata", temporary=True)
        try:
            rows = asyncio.run(_run(server.url, args))
        finally:
            server.stop()
    print(
        f"exactly-once benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()},"
        f" {os.cpu_count()} CPUs, {args.messages} messages over {args.conversations} conversations,"
        f" {args.relays} relays,"
        " outage cycle 503 0.3 s / accept-then-drop 0.3 s / ok 0.4 s"
    )
    for mode, name, r in rows:
        print(
            f"  {mode:15s} {name:28s} delivered {r['delivered']:4d}  lost {r['lost']:3d}"
            f"  duplicated {r['duplicated']:3d}  failed {r['failed']:3d}  wrong id {r['wrong_id']:3d}"
            f"  posts {r['posts']:4d}  reads {r['reads']:4d}"
        )


if __name__ == "__main__":
    main()
