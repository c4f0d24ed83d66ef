"""The console's audit search on a large trail: time to first byte of the page next to the same
search through ``GET /api/audit-events``, in the same run, and the search query's own p99.

    python bench/audit_search.py [--events 1000000] [--rounds 3] [--requests 60] [--explain]

A throwaway embedded PostgreSQL, migrated, gets ``--events`` audit records in one ``INSERT …
SELECT`` over ``generate_series`` (20 organizations of 50 people and 600 patients each, one of
them holding a quarter of the trail; a year of records in time order; reads, sends, conversation
reads, updates, logins, listings, consents, break-glass openings; 7 % denied with five reasons,
some failures; 5 % of patient accesses by another organization under a consent, with its id).
The service's own sealer (``AuditSealer``) then hash-chains every record, as the schema requires,
before anything is measured. Then the real app and the Sendbird emulator start in processes of
their own (``bench/http_harness.py``), an auditor of the large organization signs in to the
console and logs in to the API, and per round, the order alternating, one client asks each
search of both in turn, one request at a time:

- **patient**: ``?patientId=P`` for a random patient of the auditor's organization;
- **week** / **month**: ``?from=…&to=…``, a random 7- or 30-day window of the year;
- and, each round, ten views of the charts page (``/console/audit/charts``, its default 12 weeks);

the console page as ``GET /console/audit?search=1&…`` (25 records a page, rendered), the API as
``GET /api/audit-events?…&limit=25`` (JSON). Time to first byte is from sending the request to the
first byte of the body. The query alone (``SqlAuditTrail.search``, the repository both call) is
timed over the same filters on a connection of its own. ``--explain`` prints ``EXPLAIN (ANALYZE,
BUFFERS)`` of each search.

Longer than 400 lines because it is one run: the trail its SQL fills is searched by the console page
and the API, timed against each other, and by the query alone and its EXPLAIN, all with searches
drawn the same way (``searches``); the figures only compare within that run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import random
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.http_harness import (
    embedded_database,
    free_port,
    load_average,
    pct,
    serve_caremsg,
    serve_emulator,
    start,
    stop,
)

ORGANIZATIONS = 20
PEOPLE = 50  # per organization
PATIENTS = 600  # per organization
#: The year of records ends here; the bench's windows fall inside it.
END = datetime(2026, 12, 1, tzinfo=UTC)
START = END - timedelta(days=365)
PASSWORD = "bench-password-for-an-auditor-123"
PAGE = 25

_SEED = """
SELECT setseed(0.42);
INSERT INTO organizations (name)
    SELECT 'Bench organization ' || k FROM generate_series(0, {orgs} - 1) k;
CREATE TEMP TABLE b_org AS
    SELECT row_number() OVER (ORDER BY id) - 1 AS k, id FROM organizations
    WHERE name LIKE 'Bench organization %';
INSERT INTO users (organization_id, email, password_hash, first_name, last_name, role, chat_user_id)
    SELECT o.id, 'bench.' || o.k || '.' || i || '@example.org', 'x', 'Bench', 'Person',
           (ARRAY['peer_support','peer_support','care_team_member','care_team_member','care_team_member',
                  'admin','compliance_officer','auditor','care_team_member','peer_support'])[1 + i % 10],
           'bench-' || o.k || '-' || i
    FROM b_org o, generate_series(0, {people} - 1) i;
CREATE TEMP TABLE b_user AS
    SELECT o.k, row_number() OVER (PARTITION BY o.k ORDER BY u.id) - 1 AS i, u.id, u.role
    FROM users u JOIN b_org o ON o.id = u.organization_id;
INSERT INTO patients (organization_id, first_name, last_name, risk_level, created_by)
    SELECT o.id, 'P', 'Q' || i, (ARRAY['low','medium','high','critical'])[1 + i % 4],
           (SELECT id FROM b_user u WHERE u.k = o.k AND u.i = 0)
    FROM b_org o, generate_series(0, {patients} - 1) i;
CREATE TEMP TABLE b_patient AS
    SELECT o.k, row_number() OVER (PARTITION BY o.k ORDER BY p.id) - 1 AS i, p.id
    FROM patients p JOIN b_org o ON o.id = p.organization_id;
CREATE INDEX ON b_user (k, i);
CREATE INDEX ON b_patient (k, i);
ANALYZE b_org; ANALYZE b_user; ANALYZE b_patient;
"""

#: One row per record: who (a quarter of the trail is organization 0's), what, about whom (5 % of
#: patient accesses cross to another organization, under a consent), when (a year, in id order).
_EVENTS = """
INSERT INTO audit_events (occurred_at, request_id, actor_id, actor_role, organization_id,
    source_address, event, workflow, resource_type, resource_id, patient_id, decision, matched_rule,
    reason, policy_version, purpose, break_glass, outcome, details)
SELECT
    timestamptz '{start}' + (g.n - 1 + g.r_t) * (interval '365 days' / {events}),
    'bench-' || g.n, u.id, u.role, o.id, '10.0.' || (g.n % 250) || '.' || (g.n % 7),
    CASE WHEN w.workflow = 'auth.login' THEN 'auth.login' ELSE 'decision' END,
    w.workflow, w.resource,
    CASE WHEN w.about_patient THEN p.id::text END,
    CASE WHEN w.about_patient THEN p.id END,
    CASE WHEN g.r_dec < 0.07 THEN 'deny' ELSE 'allow' END,
    'roles.csv:' || (30 + (g.n % 90)) || ': ' || u.role || ', ' || w.workflow || ', care_team & covered',
    CASE WHEN g.r_dec < 0.07 THEN (ARRAY['not_on_care_team','no_active_consent','role_not_permitted',
        'purpose_not_permitted','other_organization'])[1 + floor(g.r_x * 5)::int] END,
    'b0d10b3ba8aeb232',
    CASE WHEN g.r_x < 0.6 THEN 'treatment' WHEN g.r_x < 0.8 THEN 'care_coordination' END,
    w.workflow = 'break_glass.open' OR (w.workflow = 'patient.read' AND g.r_x > 0.998),
    CASE WHEN g.r_dec < 0.07 THEN 'denied' WHEN g.r_dec < 0.075 THEN 'failure' ELSE 'success' END,
    CASE WHEN w.about_patient AND g.cross
         THEN jsonb_build_object('facts', 'care_team & covered', 'consent_id', 1 + g.n % 5000)
         ELSE jsonb_build_object('facts', 'care_team & covered & own_org') END
FROM (
    SELECT n, random() AS r_org, random() AS r_user, random() AS r_pat, random() AS r_wf,
           random() AS r_dec, random() AS r_x, random() AS r_t, random() < 0.05 AS cross
    FROM generate_series(1, {events}) n
) g
JOIN LATERAL (SELECT CASE WHEN g.r_org < 0.25 THEN 0
                          ELSE 1 + floor((g.r_org - 0.25) / 0.75 * ({orgs} - 1))::int END AS k) a ON true
JOIN b_org o ON o.k = a.k
JOIN b_user u ON u.k = a.k AND u.i = floor(g.r_user * {people})::int
JOIN b_patient p ON p.k = CASE WHEN g.cross THEN (a.k + 1 + floor(g.r_x * ({orgs} - 1))::int) % {orgs}
                               ELSE a.k END
                AND p.i = floor(g.r_pat * {patients})::int
JOIN LATERAL (
    SELECT * FROM (VALUES
        (0.35, 'patient.read', 'patient', true), (0.55, 'message.send', 'message', true),
        (0.68, 'conversation.read', 'conversation', true), (0.72, 'patient.update', 'patient', true),
        (0.75, 'care_team.read', 'care_team', true), (0.76, 'consent.create', 'consent', true),
        (0.762, 'break_glass.open', 'break_glass', true), (0.85, 'auth.login', 'user', false),
        (0.88, 'patient.list', 'patient', false), (0.89, 'audit.read', 'audit_event', false),
        (1.0, 'conversation.create', 'conversation', true)
    ) v(upto, workflow, resource, about_patient)
    WHERE g.r_wf < v.upto ORDER BY v.upto LIMIT 1
) w ON true
ORDER BY g.n
"""


def _dsn(url: str) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return {
        "user": u.username or "postgres",
        "host": u.query.get("host") or u.host,
        "port": int(str(u.query.get("port") or u.port or 5432)),
        "database": u.database,
    }


async def fill(url: str, events: int) -> float:
    """The organizations, people, patients and ``events`` audit records, sealed; seconds taken."""
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.ext.asyncio import create_async_engine

    from integrations.audit_sealer import AuditSealer

    started = time.perf_counter()
    conn = await asyncpg.connect(**_dsn(url))
    try:
        await conn.execute(_SEED.format(orgs=ORGANIZATIONS, people=PEOPLE, patients=PATIENTS))
        sql = _EVENTS.format(
            start=START.isoformat(), events=events, orgs=ORGANIZATIONS, people=PEOPLE, patients=PATIENTS
        )
        await conn.execute(sql)
        await conn.execute("VACUUM ANALYZE audit_events")
        loaded = time.perf_counter()
        print(f"  {events} records loaded in {loaded - started:.0f} s", flush=True)
    finally:
        await conn.close()
    engine = create_async_engine(url)
    try:
        sealed = await AuditSealer(engine, batch_size=20_000).seal_pending()
    finally:
        await engine.dispose()
    conn = await asyncpg.connect(**_dsn(url))
    try:
        await conn.execute("VACUUM ANALYZE audit_chain")
    finally:
        await conn.close()
    print(f"  {sealed} records sealed in {time.perf_counter() - loaded:.0f} s", flush=True)
    return time.perf_counter() - started


async def auditor(url: str) -> tuple[int, int, list[int]]:
    """An auditor of the large organization (created as ``caremsg create-user`` would), its
    organization and that organization's patients."""
    import asyncpg
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from engine.model import Role
    from engine.workflows.identity import CreateUser, bootstrap_user
    from integrations.db.uow import SqlUnitOfWork
    from integrations.security import Argon2Passwords

    conn = await asyncpg.connect(**_dsn(url))
    try:
        org = await conn.fetchval("SELECT id FROM organizations WHERE name = 'Bench organization 0'")
        patients = [
            r["id"] for r in await conn.fetch("SELECT id FROM patients WHERE organization_id = $1", org)
        ]
    finally:
        await conn.close()
    engine = create_async_engine(url)
    try:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        user = await bootstrap_user(
            lambda: SqlUnitOfWork(sessions),
            Argon2Passwords(),
            CreateUser(f"auditor.{secrets.token_hex(3)}@example.org", PASSWORD, "A", "U", Role.AUDITOR, org),
        )
    finally:
        await engine.dispose()
    return user.id, org, patients


async def sign_in(base: str, email: str) -> tuple[dict[str, str], dict[str, str]]:
    """The API's bearer header and the console's session cookie for ``email``."""
    import re

    login = {"email": email, "password": PASSWORD}
    async with aiohttp.ClientSession() as s, s.post(f"{base}/api/auth/login", json=login) as r:
        assert r.status == 200, await r.text()
        token = (await r.json())["token"]
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as s:
        async with s.get(f"{base}/console/login") as r:
            match = re.search(r'name="csrf_token" value="([^"]+)"', await r.text())
            assert match is not None
        form = {"csrf_token": match.group(1), "email": email, "password": PASSWORD}
        async with s.post(f"{base}/console/login", data=form, allow_redirects=False) as r:
            assert r.status == 303, await r.text()
        cookies = {c.key: c.value for c in jar}
    return {"Authorization": f"Bearer {token}"}, {"caremsg_console": cookies["caremsg_console"]}


@dataclass(frozen=True)
class Search:
    kind: str
    params: dict[str, str]


def searches(kind: str, patients: list[int], count: int, rng: random.Random) -> list[Search]:
    found = []
    for _ in range(count):
        if kind == "patient":
            found.append(Search(kind, {"patientId": str(rng.choice(patients))}))
            continue
        days = 7 if kind == "week" else 30
        since = START + timedelta(minutes=rng.randrange(0, (365 - days) * 24 * 60))
        until = since + timedelta(days=days)
        found.append(Search(kind, {"from": since.isoformat(), "to": until.isoformat()}))
    return found


async def first_byte(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[float, float]:
    """(time to the first byte of the body, time to the last), in seconds."""
    started = time.perf_counter()
    async with session.get(url, headers=headers, allow_redirects=False) as resp:
        await resp.content.readany()
        ttfb = time.perf_counter() - started
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{url}: {resp.status}")
    return ttfb, time.perf_counter() - started


Timings = dict[tuple[str, str], list[tuple[float, float]]]  # (kind, contender) -> [(ttfb, total)]


async def measure(
    base: str, bearer: dict[str, str], cookie: dict[str, str], patients: list[int], args: Any
) -> tuple[Timings, list[list[float]]]:
    rng = random.Random(7)
    timings: Timings = {}
    ratios: list[list[float]] = []
    cookie_header = {"Cookie": f"caremsg_console={cookie['caremsg_console']}"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:

        def api(s: Search) -> str:
            return f"{base}/api/audit-events?{urlencode({**s.params, 'limit': str(PAGE)})}"

        def page(s: Search) -> str:
            return f"{base}/console/audit?{urlencode({'search': '1', **s.params})}"

        contenders: list[tuple[str, Callable[[Search], str], dict[str, str]]] = [
            ("api", api, bearer),
            ("console", page, cookie_header),
        ]
        for warm in searches("patient", patients, 20, rng) + searches("week", patients, 20, rng):
            for _, to_url, headers in contenders:
                await first_byte(session, to_url(warm), headers)
        for round_ in range(args.rounds):
            order = contenders if round_ % 2 == 0 else contenders[::-1]
            this_round: list[float] = []
            for kind in ("patient", "week", "month"):
                asked = searches(kind, patients, args.requests, rng)
                medians = {}
                for name, to_url, headers in order:
                    got = [await first_byte(session, to_url(s), headers) for s in asked]
                    timings.setdefault((kind, name), []).extend(got)
                    medians[name] = statistics.median(t for t, _ in got)
                this_round.append(medians["console"] / medians["api"])
            ratios.append(this_round)
            # The charts page (default: the last 12 weeks, a bar per week): no API counterpart.
            charts = [
                await first_byte(session, f"{base}/console/audit/charts", cookie_header) for _ in range(10)
            ]
            timings.setdefault(("charts", "console"), []).extend(charts)
    return timings, ratios


async def query_times(url: str, org: int, patients: list[int], args: Any) -> dict[str, list[float]]:
    """The repository's search alone (what both the page and the API run), on its own session."""
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from engine.audit_trail import AuditFilter
    from integrations.db.audit import SqlAuditTrail

    rng = random.Random(11)
    engine = create_async_engine(url)
    found: dict[str, list[float]] = {}
    try:
        async with AsyncSession(engine) as session:
            trail = SqlAuditTrail(session)
            for kind in ("patient", "week", "month"):
                for s in searches(kind, patients, args.requests * args.rounds, rng):
                    query = AuditFilter(
                        organization_id=org,
                        patient_id=int(s.params["patientId"]) if "patientId" in s.params else None,
                        since=datetime.fromisoformat(s.params["from"]) if "from" in s.params else None,
                        until=datetime.fromisoformat(s.params["to"]) if "to" in s.params else None,
                    )
                    started = time.perf_counter()
                    await trail.search(query, None, PAGE)
                    found.setdefault(kind, []).append(time.perf_counter() - started)
            await session.rollback()
    finally:
        await engine.dispose()
    return found


async def explain(url: str, org: int, patients: list[int]) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of one search of each kind, as the repository words it (its
    statement and parameters caught on their way to the driver)."""
    import asyncpg
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from engine.audit_trail import AuditFilter
    from integrations.db.audit import SqlAuditTrail

    caught: list[tuple[str, Any]] = []

    def catch(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        caught.append((statement, parameters))

    rng = random.Random(3)
    engine = create_async_engine(url)
    event.listen(engine.sync_engine, "before_cursor_execute", catch)
    conn = await asyncpg.connect(**_dsn(url))
    try:
        async with AsyncSession(engine) as session:
            for kind in ("patient", "week", "month"):
                [s] = searches(kind, patients, 1, rng)
                query = AuditFilter(
                    organization_id=org,
                    patient_id=int(s.params["patientId"]) if "patientId" in s.params else None,
                    since=datetime.fromisoformat(s.params["from"]) if "from" in s.params else None,
                    until=datetime.fromisoformat(s.params["to"]) if "to" in s.params else None,
                )
                caught.clear()
                await SqlAuditTrail(session).search(query, None, PAGE)
                statement, parameters = caught[-1]
                rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", *parameters)
                print(f"\n  EXPLAIN ANALYZE, {kind} ({s.params}):")
                for row in rows:
                    print(f"    {row[0]}")
            await session.rollback()
    finally:
        await conn.close()
        await engine.dispose()


def summary(name: str, values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:6.1f} ms  p99 {pct(values, 99):6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=60, help="per kind, contender and round")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of each search")
    parser.add_argument(
        "--url",
        help="explain only, on this (superuser) database, filled on first use and kept: for trying indexes",
    )
    args = parser.parse_args()
    if args.url:
        asyncio.run(_explain_on(args.url, args.events))
        return

    load_before = load_average()
    processes: list[multiprocessing.Process] = []
    with embedded_database() as db:
        try:
            fill_seconds = asyncio.run(fill(db.url, args.events))
            user_id, org, patients = asyncio.run(auditor(db.url))
            if args.explain:
                asyncio.run(explain(db.url, org, patients))
            token = secrets.token_hex(20)
            emulator, emulator_port = start(serve_emulator, token)
            processes.append(emulator)
            port = free_port()
            processes.append(start(serve_caremsg, db.url, emulator_port, token, port, None, None)[0])
            base = f"http://127.0.0.1:{port}"
            email = asyncio.run(_email_of(db.url, user_id))
            bearer, cookie = asyncio.run(sign_in(base, email))
            timings, ratios = asyncio.run(measure(base, bearer, cookie, patients, args))
            queries = asyncio.run(query_times(db.url, org, patients, args))
        finally:
            stop(processes)

    print(
        f"audit-search benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {load_before} before, "
        f"{load_average()} after"
    )
    print(
        f"  {args.events} audit records ({ORGANIZATIONS} organizations, the auditor's holding a quarter),"
        f" filled and sealed in {fill_seconds:.0f} s; {args.rounds} rounds x {args.requests} searches"
        " per kind and contender, one at a time"
    )
    for i, kind in enumerate(("patient", "week", "month")):
        print(f"  {kind}:")
        for name in ("api", "console"):
            got = timings[(kind, name)]
            print(
                f"    {name:8s} first byte {summary(name, [t for t, _ in got])}"
                f"   whole answer {summary(name, [t for _, t in got])}"
            )
        print(f"    query alone       {summary('query', queries[kind])}")
        per_round = [r[i] for r in ratios]
        print(
            f"    console / API first byte (medians, per round): {statistics.median(per_round):.2f}"
            f" [{' '.join(f'{r:.2f}' for r in per_round)}]"
        )
    charts = timings[("charts", "console")]
    print(f"  charts page (12 weeks, a bar per week): first byte {summary('charts', [t for t, _ in charts])}")
    print("  target: the query's p99 under 200 ms")


async def _explain_on(url: str, events: int) -> None:
    import asyncpg

    from integrations.db.migrate import upgrade_async

    await upgrade_async(url)
    conn = await asyncpg.connect(**_dsn(url))
    try:
        have = await conn.fetchval(
            "SELECT count(*) FROM organizations WHERE name LIKE 'Bench organization %'"
        )
        org = await conn.fetchval("SELECT id FROM organizations WHERE name = 'Bench organization 0'")
    finally:
        await conn.close()
    if not have:
        await fill(url, events)
        return await _explain_on(url, events)
    conn = await asyncpg.connect(**_dsn(url))
    try:
        patients = [
            r["id"] for r in await conn.fetch("SELECT id FROM patients WHERE organization_id = $1", org)
        ]
    finally:
        await conn.close()
    await explain(url, org, patients)


async def _email_of(url: str, user_id: int) -> str:
    import asyncpg

    conn = await asyncpg.connect(**_dsn(url))
    try:
        return str(await conn.fetchval("SELECT email FROM users WHERE id = $1", user_id))
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
