"""The relay's statements keep their cost when PostgreSQL's statistics are out of date.

After an outage thousands of entries are pending while the statistics, taken before, say almost
none are. A prepared statement's generic plan is made from those statistics and kept, and a plan
that walks every pending entry looks as cheap as one that reads only its own. These tests take the
statistics on a quiet outbox, let a backlog grow, and count the rows the generic plan of each
statement reads from ``outbox`` (``EXPLAIN ANALYZE``; a count, not a time): a settle, a release and
a renewal read their own entries only, through the primary key, however long the backlog; a
recall's cancel, and the relay's look at a recalled message's post, read its message's entries,
through their index.

The claims cannot: which of a conversation's entries they lease is read off the pending entries
themselves, through the partial indexes of them, and with statistics that know of no backlog their
generic plans walk it (3,000 rows and more for each of the three statements, measured). With
statistics that know it their generic plans are bounded, and migration 0029 has autovacuum take
them after every 1,000 changes to the outbox (new statistics make PostgreSQL plan a prepared
statement again: the PREPARE documentation).

Each test runs in a transaction that is rolled back (the statistics taken in it too), with other
tests' pending entries set aside and foreign keys not checked, as in test_relay_claim.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from integrations.db.recalls import CANCEL, cancel_parameters
from integrations.effects.recalls import RECALLED, recalled_parameters
from integrations.relay.statements import (
    CLAIM,
    CLAIM_HEADS,
    CLAIM_LATER,
    RELEASE,
    RENEW,
    SETTLE,
    claim_parameters,
)
from tests.support.outbox_claims import generic_plan, outbox_rows_read, outbox_set_aside

BACKLOG = 3_000


@pytest.fixture
async def session(database_url: str) -> AsyncIterator[AsyncSession]:
    """A session on a transaction rolled back at the end, with no other pending entry in sight."""
    async with outbox_set_aside(database_url) as session:
        yield session


async def _entries(
    session: AsyncSession, count: int, status: str, *, leased: bool = True, conversation_id: int = 1
) -> list[int]:
    """``count`` chat posts of one conversation, leased (claimed, attempt 1) when pending and ``leased``."""
    rows = await session.execute(
        text(
            "INSERT INTO outbox (kind, payload, conversation_id, status, attempts, lease_until)"
            " SELECT 'send_message', '{}'::jsonb, :conversation_id, CAST(:status AS text), 1,"
            "  CASE WHEN CAST(:status AS text) = 'pending' AND :leased THEN now() + interval '1 hour' END"
            " FROM generate_series(1, :count) RETURNING id"
        ),
        {"status": status, "count": count, "leased": leased, "conversation_id": conversation_id},
    )
    return [r.id for r in rows]


async def _backlog_after_statistics(session: AsyncSession) -> list[int]:
    """A conversation whose channel is ready, 2,000 done entries, the statistics taken, and then a
    backlog of ``BACKLOG`` pending entries (none leased) that the statistics do not know of."""
    conversation_id = await session.scalar(
        text(
            "INSERT INTO conversations (patient_id, title, channel_url, channel_state, organization_id,"
            " created_by) VALUES (0, 'plans', 'plans_' || md5(random()::text), 'ready', 0, 0) RETURNING id"
        )
    )
    assert isinstance(conversation_id, int)
    await _entries(session, 2_000, "done", conversation_id=conversation_id)
    await session.execute(text("ANALYZE outbox"))  # statistics of a quiet outbox
    return await _entries(session, BACKLOG, "pending", leased=False, conversation_id=conversation_id)


def _parameters(name: str, held: list[int]) -> dict[str, Any]:
    ids = {"ids": held, "attempts": [1] * len(held)}
    if name == "settle":
        n = len(held)
        # put back for a retry: what a settle does after an outage (and, with triggers off in
        # these tests, one writing no audit record, whose id a trigger assigns)
        return {**ids, "outcomes": ["retry"] * n, "reasons": ["chat_unavailable"] * n, "delays": [1.0] * n}
    return {**ids, "lease": 10.0} if name == "renew" else ids


@pytest.mark.parametrize(("name", "statement"), [("settle", SETTLE), ("release", RELEASE), ("renew", RENEW)])
async def test_a_statement_on_held_entries_reads_them_alone_behind_a_backlog_the_statistics_missed(
    session: AsyncSession, name: str, statement: TextClause
) -> None:
    await _entries(session, 2_000, "done")  # the outbox's history
    held = await _entries(session, 3, "pending")
    await session.execute(text("ANALYZE outbox"))  # the statistics: three of ~2,000 pending
    await _entries(session, BACKLOG, "pending")  # then an outage

    read = outbox_rows_read(await generic_plan(session, statement, _parameters(name, held)))

    # Each held entry is read once to be found and, for a settle and a renewal, once more as
    # updated (the renewal's UPDATE finds it by id again); walking the backlog would be thousands.
    assert read <= 3 * len(held)


async def test_the_outbox_is_analyzed_after_a_fixed_number_of_changes_whatever_its_size(
    session: AsyncSession,
) -> None:
    """The claims' plans are bounded only with statistics that know the backlog (test_relay_claim.py
    takes them first); autovacuum takes them after 1,000 changes, not after a tenth of the table."""
    options = await session.scalar(text("SELECT reloptions FROM pg_class WHERE oid = 'outbox'::regclass"))

    assert set(options) >= {"autovacuum_analyze_scale_factor=0", "autovacuum_analyze_threshold=1000"}


async def test_the_claims_generic_plans_are_bounded_once_the_statistics_know_the_backlog(
    session: AsyncSession,
) -> None:
    queue = await _backlog_after_statistics(session)
    await session.execute(text("ANALYZE outbox"))  # what autovacuum does after 1,000 changes
    parameters = claim_parameters(lease=10, limit=20)

    read = {}
    for name, statement, extra in (
        ("window", CLAIM, {}),
        ("heads", CLAIM_HEADS, {}),
        ("later", CLAIM_LATER, {"heads": [queue[0]]}),
    ):
        async with session.begin_nested() as savepoint:
            read[name] = outbox_rows_read(await generic_plan(session, statement, {**parameters, **extra}))
            await savepoint.rollback()

    # the window (4 batches) and what it leases; one entry per (kind, conversation); the run behind a head
    assert read["window"] <= 4 * 20 + 10
    assert read["heads"] <= 10
    assert read["later"] <= 20


async def test_a_recall_reads_its_messages_entries_alone_behind_a_backlog_the_statistics_missed(
    session: AsyncSession,
) -> None:
    queue = await _backlog_after_statistics(session)
    recalled = 777_777_777  # a message of the backlog: its post is pending, no relay holds it
    await session.execute(
        text("UPDATE outbox SET message_id = :message WHERE id = :id"), {"message": recalled, "id": queue[-1]}
    )

    async with session.begin_nested() as savepoint:
        plan = await generic_plan(session, CANCEL, cancel_parameters(recalled))
        await savepoint.rollback()

    assert outbox_rows_read(plan) <= 3  # found by message id, then cancelled; not the backlog


async def test_the_relays_look_at_a_recalled_post_reads_its_messages_entries_alone(
    session: AsyncSession,
) -> None:
    queue = await _backlog_after_statistics(session)
    conversation_id = await session.scalar(
        text("SELECT conversation_id FROM outbox WHERE id = :id"), {"id": queue[0]}
    )
    sender = await session.scalar(
        text(
            "INSERT INTO users (organization_id, email, password_hash, first_name, last_name, role,"
            " chat_user_id) VALUES (0, 'plans_' || md5(random()::text), '-', 'A', 'B', 'care_team_member',"
            " 'plans_' || md5(random()::text)) RETURNING id"
        )
    )
    recalled = await session.scalar(
        text("INSERT INTO messages (conversation_id, sender_id, body) VALUES (:c, :s, '') RETURNING id"),
        {"c": conversation_id, "s": sender},
    )
    await session.execute(
        text("UPDATE outbox SET message_id = :message WHERE id = :id"), {"message": recalled, "id": queue[-1]}
    )
    plan = await generic_plan(session, RECALLED, recalled_parameters(recalled))

    # the message's entries, found by message id: whether its post is pending, whether it was a file
    assert outbox_rows_read(plan) <= 3
