"""Consent-gated decision latency at 1k, 100k and 1M active consents: caremsg's engine (role policy
in pycasbin, memoized per policy; consent from the in-memory index) next to plain pycasbin with every
consent as a `p` rule, measured in the same run. Also: index load time and memory at 1M.

    python bench/decisions.py            # everything (the naive 1M run takes about a minute)
    python bench/decisions.py --quick    # no naive run at 1M

A decision here is what Guard does per request once the relationship facts are in hand: ask the
index whether a consent covers the person's organization for the workflow's scope and purposes,
add ``covered`` to the facts, and decide with Policy.decide. Consents are spread 10 per patient
over N/10 patients (a patient holds a handful of consents), recipients among 5,000 organizations,
half of the queries hitting a covering consent.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import casbin
from casbin.model import Model
from casbin.persist.adapters import FileAdapter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.consent_index import ConsentIndex, pack_rows, purpose_mask, scope_mask
from integrations.policy_files import load_policy

POLICY_DIR = Path(__file__).resolve().parents[1] / "policies"
ORGS = 5_000
PER_PATIENT = 10
SAMPLES = 20_000
NAIVE_SAMPLES = {1_000: 2_000, 100_000: 30, 1_000_000: 5}  # capped: one naive decision at 1M takes ~1.5 s

NAIVE_MODEL = """
[request_definition]
r = role, wf, pat, org
[policy_definition]
p = role, wf, pat, org
[policy_effect]
e = some(where (p.eft == allow))
[matchers]
m = r.role == p.role && r.wf == p.wf && r.pat == p.pat && r.org == p.org
"""


def rows(n: int, rng: random.Random) -> list[tuple[int, int, int, int, int]]:
    """(patient, consent id, low bits, expires, effective) as the snapshot query returns them."""
    later = int((datetime.now(UTC) + timedelta(days=365)).timestamp() * 1000)  # ms
    low_bits = scope_mask(["read", "message", "sms"]) << 32  # purpose code 0: treatment
    out = []
    for consent_id in range(1, n + 1):
        patient = (consent_id - 1) // PER_PATIENT + 1
        org = rng.randrange(1, ORGS + 1)
        out.append((patient, consent_id, org | low_bits, later if consent_id % 3 == 0 else 0, 0))
    return out


def percentiles(ns: list[int]) -> tuple[float, float]:
    ordered = sorted(ns)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) / 1000, p99 / 1000


def bench_engine(n: int, rng: random.Random) -> tuple[float, float, int]:
    data = rows(n, rng)
    index = ConsentIndex()
    index.load_packed(pack_rows(data), {}, 0)
    policy = load_policy(POLICY_DIR)
    spec = policy.workflows["patient.read"]
    scope, purposes = scope_mask([spec.consent_scope or ""]), purpose_mask(spec.purposes)
    patients = n // PER_PATIENT
    queries = []
    for _ in range(SAMPLES):
        row = data[rng.randrange(n)]
        org = row[2] & 0xFFFFFFFF if rng.random() < 0.5 else rng.randrange(1, ORGS + 1)
        queries.append((rng.randrange(1, patients + 1) if rng.random() < 0.1 else row[0], org))
    now = datetime.now(UTC)
    base = frozenset({"care_team"})
    covered = frozenset({"care_team", "covered"})
    timings = []
    allowed = 0
    clock = time.perf_counter_ns
    for patient, org in queries:
        start = clock()
        coverage = index.covering(patient, org, now, scope=scope, purposes=purposes)
        decision = policy.decide("care_team_member", "patient.read", covered if coverage else base)
        timings.append(clock() - start)
        allowed += decision.allowed
    median, p99 = percentiles(timings)
    return median, p99, allowed


def bench_naive(n: int, rng: random.Random) -> tuple[float, float, int, float]:
    data = rows(n, rng)
    model = Model()
    model.load_model_from_text(NAIVE_MODEL)
    # Loaded from a file, as an adapter would (add_policies checks duplicates one by one: O(N^2)).
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as fh:
        for r in data:
            fh.write(f"p, care_team_member, patient.read, {r[0]}, {r[2] & 0xFFFFFFFF}\n")
    started = time.perf_counter()
    enforcer = casbin.Enforcer(model, FileAdapter(fh.name))
    build = time.perf_counter() - started
    os.unlink(fh.name)
    samples = NAIVE_SAMPLES[n]
    timings = []
    for _ in range(samples):
        row = data[rng.randrange(n)]
        start = time.perf_counter_ns()
        enforcer.enforce("care_team_member", "patient.read", str(row[0]), str(row[2] & 0xFFFFFFFF))
        timings.append(time.perf_counter_ns() - start)
    median, p99 = percentiles(timings)
    return median, p99, samples, build


def bench_load(n: int, rng: random.Random) -> tuple[float, float, int]:
    data = rows(n, rng)
    gc.collect()
    # Timed untraced (tracemalloc slows every allocation several-fold), then measured traced.
    started = time.perf_counter()
    index = ConsentIndex()
    index.load_packed(pack_rows(data), {}, 0)
    seconds = time.perf_counter() - started
    count = len(index)
    del index
    gc.collect()
    tracemalloc.start()
    index = ConsentIndex()
    index.load_packed(pack_rows(data), {}, 0)
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, current / 2**20, count


async def _load_from_postgres(n: int) -> tuple[float, float, int, float]:
    """The real start-up path: ``ConsentSync.full_load`` of ``n`` active consents from PostgreSQL.

    Returns the load's seconds, the index's memory (tracemalloc, measured on a second load), the
    consents loaded, and how long seeding the database took (not part of the figure).
    """
    import asyncpg

    from integrations.consent_sync import ConsentSync, asyncpg_connect_args
    from integrations.db.embedded import start_embedded_postgres
    from integrations.db.migrate import upgrade

    with tempfile.TemporaryDirectory(prefix="caremsg-bench-") as tmp:
        server = start_embedded_postgres(Path(tmp) / "pgdata", temporary=True)
        try:
            await asyncio.to_thread(upgrade, server.url)
            conn = await asyncpg.connect(**asyncpg_connect_args(server.url))
            try:
                started = time.perf_counter()
                patients = max(1, n // 10)
                await conn.execute(
                    """
                    INSERT INTO organizations (name) SELECT 'Org ' || g FROM generate_series(1, 50) g;
                    INSERT INTO users (organization_id, email, password_hash, first_name, last_name, role,
                                       chat_user_id)
                        VALUES (1, 'bench@example.org', 'x', 'B', 'B', 'compliance_officer', 'staff_bench');
                    """
                )
                await conn.execute(
                    "INSERT INTO patients (organization_id, first_name, last_name, risk_level, created_by)"
                    " SELECT 1, 'P', 'P', 'low', 1 FROM generate_series(1, $1)",
                    patients,
                )
                # Each patient consents to ten organizations: n active consents in all.
                await conn.execute(
                    "INSERT INTO consents (patient_id, recipient_type, organization_id, purpose, recorded_by)"
                    " SELECT 1 + (g % $2), 'organization', 1 + (g % 50), 'treatment', 1"
                    " FROM generate_series(0, $1 - 1) g",
                    n,
                    patients,
                )
                # What autovacuum does to any table that has settled: without it the first scan after a
                # bulk insert also pays for setting every row's hint bits, which a restart never sees.
                await conn.execute("VACUUM (ANALYZE) consents")
                seeded = time.perf_counter() - started
                sync = ConsentSync(ConsentIndex(), server.url)
                gc.collect()
                started = time.perf_counter()
                await sync.full_load(conn)
                seconds = time.perf_counter() - started
                count = len(sync.index)
                del sync
                gc.collect()
                tracemalloc.start()
                sync = ConsentSync(ConsentIndex(), server.url)
                await sync.full_load(conn)
                current, _peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                index_mb = current / 2**20
            finally:
                await conn.close()
        finally:
            server.stop()
    return seconds, index_mb, count, seeded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="skip the naive pycasbin run at 1M")
    parser.add_argument(
        "--from-postgres",
        action="store_true",
        help="also time the index load from a PostgreSQL of 1M consents",
    )
    args = parser.parse_args()
    rng = random.Random(42)
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{datetime.now(UTC):%Y-%m-%d}"
    )
    engine_head, naive_head = "engine median / p99 (us)", "naive pycasbin median / p99 (us)"
    print(f"{'consents':>10} | {engine_head:>26} | {naive_head:>34} | naive n")
    for n in (1_000, 100_000, 1_000_000):
        median, p99, _allowed = bench_engine(n, rng)
        if args.quick and n == 1_000_000:
            naive = "(skipped: --quick)"
            samples = "-"
        else:
            nm, np99, count, _build = bench_naive(n, rng)
            naive = f"{nm:,.1f} / {np99:,.1f}"
            samples = str(count)
        print(f"{n:>10,} | {median:>11.2f} / {p99:>10.2f}   | {naive:>34} | {samples}")
        gc.collect()
    seconds, mb, count = bench_load(1_000_000, rng)
    print(f"index load of {count:,} consents from snapshot rows: {seconds:.2f} s, {mb:.0f} MB (tracemalloc)")
    if args.from_postgres:
        seconds, mb, count, seeded = asyncio.run(_load_from_postgres(1_000_000))
        print(
            f"index load of {count:,} consents from PostgreSQL (ConsentSync.full_load): {seconds:.2f} s, "
            f"{mb:.0f} MB (tracemalloc, includes the fetched rows); seeding took {seeded:.0f} s"
        )


if __name__ == "__main__":
    main()
