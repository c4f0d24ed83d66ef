"""Patient-read throughput and latency, next to a bare aiohttp + asyncpg primary-key lookup of the
same row measured in the same run on the same PostgreSQL.

    python bench/read_patient.py [--clients 1 16 64] [--rounds 3] [--requests 2000] [--seconds 8]
                                 [--workers 1] [--profile FILE] [--pg-statements]

- **baseline**: bare aiohttp + an asyncpg pool (10 to 20 connections), ``GET /patients/{id}`` doing one
  ``SELECT … FROM patients WHERE id = $1`` and answering the row as JSON;
- **caremsg**: the real app (``create_app``, default config; relay, audit sealer and consent
  listener running alongside), ``GET /api/patients/{id}`` as a registered care-team member of that
  patient: bearer check, policy decision over the relationship and consent facts, the patient row,
  and the read's audit record, stored (fail closed) before the answer: one statement reading the
  record with the reader's relation, one inserting the audit record (integrations/db/patient_reads.py).

Both servers run in their own process(es) side by side and are loaded in turn, round by round, at
each concurrency level (closed-loop aiohttp clients on loopback). Prints reads/s and p50/p99 of
each, caremsg's share of the baseline round by round, and CPU per read; with ``--profile``, the
caremsg process's cProfile of the measured rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import secrets
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.http_harness import (
    Request,
    baseline_and_caremsg,
    embedded_database,
    free_port,
    load_average,
    measure,
    print_profile,
    register,
    report,
    serve_caremsg,
    serve_emulator,
    serve_forever,
    shared_limits,
    start,
    stop,
)

_PATIENT = """
    SELECT id, first_name, last_name, date_of_birth, risk_level, organization_id, created_by,
           created_at, updated_at
    FROM patients WHERE id = $1
"""


def _serve_baseline(dsn: dict[str, Any], port: int, ready: Any) -> None:
    import asyncpg
    from aiohttp import web

    def encode(value: object) -> object:
        return value.isoformat() if isinstance(value, (date, datetime)) else value

    async def main() -> None:
        pool = await asyncpg.create_pool(**dsn, min_size=10, max_size=20)

        async def read(request: web.Request) -> web.Response:
            row = await pool.fetchrow(_PATIENT, int(request.match_info["id"]))
            if row is None:
                raise web.HTTPNotFound()
            return web.json_response({k: encode(v) for k, v in row.items()})

        app = web.Application()
        app.router.add_get("/patients/{id}", read)
        await serve_forever(app, port, ready)

    asyncio.run(main())


async def _caremsg_setup(base: str) -> tuple[int, dict[str, str]]:
    """A registered care-team member and a patient on their care team (registering one makes its
    registrant the first member), through the API."""
    auth = await register(base, "care_team_member")
    async with aiohttp.ClientSession(headers=auth) as s:
        patient = {"firstName": "P", "lastName": "Q", "riskLevel": "low", "dateOfBirth": "1970-01-01"}
        async with s.post(f"{base}/api/patients", json=patient) as r:
            assert r.status == 201, await r.text()
            patient_id = int((await r.json())["id"])
        async with s.get(f"{base}/api/patients/{patient_id}") as r:
            assert r.status == 200, await r.text()
    return patient_id, auth


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64], help="concurrency levels")
    parser.add_argument("--rounds", type=int, default=3, help="alternating baseline/caremsg rounds")
    parser.add_argument("--requests", type=int, default=2000, help="per round and level")
    parser.add_argument("--seconds", type=float, default=6.0, help="at most, per round and level")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--workers", type=int, default=1, help="caremsg processes sharing the port")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the caremsg process's measured runs")
    parser.add_argument(
        "--pg-statements",
        action="store_true",
        help="load pg_stat_statements and print the statements that took PostgreSQL the most time",
    )
    args = parser.parse_args()

    load_before = load_average()
    processes: list[multiprocessing.Process] = []
    with embedded_database(statements=args.pg_statements) as db, shared_limits(args.workers) as limits:
        try:
            token = secrets.token_hex(20)
            emulator, emulator_port = start(serve_emulator, token)
            processes.append(emulator)
            port = free_port()
            caremsg = [
                start(serve_caremsg, db.url, emulator_port, token, port, args.profile, limits)[0]
                for _ in range(args.workers)
            ]
            processes += caremsg
            base = f"http://127.0.0.1:{port}"
            patient_id, headers = asyncio.run(_caremsg_setup(base))
            caremsg_request = Request("GET", f"{base}/api/patients/{patient_id}", None, headers, 200)

            port = free_port()
            baseline = [start(_serve_baseline, db.dsn, port)[0]]
            processes += baseline
            baseline_request = Request("GET", f"http://127.0.0.1:{port}/patients/{patient_id}", None, {}, 200)

            contenders = baseline_and_caremsg(
                db, (baseline_request, baseline), (caremsg_request, caremsg), profile=args.profile
            )
            samples = measure(contenders, args.clients, args.rounds, args.requests, args.seconds, args.warmup)
        finally:
            stop(processes)

    print(
        f"read-patient benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {load_before} before, "
        f"{load_average()} after; caremsg x{args.workers}"
    )
    report(samples, "baseline", "caremsg", "reads")
    print("  targets at 64 clients: caremsg >= 40% of the baseline's throughput, caremsg p99 < 50 ms")
    if args.profile:
        print_profile(args.profile)


if __name__ == "__main__":
    main()
