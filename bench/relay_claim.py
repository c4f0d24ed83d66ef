"""One claim of the outbox relay behind a backlog, before and now: EXPLAIN ANALYZE side by side.

    python bench/relay_claim.py [--backlogs 10,1000,10000] [--layouts one,spread,grouped]

A throwaway embedded PostgreSQL, migrated, holds a history of 30,000 delivered entries of 3,000
conversations (a live outbox keeps them), then, per layout and backlog N, N pending ``send_message``
entries (``VACUUM ANALYZE`` after seeding, as autovacuum would):

- **one**: all in one conversation (a busy conversation, or one after a Sendbird outage);
- **spread**: each in a conversation of its own;
- **grouped**: over 100 conversations, each one's entries together, so that their first entries
  lie far apart in id order.

Each claim (batch 20) runs three times in a transaction rolled back: **before** is
``WALKING_CLAIM`` (``tests/support/outbox_claims.py``, the single statement the claim was), **now** is
``integrations.relay.statements.claim``'s statements (``CLAIM`` and, when it says more lies beyond its
window, ``CLAIM_HEADS``; then, while the batch has room, ``CLAIM_LATER``). Before leases each
conversation's first entry alone; now fills the batch with the entries behind them. Printed per
claim: the best execution time, planning time, rows read from ``outbox`` (returned or filtered out,
by every plan node, times its loops), shared buffers touched, statements and rows claimed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from bench.http_harness import embedded_database
from engine.effects import CreateChannel, InviteMembers, PostMessage, TextMessage, kind_of
from integrations.relay.statements import CLAIM, CLAIM_HEADS, CLAIM_LATER, claim_parameters
from tests.support.outbox_claims import WALKING_CLAIM, outbox_rows_read

HISTORY_CONVERSATIONS = 3_000
HISTORY_ENTRIES = 30_000
#: The history's kinds, in turn: chat posts, texts, channels, invitations.
HISTORY_KINDS = [kind_of(t) for t in (PostMessage, TextMessage, CreateChannel, InviteMembers)]
GROUPS = 100
BATCH = 20


@dataclass
class Measured:
    """One claim: its statements' figures added up."""

    execution_ms: float = 0.0
    planning_ms: float = 0.0
    rows_read: int = 0
    buffers: int = 0
    statements: int = 0
    claimed: int = 0


async def _seed(conn: AsyncConnection, layout: str, backlog: int) -> None:
    await conn.execute(text("SET session_replication_role = replica"))  # no patient per conversation
    await conn.execute(text("TRUNCATE outbox"))
    await conn.execute(text("DELETE FROM conversations"))
    await conn.execute(
        text(
            "INSERT INTO conversations (id, patient_id, title, channel_url, channel_state,"
            " organization_id, created_by)"
            " SELECT g, 0, 'bench', 'bench_' || g, 'ready', 0, 0 FROM generate_series(1, :n) g"
        ),
        {"n": max(backlog, HISTORY_CONVERSATIONS)},
    )
    await conn.execute(
        text(
            "INSERT INTO outbox (kind, payload, conversation_id, status, done_at)"
            " SELECT (CAST(:kinds AS text[]))[1 + g % 4],"
            " '{}'::jsonb, 1 + g % :conversations, 'done', now() FROM generate_series(1, :n) g"
        ),
        {"kinds": HISTORY_KINDS, "conversations": HISTORY_CONVERSATIONS, "n": HISTORY_ENTRIES},
    )
    conversation = {"one": "1", "spread": "g", "grouped": f"1 + (g - 1) * {GROUPS} / :n"}[layout]
    await conn.execute(
        text(
            "INSERT INTO outbox (kind, payload, conversation_id)"  # noqa: S608 - constants only
            f" SELECT :post, '{{}}'::jsonb, {conversation} FROM generate_series(1, :n) g"
        ),
        {"post": kind_of(PostMessage), "n": backlog},
    )


async def _explain(
    conn: AsyncConnection, statement: TextClause, parameters: dict[str, Any], into: Measured
) -> None:
    explained = text(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement.text}")
    plan = (await conn.execute(explained, parameters)).scalar_one()[0]
    into.execution_ms += plan["Execution Time"]
    into.planning_ms += plan["Planning Time"]
    into.rows_read += outbox_rows_read(plan["Plan"])
    into.buffers += plan["Plan"].get("Shared Hit Blocks", 0) + plan["Plan"].get("Shared Read Blocks", 0)
    into.statements += 1


async def _claim_once(conn: AsyncConnection, before: bool) -> Measured:
    parameters = claim_parameters(lease=10, limit=BATCH)
    measured = Measured()
    transaction = await conn.begin()
    try:
        if before:
            await _explain(conn, WALKING_CLAIM, parameters, measured)
            measured.claimed = int(
                await conn.scalar(text("SELECT count(*) FROM outbox WHERE lease_until IS NOT NULL")) or 0
            )
            return measured
        # As claim() does: CLAIM, then CLAIM_HEADS for the rest when CLAIM answers its row of NULLs.
        # EXPLAIN shows no rows, so CLAIM runs once more, rolled back, to read its answer.
        savepoint = await conn.begin_nested()
        answered = (await conn.execute(CLAIM, parameters)).all()
        await savepoint.rollback()
        await _explain(conn, CLAIM, parameters, measured)
        claimed = sum(1 for row in answered if row.id is not None)
        if claimed < len(answered):
            await _explain(conn, CLAIM_HEADS, {**parameters, "limit": BATCH - claimed}, measured)
        # What EXPLAIN ANALYZE leased so far (the history holds no lease), as claim() reads it off
        # the rows returned.
        leased = (await conn.execute(text("SELECT id FROM outbox WHERE lease_until IS NOT NULL"))).all()
        if len(leased) < BATCH:
            later = {**parameters, "limit": BATCH - len(leased), "heads": [r.id for r in leased]}
            await _explain(conn, CLAIM_LATER, later, measured)
        measured.claimed = int(
            await conn.scalar(text("SELECT count(*) FROM outbox WHERE lease_until IS NOT NULL")) or 0
        )
        return measured
    finally:
        await transaction.rollback()


async def _run(
    url: str, layouts: list[str], backlogs: list[int]
) -> list[tuple[str, int, Measured, Measured]]:
    engine = create_async_engine(url)
    results = []
    try:
        for layout in layouts:
            for backlog in backlogs:
                async with engine.begin() as conn:
                    await _seed(conn, layout, backlog)
                async with engine.connect() as conn:
                    await conn.execution_options(isolation_level="AUTOCOMMIT")
                    await conn.execute(text("VACUUM ANALYZE outbox, conversations"))
                best: dict[bool, Measured] = {}
                for before in (True, False):
                    for _ in range(3):
                        async with engine.connect() as conn:
                            measured = await _claim_once(conn, before)
                        if before not in best or measured.execution_ms < best[before].execution_ms:
                            best[before] = measured
                results.append((layout, backlog, best[True], best[False]))
    finally:
        await engine.dispose()
    return results


def _cell(m: Measured) -> str:
    return (
        f"{m.execution_ms:.2f} ms (+{m.planning_ms:.2f} planning), {m.rows_read:,} rows read,"
        f" {m.buffers:,} buffers, {m.statements} stmt, {m.claimed} claimed"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backlogs", default="10,1000,10000")
    parser.add_argument("--layouts", default="one,spread,grouped")
    args = parser.parse_args()
    layouts = args.layouts.split(",")
    backlogs = [int(n) for n in args.backlogs.split(",")]
    with embedded_database() as db:
        results = asyncio.run(_run(db.url, layouts, backlogs))
    print(
        f"relay claim — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs,"
        f" batch {BATCH}, history {HISTORY_ENTRIES:,} delivered entries, load {os.getloadavg()[0]:.1f}"
    )
    print("| layout | pending | before | now | execution before / now |")
    print("|---|---|---|---|---|")
    for layout, backlog, before, now in results:
        ratio = before.execution_ms / now.execution_ms if now.execution_ms else 0.0
        print(f"| {layout} | {backlog:,} | {_cell(before)} | {_cell(now)} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
