"""What the relay's claim must lease (:func:`specified_claim`), the claims as they were
(:data:`WALKING_CLAIM`, :func:`heads_claim`), a count of what a statement reads and the generic plan
it is read from (:func:`generic_plan`), and a session on the outbox alone (:func:`outbox_set_aside`):
used by tests/integration/test_relay_claim.py and test_relay_plans.py, and by bench/relay.py and
bench/relay_claim.py, which measure the claims side by side."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from integrations.relay.statements import CLAIM, CLAIM_HEADS

#: The claim before it skipped conversations' backlogs (``CLAIM`` in integrations/relay/statements.py
#: at 0b7e917): one statement walking the pending entries in id order, probing each for an earlier
#: one of its kind and conversation, until its batch is full. It leases the first pass of
#: :func:`specified_claim` (each conversation's first entry only), and bench/relay.py measures the
#: relay with it (``--claim-before``); what it costs behind a backlog of one conversation is what
#: the claim no longer costs.
WALKING_CLAIM = text(
    """
    UPDATE outbox SET lease_until = now() + make_interval(secs => :lease), attempts = attempts + 1
    WHERE id IN (
        SELECT o.id FROM outbox o LEFT JOIN conversations c ON c.id = o.conversation_id
        WHERE o.status = 'pending' AND o.next_attempt_at <= now()
          AND (o.lease_until IS NULL OR o.lease_until < now())
          AND (o.kind = :creates_channel OR o.conversation_id IS NULL OR c.channel_state = 'ready')
          AND (o.conversation_id IS NULL OR NOT o.kind = ANY(CAST(:in_order AS text[])) OR NOT EXISTS (
                SELECT 1 FROM outbox e WHERE e.status = 'pending' AND e.kind = o.kind
                  AND e.conversation_id = o.conversation_id AND e.id < o.id))
          AND (CAST(:only AS text[]) IS NULL OR o.kind = ANY(CAST(:only AS text[])))
          AND NOT o.kind = ANY(CAST(:except AS text[]))
        ORDER BY o.id
        LIMIT :limit
        FOR UPDATE OF o SKIP LOCKED)
    RETURNING id, kind, payload, attempts, conversation_id, message_id
    """
)


@asynccontextmanager
async def outbox_set_aside(database_url: str) -> AsyncIterator[AsyncSession]:
    """A session on a transaction rolled back at the end, with no other pending entry in sight (other
    tests' are cancelled inside it) and foreign keys not checked (``session_replication_role``), so
    that an entry's conversation needs no patient."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn, conn.begin() as transaction:
            session = AsyncSession(bind=conn, join_transaction_mode="create_savepoint")
            await session.execute(text("SET LOCAL session_replication_role = replica"))
            await session.execute(text("UPDATE outbox SET status = 'cancelled' WHERE status = 'pending'"))
            try:
                yield session
            finally:
                await session.close()
                await transaction.rollback()
    finally:
        await engine.dispose()


async def walking_claim(session: AsyncSession, parameters: dict[str, Any]) -> list[Row[Any]]:
    """The relay's claim as :data:`WALKING_CLAIM` was, in the form of ``claim`` in
    integrations/relay/statements.py (bench/relay.py runs the relay with it)."""
    return list((await session.execute(WALKING_CLAIM, parameters)).all())


async def heads_claim(session: AsyncSession, parameters: dict[str, Any]) -> list[Row[Any]]:
    """The relay's claim before it took more than a conversation's first entry (``claim`` in
    integrations/relay/statements.py at 68154e9): ``CLAIM``, then ``CLAIM_HEADS`` when the window
    could not fill the batch. It leases the heads of :func:`specified_claim` alone, as
    :data:`WALKING_CLAIM` does, without walking a backlog."""
    answered = (await session.execute(CLAIM, parameters)).all()
    rows = [r for r in answered if r.id is not None]
    if len(rows) < len(answered):
        rest = {**parameters, "limit": parameters["limit"] - len(rows)}
        rows += (await session.execute(CLAIM_HEADS, rest)).all()
    return rows


def outbox_rows_read(plan: dict[str, Any]) -> int:
    """Rows an ``EXPLAIN (ANALYZE, FORMAT JSON)`` plan's nodes read from ``outbox``: returned or
    filtered out, times their loops (a count that does not depend on the machine's speed)."""
    own = 0
    if plan.get("Relation Name") == "outbox":
        kept = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
        own = (kept + plan.get("Rows Removed by Index Recheck", 0)) * plan.get("Actual Loops", 1)
    return int(own) + sum(outbox_rows_read(child) for child in plan.get("Plans", []))


@dataclass(frozen=True)
class Seen:
    """An outbox row as a claim sees it (in its transaction's snapshot)."""

    id: int
    kind: str
    conversation_id: int | None
    status: str
    due: bool  # next_attempt_at <= now()
    leased: bool  # lease_until >= now(): another claim holds it
    channel_ready: bool  # its conversation's channel_state is 'ready'


#: Every outbox row as :class:`Seen`, in the reading transaction.
SEEN = text(
    """
    SELECT o.id, o.kind, o.conversation_id, o.status, o.next_attempt_at <= now() AS due,
           COALESCE(o.lease_until >= now(), false) AS leased,
           COALESCE(c.channel_state = 'ready', false) AS channel_ready
    FROM outbox o LEFT JOIN conversations c ON c.id = o.conversation_id
    ORDER BY o.id
    """
)


async def seen(session: AsyncSession) -> list[Seen]:
    """The outbox as a claim made now in ``session``'s transaction would see it."""
    return [Seen(**row._mapping) for row in await session.execute(SEEN)]


def specified_claim(
    rows: Iterable[Seen], parameters: dict[str, Any], *, locked: Iterable[int] = (), later: bool = True
) -> list[int]:
    """The ids a claim with ``parameters`` (``claim_parameters`` in integrations/relay/statements.py)
    must lease, in id order, while another transaction holds the rows ``locked`` (a relay claiming).

    An entry is *claimable* when it is pending, due, not leased, not locked, of the kinds asked for
    (``only``, none of ``except``) and its conversation's channel is ready (unless it is of the kind
    that creates the channel, or has no conversation). For the kinds that keep their order
    (``in_order``) a claim leases a conversation's entries as a contiguous prefix: an entry only
    when every earlier pending entry of its kind and conversation, claimable or not, is leased by
    the same claim. Entries of the other kinds, and of no conversation, go alone. Of those, at most
    ``limit``:

    1. first the *heads*, earliest first: every claimable entry that waits for no pending one of its
       kind and conversation (what :data:`WALKING_CLAIM` leases), so a conversation's first entry
       never waits behind another conversation's backlog;
    2. then, while the batch has room, the entries behind the heads just leased, each
       conversation's run of claimable ones up to the first that is not (or is locked), at most
       ``run`` of them, taken round-robin: every conversation's second entry, then every third,
       ...; ties in id order.

    With ``later=False``, the heads alone: what :data:`WALKING_CLAIM` leases.
    """
    rows = sorted(rows, key=lambda r: r.id)
    held = set(locked)
    limit = int(parameters["limit"])
    run = int(parameters["run"])
    only = parameters["only"]
    in_order = set(parameters["in_order"])
    queues: dict[tuple[str, int], list[Seen]] = {}  # pending entries of ordered kinds, by conversation
    for row in rows:
        if row.status == "pending" and row.kind in in_order and row.conversation_id is not None:
            queues.setdefault((row.kind, row.conversation_id), []).append(row)

    def claimable(row: Seen) -> bool:
        return (
            row.status == "pending"
            and row.due
            and not row.leased
            and row.id not in held
            and (
                row.kind == parameters["creates_channel"] or row.conversation_id is None or row.channel_ready
            )
            and (only is None or row.kind in only)
            and row.kind not in parameters["except"]
        )

    def waits(row: Seen) -> bool:  # (a claimable row: pending)
        if row.conversation_id is None or row.kind not in in_order:
            return False
        return queues[(row.kind, row.conversation_id)][0].id != row.id

    heads = [r for r in rows if claimable(r) and not waits(r)][:limit]
    leased = [r.id for r in heads]
    behind: list[tuple[int, int]] = []  # (place behind its head, id)
    for head in heads if later else []:
        if head.conversation_id is None or head.kind not in in_order:
            continue
        for place, row in enumerate(queues[(head.kind, head.conversation_id)][1 : run + 1], start=1):
            if not claimable(row):
                break
            behind.append((place, row.id))
    leased += [i for _, i in sorted(behind)[: limit - len(leased)]]
    return sorted(leased)


async def generic_plan(session: AsyncSession, statement: TextClause, parameters: dict[str, Any]) -> Any:
    """``EXPLAIN (ANALYZE, FORMAT JSON)`` of ``statement`` under its generic plan, the plan's root: the
    plan PostgreSQL keeps for a statement it has run several times (the relay's are prepared once
    per connection), made from the statistics it has, not from these parameters' values. The
    statement runs: call it in a transaction that is rolled back."""
    names: list[str] = []
    for name in re.findall(r"(?<![:\w]):(\w+)", statement.text):
        if name not in names:
            names.append(name)
    numbered = re.sub(r"(?<![:\w]):(\w+)", lambda m: f"${names.index(m.group(1)) + 1}", statement.text)
    # PREPARE and DEALLOCATE over the simple protocol (the driver's, without arguments): prepared by
    # the driver, the $n of the statement would be taken for the driver's own parameters.
    driver = (await (await session.connection()).get_raw_connection()).driver_connection
    assert driver is not None
    await driver.execute(f"PREPARE generic_plan_probe AS {numbered}")
    try:
        types = await session.scalar(
            text("SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = :name"),
            {"name": "generic_plan_probe"},
        )
        await session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        # EXECUTE takes no bound parameters: the values are written out (test data, not input).
        arguments = ", ".join(
            f"CAST({_literal(parameters[n])} AS {type_})" for n, type_ in zip(names, types, strict=True)
        )
        query = f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE generic_plan_probe({arguments})"
        return (await session.execute(text(query))).scalar_one()[0]["Plan"]
    finally:
        await driver.execute("DEALLOCATE generic_plan_probe")


def _literal(value: Any) -> str:
    """A SQL literal of a number, a string, None or a list of them."""
    if value is None:
        return "NULL"
    if isinstance(value, list):
        return f"ARRAY[{', '.join(map(_literal, value))}]"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)
