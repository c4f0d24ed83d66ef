"""The relay's claim on real PostgreSQL: what it leases, and what it costs behind a long backlog.

- It leases what the claim always leased (:data:`WALKING_CLAIM`, the single statement it replaces,
  is the specification): the first pending entry of each (kind, conversation) for the kinds that
  keep their order, every entry of the other kinds and of no conversation, nothing of a
  conversation whose channel is not ready but its channel, nothing leased, nothing not yet due, the
  kinds asked for, the earliest first.
- While another relay's claim holds its entries, a claim skips them (SKIP LOCKED) and takes the
  next ones, as the walking claim did.
- Behind a backlog of one conversation its cost does not grow with the backlog: counted as the rows
  PostgreSQL reads from ``outbox`` (``EXPLAIN ANALYZE``), not timed.

Each test runs in a transaction that is rolled back (but the one with two relays, which commits its
entries and deletes them afterwards): other tests' pending entries are set aside inside it, and
foreign keys are not checked (``session_replication_role``) so that a conversation needs no patient.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from integrations.relay.runner import TEXT_KINDS
from integrations.relay.statements import CLAIM, CLAIM_HEADS, claim, claim_parameters
from tests.support.outbox_claims import WALKING_CLAIM, outbox_rows_read

#: Stored kinds of each sort: ordered (posts, files, texts), unordered, and two no effect has (the
#: relay claims those too, and dead-letters them).
KINDS = ("send_message", "send_file", "send_sms", "ensure_channel", "invite_members", "post_sms_reply")
UNKNOWN_KINDS = ("aa_retired", "zz_retired")
#: The kind of the entries the two-relay test commits: no other test's entries are of it.
OWN_KIND = "zz_claim_test"


@pytest.fixture
async def session(database_url: str) -> AsyncIterator[AsyncSession]:
    """A session on a transaction rolled back at the end, with no other pending entry in sight."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            transaction = await conn.begin()
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


async def _conversation(session: AsyncSession, channel_state: str = "ready") -> int:
    conversation_id = await session.scalar(
        text(
            "INSERT INTO conversations (patient_id, title, channel_url, channel_state, organization_id,"
            " created_by) VALUES (0, 'claim', 'claim_' || md5(random()::text), :state, 0, 0) RETURNING id"
        ),
        {"state": channel_state},
    )
    assert isinstance(conversation_id, int)
    return conversation_id


async def _entries(
    session: AsyncSession,
    kind: str,
    conversation_id: int | None,
    count: int = 1,
    *,
    status: str = "pending",
    due: bool = True,
    lease: str | None = None,
) -> list[int]:
    """``count`` outbox entries, in id order; ``lease`` 'held' (still running) or 'expired'."""
    rows = await session.execute(
        text(
            "INSERT INTO outbox (kind, payload, conversation_id, status, next_attempt_at, lease_until)"
            " SELECT :kind, '{}'::jsonb, :conversation_id, :status,"
            "  now() + CASE WHEN :due THEN interval '-1 second' ELSE interval '1 hour' END,"
            "  CASE CAST(:lease AS text) WHEN 'held' THEN now() + interval '1 hour'"
            "   WHEN 'expired' THEN now() - interval '1 second' END"
            " FROM generate_series(1, :count) RETURNING id"
        ),
        {
            "kind": kind,
            "conversation_id": conversation_id,
            "status": status,
            "due": due,
            "lease": lease,
            "count": count,
        },
    )
    return sorted(rows.scalars())


async def _claimed(session: AsyncSession, parameters: dict[str, Any]) -> list[int]:
    """What :func:`claim` leases, then given back (a savepoint rolled back)."""
    async with session.begin_nested() as savepoint:
        ids = sorted(row.id for row in await claim(session, parameters))
        await savepoint.rollback()
    return ids


async def _specified(session: AsyncSession, parameters: dict[str, Any]) -> list[int]:
    """What :data:`WALKING_CLAIM` leases, then given back."""
    async with session.begin_nested() as savepoint:
        ids = sorted((await session.execute(WALKING_CLAIM, parameters)).scalars())
        await savepoint.rollback()
    return ids


async def test_the_claim_takes_each_conversations_first_entry_past_a_backlog_and_every_unordered_one(
    session: AsyncSession,
) -> None:
    busy, quiet = await _conversation(session), await _conversation(session)
    unready = await _conversation(session, "pending")
    # A backlog longer than the first statement's window, accepted first.
    backlog = await _entries(session, "send_message", busy, 300)
    busy_text, *_ = await _entries(session, "send_sms", busy, 2)
    quiet_post, *_ = await _entries(session, "send_message", quiet, 2)
    invites = await _entries(session, "invite_members", quiet, 2)
    channel, *_ = await _entries(session, "ensure_channel", unready)
    await _entries(session, "send_message", unready, 2)  # waits for the channel
    loose_texts = await _entries(session, "send_sms", None, 2)
    await _entries(session, "send_message", quiet, status="done")
    await _entries(session, "post_sms_reply", quiet, due=False)
    await _entries(session, "post_sms_reply", quiet, lease="held")
    expired, *_ = await _entries(session, "post_sms_reply", quiet, lease="expired")

    parameters = claim_parameters(lease=10, limit=20)
    claimed = await _claimed(session, parameters)

    assert claimed == sorted([backlog[0], busy_text, quiet_post, *invites, channel, *loose_texts, expired])
    assert claimed == await _specified(session, parameters)
    texts_only = claim_parameters(lease=10, limit=20, only=TEXT_KINDS)
    assert await _claimed(session, texts_only) == sorted([busy_text, *loose_texts])
    no_texts = claim_parameters(lease=10, limit=20, skip=TEXT_KINDS)
    assert await _claimed(session, no_texts) == sorted([backlog[0], quiet_post, *invites, channel, expired])


async def test_the_claim_leases_what_the_walking_claim_leased_in_random_backlogs(
    session: AsyncSession,
) -> None:
    kinds_asked: list[tuple[tuple[str, ...] | None, tuple[str, ...]]] = [
        (None, ()),
        (TEXT_KINDS, ()),
        (None, TEXT_KINDS),
        (("send_message", "ensure_channel", UNKNOWN_KINDS[1]), ("ensure_channel",)),
    ]
    compared = went_beyond_window = 0
    for seed in range(24):
        rnd = random.Random(seed)
        async with session.begin_nested() as layout:
            conversations = [
                await _conversation(session, rnd.choice(["ready", "ready", "pending", "failed"]))
                for _ in range(rnd.choice([1, 2, 6]))
            ]
            for _ in range(rnd.choice([5, 40, 150])):
                await _entries(
                    session,
                    rnd.choice(KINDS + UNKNOWN_KINDS),
                    None if rnd.random() < 0.15 else rnd.choice(conversations),
                    rnd.choice([1, 1, 1, 4]),
                    status=rnd.choice(["pending"] * 6 + ["done", "failed", "cancelled"]),
                    due=rnd.random() < 0.8,
                    lease=rnd.choice([None, None, None, "held", "expired"]),
                )
            for limit in (1, 7, 20):
                for only, skip in kinds_asked:
                    parameters = claim_parameters(lease=10, limit=limit, only=only, skip=skip)
                    claimed = await _claimed(session, parameters)
                    assert claimed == await _specified(session, parameters), (seed, limit, only, skip)
                    compared += 1
                    went_beyond_window += await _goes_beyond_window(session, parameters)
            await layout.rollback()
    # Both paths of the claim were compared, not only the first statement's window.
    assert compared == 24 * 3 * len(kinds_asked)
    assert went_beyond_window > compared // 10


async def _goes_beyond_window(session: AsyncSession, parameters: dict[str, Any]) -> bool:
    async with session.begin_nested() as savepoint:
        answered = (await session.execute(CLAIM, parameters)).all()
        await savepoint.rollback()
    return any(row.id is None for row in answered)


async def test_a_claim_skips_the_entries_another_relay_is_claiming_and_takes_the_next_ones(
    database_url: str,
) -> None:
    engine = create_async_engine(database_url)
    mine: list[int] = []
    conversations: list[int] = []
    try:
        async with AsyncSession(engine) as setup, setup.begin():
            await setup.execute(text("SET LOCAL session_replication_role = replica"))
            conversations = [await _conversation(setup) for _ in range(31)]
            # A backlog filling the first statement's window, then 30 conversations' single posts.
            mine += await _entries(setup, OWN_KIND, conversations[0], 120)
            for conversation in conversations[1:]:
                mine += await _entries(setup, OWN_KIND, conversation)
        # These entries are committed, on a database other tests have left pending entries in: the
        # claims take this test's kind alone, kept in order as a post's kind is.
        kept = claim_parameters(lease=10, limit=20, only=[OWN_KIND])
        parameters = {**kept, "in_order": [*kept["in_order"], OWN_KIND]}
        async with AsyncSession(engine) as first, first.begin():
            held = {row.id for row in await claim(first, parameters)}
            async with AsyncSession(engine) as second, second.begin():
                specified = set(await _specified(second, parameters))
                claimed = {row.id for row in await claim(second, parameters)}
                await second.rollback()
            await first.rollback()
        assert mine[0] in held
        assert claimed & set(mine[120:])  # past the window: what CLAIM_HEADS found
        assert not claimed & held
        assert claimed == specified
    finally:
        async with AsyncSession(engine) as cleanup, cleanup.begin():
            await cleanup.execute(text("SET LOCAL session_replication_role = replica"))
            await cleanup.execute(text("DELETE FROM outbox WHERE id = ANY(:ids)"), {"ids": mine})
            await cleanup.execute(
                text("DELETE FROM conversations WHERE id = ANY(:ids)"), {"ids": conversations}
            )
        await engine.dispose()


async def _read_by(session: AsyncSession, statement: TextClause, parameters: dict[str, Any]) -> int:
    explained = f"EXPLAIN (ANALYZE, FORMAT JSON) {statement.text}"
    plan = (await session.execute(text(explained), parameters)).scalar_one()
    return outbox_rows_read(plan[0]["Plan"])


@pytest.mark.parametrize("backlog", [2_000, 5_000])
async def test_a_claim_behind_one_conversations_backlog_reads_a_bounded_number_of_rows(
    session: AsyncSession, backlog: int
) -> None:
    conversation = await _conversation(session)
    head, *_ = await _entries(session, "send_message", conversation, backlog)
    elsewhere = await _entries(session, "send_message", await _conversation(session))
    await session.execute(text("ANALYZE outbox"))
    parameters = claim_parameters(lease=10, limit=20)

    assert await _claimed(session, parameters) == sorted([head, *elsewhere])
    async with session.begin_nested() as savepoint:
        # What claim() runs here: the window's statement (it leases the head), then the heads'.
        read = await _read_by(session, CLAIM, parameters)
        read += await _read_by(session, CLAIM_HEADS, {**parameters, "limit": 19})
        await savepoint.rollback()
    async with session.begin_nested() as savepoint:
        walked = await _read_by(session, WALKING_CLAIM, parameters)
        await savepoint.rollback()
    assert walked >= backlog  # the count sees a walk through the backlog
    # The window (4 batches) with a probe each, and a few index descents: not the backlog.
    assert read < 400, (read, walked)
