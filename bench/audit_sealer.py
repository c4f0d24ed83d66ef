"""Audit sealer cost: events sealed per second and CPU per sealed event, for the sealer's process and
for PostgreSQL, of this checkout's sealer next to an older one, in the same run on the same server.

    python bench/audit_sealer.py [--events 20000] [--round-size 0] [--batch-size 1000] [--rounds 3]
                                 [--idle-rounds 200] [--old REV]

A throwaway embedded PostgreSQL is migrated once into a template database. Each round, for each
contender in turn (the order alternates between rounds, so drift hits both alike), a fresh database
is cloned from the template, 50 events are written and sealed to warm the contender up (compiled
and prepared statements), and N audit events are written (``COPY``, then ``VACUUM ANALYZE`` as
autovacuum would, unmeasured); then the contender's ``AuditSealer.seal_pending`` seals them and is
measured: wall time, this process's CPU time, and the CPU time of every PostgreSQL
process (backends, WAL writer, checkpointer...), read from /proc. With ``--round-size K`` the events
arrive K at a time and each K is sealed on its own, as the service's sealer seals what arrived since
its last round (at 500 events/s, K = 500). Then ``--idle-rounds`` rounds with nothing to seal are
measured the same way: each service process runs one a second.

Contenders, all in this process:

- **old**: ``integrations/audit_sealer.py`` and ``engine/audit_chain.py`` as of ``--old`` (a git
  revision; by default the last one before the asyncpg sealer), loaded from temporary files;
- **old sealer, new hashing**: the old sealer with this checkout's ``engine.audit_chain``, to tell the
  cheaper hashing from the rest;
- **new**: this checkout's sealer.

After every contender the chain it wrote (seq, event_id, digest, prev_hash, hash) must equal the
first contender's chain of that round, byte for byte, or the benchmark stops.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bench.proc_cpu import cpu_seconds, postgres_pids
from engine.audit_chain import CONTENT_FIELDS

ROOT = Path(__file__).resolve().parents[1]

#: The last revision whose sealer read and wrote through SQLAlchemy, row by row, and hashed with
#: json.dumps.
OLD_REVISION = "c40ebd3"

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
WARM_EVENTS = 50
COLUMNS = CONTENT_FIELDS  # every hashed field is an audit_events column


def _events(start: int, count: int) -> list[tuple[Any, ...]]:
    """Events shaped like the service's (a send's decision, deliveries, a failed login...), with
    microseconds, nulls, nested and non-ASCII details, so the digests cover what production sees."""
    rows = []
    for i in range(start, start + count):
        kind = i % 5
        details: dict[str, Any] = {}
        if kind == 0:
            details = {"message_id": i, "consent_id": i // 3, "external_index": 0}
        elif kind == 1:
            details = {"recipient": "sms", "queued": True, "note": "fenêtre fermée", "n": None}
        elif kind == 2:
            details = {"nested": {"b": [1, 2.5, "x"], "a": {"z": False}}, "ratio": 0.1}
        rows.append(
            (
                T0 + timedelta(seconds=i, microseconds=(i * 7919) % 1_000_000 if i % 4 else 0),
                f"req-{i:08x}",
                None if kind == 3 else 100 + i % 50,
                None if kind == 3 else "peer_support",
                None if kind == 3 else 1 + i % 3,
                "10.0.0.7",
                "decision" if kind != 4 else "delivery",
                "conversation.send_message" if kind != 3 else "auth.login",
                "message",
                str(i),
                None if kind == 3 else 1000 + i % 97,
                "allow" if kind != 3 else "deny",
                "roles.csv:31: peer_support, conversation.send_message, member & on_care_team",
                "allowed" if kind != 3 else "bad_credentials",
                "3f2a9c1d",
                "treatment" if i % 2 else None,
                i % 11 == 0,
                "success" if kind != 3 else "denied",
                json.dumps(details),
                hashlib.sha256(b"%d" % i).hexdigest() if kind == 3 else None,
            )
        )
    return rows


def _load(revision: str, path: str, tmp: Path, name: str) -> ModuleType:
    """``path`` as of ``revision``, as a module of its own named ``name``."""
    source = subprocess.run(  # noqa: S603 - git, with a revision given on our own command line
        ["git", "-C", str(ROOT), "show", f"{revision}:{path}"],  # noqa: S607
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    file = tmp / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path} of {revision}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def _contenders(revision: str, tmp: Path) -> dict[str, ModuleType]:
    """The old sealer with the old hashing, the old sealer with this checkout's hashing, the new one.

    The old sealer imports ``extend`` from ``engine.audit_chain``, which would be this checkout's:
    the first contender gets the old revision's instead, so it is the old code throughout.
    """
    import integrations.audit_sealer

    old_chain = _load(revision, "engine/audit_chain.py", tmp, "bench_old_audit_chain")
    old = _load(revision, "integrations/audit_sealer.py", tmp, "bench_old_audit_sealer")
    old.extend = old_chain.extend  # type: ignore[attr-defined]
    old_sealer_new_hashing = _load(revision, "integrations/audit_sealer.py", tmp, "bench_old_sealer_new_hash")
    return {"old": old, "old sealer, new hashing": old_sealer_new_hashing, "new": integrations.audit_sealer}


def _postgres_cpu(data_dir: Path) -> float:
    return cpu_seconds(postgres_pids(data_dir))


@dataclass
class Result:
    name: str
    events: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    pg_cpu: float = 0.0
    rates: list[float] = field(default_factory=list)
    idle_rounds: int = 0
    idle_cpu: float = 0.0
    idle_pg_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def per_event(self, seconds: float) -> float:
        return seconds / self.events * 1e6 if self.events else 0.0

    def per_idle_round(self, seconds: float) -> float:
        return seconds / self.idle_rounds * 1e6 if self.idle_rounds else 0.0


def _dsn(url: str) -> dict[str, Any]:
    u = make_url(url)
    return {
        "user": u.username,
        "host": u.query.get("host") or u.host,
        "port": int(str(u.query.get("port") or u.port or 5432)),
        "database": u.database,
    }


async def _one(
    module: ModuleType, result: Result, server_url: str, template: str, data_dir: Path, args: Any
) -> list[tuple[Any, ...]]:
    """Seal N events into a fresh clone of the template with ``module``'s sealer; its chain."""
    name = f"bench_seal_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(**_dsn(server_url))
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    engine = create_async_engine(url)
    conn = await asyncpg.connect(**_dsn(url))
    try:
        sealer = module.AuditSealer(engine, batch_size=args.batch_size)
        # Unmeasured: a first few events sealed, so the engine's compiled statements and the
        # connection's prepared ones exist before the clock starts, as in a running service.
        await conn.copy_records_to_table("audit_events", records=_events(0, WARM_EVENTS), columns=COLUMNS)
        if await sealer.seal_pending() != WARM_EVENTS:
            raise SystemExit(f"{result.name}: the warm-up events were not all sealed")
        round_size = args.round_size or args.events
        seconds = cpu = pg_cpu = 0.0
        sealed = 0
        for start in range(WARM_EVENTS, WARM_EVENTS + args.events, round_size):
            count = min(round_size, WARM_EVENTS + args.events - start)
            await conn.copy_records_to_table("audit_events", records=_events(start, count), columns=COLUMNS)
            await conn.execute("VACUUM ANALYZE audit_events")  # as autovacuum would, and not meanwhile
            await admin.execute("CHECKPOINT")
            pg0, cpu0, t0 = _postgres_cpu(data_dir), time.process_time(), time.perf_counter()
            sealed += await sealer.seal_pending()
            t1, cpu1, pg1 = time.perf_counter(), time.process_time(), _postgres_cpu(data_dir)
            seconds, cpu, pg_cpu = seconds + t1 - t0, cpu + cpu1 - cpu0, pg_cpu + pg1 - pg0
        if sealed != args.events:
            raise SystemExit(f"{result.name}: sealed {sealed} of {args.events} events")
        result.events += sealed
        result.seconds += seconds
        result.cpu += cpu
        result.pg_cpu += pg_cpu
        result.rates.append(sealed / seconds)

        pg0, cpu0 = _postgres_cpu(data_dir), time.process_time()
        for _ in range(args.idle_rounds):
            if await sealer.seal_pending():
                raise SystemExit(f"{result.name}: an idle round sealed something")
        cpu1, pg1 = time.process_time(), _postgres_cpu(data_dir)
        result.idle_rounds += args.idle_rounds
        result.idle_cpu += cpu1 - cpu0
        result.idle_pg_cpu += pg1 - pg0

        chain = await conn.fetch(
            "SELECT seq, event_id, digest, prev_hash, hash FROM audit_chain ORDER BY seq"
        )
        return [tuple(r) for r in chain]
    finally:
        await conn.close()
        await engine.dispose()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def _run(server_url: str, data_dir: Path, contenders: dict[str, ModuleType], args: Any) -> list[Result]:
    template = f"bench_seal_tpl_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(**_dsn(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{template}"')
    finally:
        await admin.close()
    from integrations.db.migrate import upgrade_async

    await upgrade_async(make_url(server_url).set(database=template).render_as_string(hide_password=False))
    results = {name: Result(name) for name in contenders}
    names = list(contenders)
    for round_no in range(args.warmup_rounds + args.rounds):
        warmup = round_no < args.warmup_rounds
        reference: list[tuple[Any, ...]] | None = None
        for name in names if round_no % 2 == 0 else reversed(names):
            into = Result(name) if warmup else results[name]
            chain = await _one(contenders[name], into, server_url, template, data_dir, args)
            if reference is None:
                reference = chain
            elif chain != reference:
                diff = next(i for i, (a, b) in enumerate(zip(chain, reference, strict=False)) if a != b)
                raise SystemExit(f"{name}: the chain differs from the other sealer's at seq {diff + 1}")
    return [results[name] for name in names]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--round-size", type=int, default=0, help="events per sealing round (0: all)")
    parser.add_argument("--batch-size", type=int, default=1000, help="the sealer's batch (config default)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup-rounds", type=int, default=1)
    parser.add_argument("--idle-rounds", type=int, default=200, help="rounds with nothing to seal")
    parser.add_argument("--old", default=OLD_REVISION, help="git revision of the old sealer")
    args = parser.parse_args()

    from handlers.logs import configure_logging
    from integrations.db.embedded import start_embedded_postgres

    configure_logging(fmt="json", level="error")
    with tempfile.TemporaryDirectory(prefix="caremsg-bench-") as tmp:
        contenders = _contenders(args.old, Path(tmp))
        server = start_embedded_postgres(Path(tmp) / "pgdata", temporary=True)
        try:
            results = asyncio.run(_run(server.url, server.data_dir, contenders, args))
        finally:
            server.stop()

    print(
        f"audit sealer benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()},"
        f" {os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" {args.events} events x {args.rounds} rounds,"
        f" {f'{args.round_size} per sealing round' if args.round_size else 'sealed in one round'},"
        f" batch {args.batch_size}, old = {args.old}, load {os.getloadavg()[0]:.1f}"
    )
    old = results[0]
    for r in results:
        rounds = " ".join(f"{x:.0f}" for x in r.rates)
        print(
            f"  {r.name:24s} {r.rate:7.0f} events/s [{rounds}]"
            f"  CPU per event: sealer {r.per_event(r.cpu):5.1f} µs,"
            f" PostgreSQL {r.per_event(r.pg_cpu):5.1f} µs"
            f"  (of old: {r.rate / old.rate:4.1f}x events/s, sealer CPU {r.cpu / old.cpu:4.2f},"
            f" PostgreSQL CPU {r.pg_cpu / old.pg_cpu:4.2f})"
        )
    for r in results if args.idle_rounds else []:
        print(
            f"  {r.name:24s} idle round: sealer {r.per_idle_round(r.idle_cpu):5.0f} µs,"
            f" PostgreSQL {r.per_idle_round(r.idle_pg_cpu):5.0f} µs CPU"
        )
    print("  chains: identical (seq, event_id, digest, prev_hash, hash) in every round")


if __name__ == "__main__":
    main()
