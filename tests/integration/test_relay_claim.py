"""The relay's claim on real PostgreSQL: what it leases, and what it costs behind a long backlog.

- It leases what the specification says (:func:`specified_claim`, a plain reading of the rule, in
  random backlogs): for the kinds that keep their order, a conversation's earliest pending entries
  as a contiguous prefix (an entry only with every earlier pending one of its kind and
  conversation), each conversation's first entry before any conversation's second; every entry of
  the other kinds and of no conversation; nothing of a conversation whose channel is not ready but
  its channel, nothing leased, nothing not yet due, the kinds asked for, the earliest first. Its
  heads are what the claim leased before it took more than one entry of a conversation
  (:data:`WALKING_CLAIM`).
- While another relay's claim holds entries, a claim skips them (SKIP LOCKED) and takes the next
  ones, but never an entry of a conversation behind one it skipped; and it never waits for them.
- Behind a backlog of one conversation its cost does not grow with the backlog: counted as the rows
  PostgreSQL reads from ``outbox`` (``EXPLAIN ANALYZE``), not timed.

Each test runs in a transaction that is rolled back (but those with another relay, which commit their
entries and delete them afterwards): other tests' pending entries are set aside inside it, and
foreign keys are not checked (``session_replication_role``) so that a conversation needs no patient.

Longer than 400 lines because the claim's rule, its specification and the backlogs it is compared in
are read together: split, a test would lose the layouts it is checked against.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from integrations.relay.runner import TEXT_KINDS
from integrations.relay.statements import (
    CLAIM,
    CLAIM_HEADS,
    CLAIM_LATER,
    CLAIM_RUN,
    SETTLE,
    claim,
    claim_parameters,
)
from tests.support.outbox_claims import (
    WALKING_CLAIM,
    outbox_rows_read,
    outbox_set_aside,
    seen,
    specified_claim,
)

#: Stored kinds of each sort: ordered (posts, files, texts), unordered, and two no effect has (the
#: relay claims those too, and dead-letters them).
KINDS = ("send_message", "send_file", "send_sms", "ensure_channel", "invite_members", "post_sms_reply")
UNKNOWN_KINDS = ("aa_retired", "zz_retired")
#: The kind of the entries the two-relay test commits: no other test's entries are of it.
OWN_KIND = "zz_claim_test"
#: The kinds of the entries the other tests with another relay commit, claimed as :func:`_own_parameters`
#: says: posts and texts kept in order, one kind that creates a channel, one that goes alone.
OWN_POST, OWN_TEXT = "zz_claim_post", "zz_claim_text"
OWN_LOOSE, OWN_CHANNEL = "zz_claim_loose", "zz_claim_channel"
OWN_KINDS = (OWN_POST, OWN_TEXT, OWN_LOOSE, OWN_CHANNEL)
#: A claim never waits for another relay's locks (it skips them): one that did fails, not hangs.
NEVER_WAITS = {"server_settings": {"lock_timeout": "10000"}}

#: (batch size, run) of the random-backlog comparisons: a batch of one, the default run, and runs as
#: long as the batch.
RUNS = ((1, CLAIM_RUN), (7, 20), (20, CLAIM_RUN))


@pytest.fixture
async def session(database_url: str) -> AsyncIterator[AsyncSession]:
    """A session on a transaction rolled back at the end, with no other pending entry in sight."""
    async with outbox_set_aside(database_url) as session:
        yield session


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


async def _specified(
    session: AsyncSession, parameters: dict[str, Any], locked: Sequence[int] = ()
) -> list[int]:
    """What :func:`specified_claim` says a claim made now in ``session``'s transaction leases."""
    return specified_claim(await seen(session), parameters, locked=locked)


async def _walked(session: AsyncSession, parameters: dict[str, Any]) -> list[int]:
    """What :data:`WALKING_CLAIM` leases, then given back."""
    async with session.begin_nested() as savepoint:
        ids = sorted((await session.execute(WALKING_CLAIM, parameters)).scalars())
        await savepoint.rollback()
    return ids


async def test_the_claim_takes_each_conversations_first_entries_past_a_backlog_and_every_unordered_one(
    session: AsyncSession,
) -> None:
    busy, quiet = await _conversation(session), await _conversation(session)
    unready = await _conversation(session, "pending")
    # A backlog longer than the first statement's window, accepted first.
    backlog = await _entries(session, "send_message", busy, 300)
    busy_texts = await _entries(session, "send_sms", busy, 2)
    quiet_posts = await _entries(session, "send_message", quiet, 2)
    invites = await _entries(session, "invite_members", quiet, 2)
    channel, *_ = await _entries(session, "ensure_channel", unready)
    await _entries(session, "send_message", unready, 2)  # waits for the channel
    loose_texts = await _entries(session, "send_sms", None, 2)
    await _entries(session, "send_message", quiet, status="done")
    await _entries(session, "post_sms_reply", quiet, due=False)
    await _entries(session, "post_sms_reply", quiet, lease="held")
    expired, *_ = await _entries(session, "post_sms_reply", quiet, lease="expired")
    heads = [backlog[0], busy_texts[0], quiet_posts[0], *invites, channel, *loose_texts, expired]

    # With runs as long as a batch (run=20), to show the round-robin; the default run is below.
    parameters = claim_parameters(lease=10, limit=20, run=20)
    claimed = await _claimed(session, parameters)

    # The 9 heads, then round-robin: each conversation's second entry, then the backlog's next ones.
    assert claimed == sorted([*heads, backlog[1], busy_texts[1], quiet_posts[1], *backlog[2:10]])
    assert claimed == await _specified(session, parameters)
    assert sorted(heads) == await _walked(session, parameters)
    texts_only = claim_parameters(lease=10, limit=20, only=TEXT_KINDS, run=20)
    assert await _claimed(session, texts_only) == sorted([*busy_texts, *loose_texts])
    no_texts = claim_parameters(lease=10, limit=20, skip=TEXT_KINDS, run=20)
    assert await _claimed(session, no_texts) == sorted(
        [backlog[0], *quiet_posts, *invites, channel, expired, *backlog[1:14]]
    )
    # One conversation alone: the whole batch.
    alone = claim_parameters(lease=10, limit=20, only=["send_message"], run=20)
    assert await _claimed(session, alone) == sorted([*quiet_posts, *backlog[:18]])
    # By default a conversation gets at most CLAIM_RUN entries behind its head in one claim: the
    # relay claims again only once the batch has gone out, one post of a conversation at a time.
    capped = claim_parameters(lease=10, limit=20, only=["send_message"])
    assert await _claimed(session, capped) == sorted([*quiet_posts, *backlog[: 1 + CLAIM_RUN]])
    assert await _claimed(session, capped) == await _specified(session, capped)


async def test_a_conversations_entries_are_claimed_only_up_to_the_first_that_may_not_go(
    session: AsyncSession,
) -> None:
    parameters = claim_parameters(lease=10, limit=20, only=["send_message"])
    conversations = [await _conversation(session) for _ in range(4)]
    first = await _entries(session, "send_message", conversations[0], 2)
    await _entries(session, "send_message", conversations[0], due=False)  # backing off
    await _entries(session, "send_message", conversations[0], 2)
    await _entries(session, "send_message", conversations[1], lease="held")  # another relay's
    await _entries(session, "send_message", conversations[1], 3)
    await _entries(session, "send_message", conversations[2], due=False)
    await _entries(session, "send_message", conversations[2], 3)
    third = await _entries(session, "send_message", conversations[3], 2)
    await _entries(session, "send_message", conversations[3], status="done")  # not pending: no gap
    third += await _entries(session, "send_message", conversations[3], 2)

    assert await _claimed(session, parameters) == sorted([*first, *third])
    assert await _claimed(session, parameters) == await _specified(session, parameters)


async def test_the_claim_leases_what_the_specification_says_in_random_backlogs(
    session: AsyncSession,
) -> None:
    kinds_asked: list[tuple[tuple[str, ...] | None, tuple[str, ...]]] = [
        (None, ()),
        (TEXT_KINDS, ()),
        (None, TEXT_KINDS),
        (("send_message", "ensure_channel", UNKNOWN_KINDS[1]), ("ensure_channel",)),
    ]
    compared = went_beyond_window = took_later = 0
    for seed in range(24):
        rnd = random.Random(seed)
        async with session.begin_nested() as layout:
            conversations = [await _conversation(session)] + [
                await _conversation(session, rnd.choice(["ready", "ready", "pending", "failed"]))
                for _ in range(rnd.choice([0, 1, 5]))
            ]
            # Every kind, or mostly posts: few queues, each longer.
            palette = rnd.choice([KINDS + UNKNOWN_KINDS, ("send_message",) * 5 + KINDS[2:4]])
            entries = rnd.choice([5, 40, 150])
            calm = rnd.randrange(entries)  # when a ready conversation's posts and texts queue up
            for n in range(entries):
                if n == calm:
                    await _entries(session, "send_message", conversations[0], 12)
                    await _entries(session, "send_sms", conversations[0], 6)
                await _entries(
                    session,
                    rnd.choice(palette),
                    None if rnd.random() < 0.15 else rnd.choice(conversations),
                    rnd.choice([1, 1, 1, 4]),
                    status=rnd.choice(["pending"] * 6 + ["done", "failed", "cancelled"]),
                    due=rnd.random() < 0.8,
                    lease=rnd.choice([None, None, None, "held", "expired"]),
                )
            rows = await seen(session)
            for limit, run in RUNS:
                for only, skip in kinds_asked:
                    parameters = claim_parameters(lease=10, limit=limit, only=only, skip=skip, run=run)
                    claimed = await _claimed(session, parameters)
                    assert claimed == specified_claim(rows, parameters), (seed, limit, only, skip)
                    heads = specified_claim(rows, parameters, later=False)
                    assert heads == await _walked(session, parameters), (seed, limit, only, skip)
                    compared += 1
                    went_beyond_window += await _goes_beyond_window(session, parameters)
                    took_later += len(claimed) > len(heads)
            await layout.rollback()
    # Every path of the claim was compared, not only the first statement's window.
    assert compared == 24 * len(RUNS) * len(kinds_asked)
    assert went_beyond_window > compared // 10, went_beyond_window
    assert took_later > compared // 5, took_later


async def _goes_beyond_window(session: AsyncSession, parameters: dict[str, Any]) -> bool:
    async with session.begin_nested() as savepoint:
        answered = (await session.execute(CLAIM, parameters)).all()
        await savepoint.rollback()
    return any(row.id is None for row in answered)


@dataclass
class Committed:
    """What a test with another relay makes, to be committed (:meth:`commit`) and deleted."""

    session: AsyncSession
    entries: list[int] = field(default_factory=list)
    conversations: list[int] = field(default_factory=list)

    async def conversation(self, channel_state: str = "ready") -> int:
        made = await _conversation(self.session, channel_state)
        self.conversations.append(made)
        return made

    async def add(self, kind: str, conversation_id: int | None, count: int = 1, **row: Any) -> list[int]:
        made = await _entries(self.session, kind, conversation_id, count, **row)
        self.entries += made
        return made

    async def commit(self) -> None:
        await self.session.commit()


@contextlib.asynccontextmanager
async def _committed(engine: AsyncEngine) -> AsyncIterator[Committed]:
    """Entries and conversations made in ``Committed.session``'s transaction are committed when the
    setup is done (another relay's claim must see them to lock them), and deleted at the end."""
    made = Committed(AsyncSession(engine))
    try:
        await made.session.begin()
        await made.session.execute(text("SET LOCAL session_replication_role = replica"))
        yield made
    finally:
        await made.session.close()
        async with AsyncSession(engine) as cleanup, cleanup.begin():
            await cleanup.execute(text("SET LOCAL session_replication_role = replica"))
            await cleanup.execute(text("DELETE FROM outbox WHERE id = ANY(:ids)"), {"ids": made.entries})
            await cleanup.execute(
                text("DELETE FROM conversations WHERE id = ANY(:ids)"), {"ids": made.conversations}
            )


@contextlib.asynccontextmanager
async def _claiming(engine: AsyncEngine, ids: Sequence[int]) -> AsyncIterator[None]:
    """Another relay in the middle of its claim: it holds these rows locked until the block ends."""
    async with AsyncSession(engine) as other, other.begin():
        await other.execute(text("SELECT id FROM outbox WHERE id = ANY(:ids) FOR UPDATE"), {"ids": list(ids)})
        yield
        await other.rollback()


def _own_parameters(
    limit: int, only: Sequence[str] = (), skip: Sequence[str] = (), run: int = CLAIM_RUN
) -> dict[str, Any]:
    """A claim of this test's own kinds alone (other tests leave entries of the real kinds pending,
    committed): posts and texts kept in order, one kind creates a channel, one goes alone."""
    parameters = claim_parameters(lease=10, limit=limit, only=only or OWN_KINDS, skip=skip, run=run)
    return {**parameters, "in_order": [OWN_POST, OWN_TEXT], "creates_channel": OWN_CHANNEL}


async def test_a_claim_never_takes_an_entry_behind_one_another_relay_is_claiming(database_url: str) -> None:
    engine = create_async_engine(database_url, connect_args=NEVER_WAITS)
    try:
        async with _committed(engine) as made:
            middle, head, free = [await made.conversation() for _ in range(3)]
            held_middle = await made.add(OWN_POST, middle, 5)
            held_head = await made.add(OWN_POST, head, 3)
            unheld = await made.add(OWN_POST, free, 3)
            await made.commit()
            locked = [held_middle[2], held_head[0]]
            parameters = _own_parameters(limit=20)
            async with _claiming(engine, locked), AsyncSession(engine) as session, session.begin():
                claimed = await _claimed(session, parameters)
                assert claimed == sorted([*held_middle[:2], *unheld])
                assert claimed == await _specified(session, parameters, locked)
    finally:
        await engine.dispose()


async def test_the_claim_leases_what_the_specification_says_while_another_relay_is_claiming(
    database_url: str,
) -> None:
    kinds_asked: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
        (OWN_KINDS, ()),
        ((OWN_POST, OWN_LOOSE, OWN_CHANNEL), (OWN_CHANNEL,)),
    ]
    engine = create_async_engine(database_url, connect_args=NEVER_WAITS)
    compared = took_later = locks_mattered = 0
    try:
        for seed in range(12):
            rnd = random.Random(seed)
            async with _committed(engine) as made:
                conversations = [await made.conversation()] + [
                    await made.conversation(rnd.choice(["ready", "ready", "ready", "pending"]))
                    for _ in range(rnd.choice([0, 1, 5]))
                ]
                entries = rnd.choice([10, 40, 100])
                calm = rnd.randrange(entries)  # when a ready conversation's posts and texts queue up
                for n in range(entries):
                    if n == calm:
                        await made.add(OWN_POST, conversations[0], 12)
                        await made.add(OWN_TEXT, conversations[0], 6)
                    await made.add(
                        rnd.choice(OWN_KINDS),
                        None if rnd.random() < 0.1 else rnd.choice(conversations),
                        rnd.choice([1, 1, 1, 4]),
                        status=rnd.choice(["pending"] * 8 + ["done", "cancelled"]),
                        due=rnd.random() < 0.9,
                        lease=rnd.choice([None] * 8 + ["held", "expired"]),
                    )
                await made.commit()
                # Heads and entries in the middle of a conversation's queue alike.
                locked = rnd.sample(made.entries, len(made.entries) // 6)
                async with _claiming(engine, locked), AsyncSession(engine) as session, session.begin():
                    rows = await seen(session)
                    for limit, run in RUNS:
                        for only, skip in kinds_asked:
                            parameters = _own_parameters(limit, only, skip, run)
                            claimed = await _claimed(session, parameters)
                            specified = specified_claim(rows, parameters, locked=locked)
                            assert claimed == specified, (seed, limit, only, skip)
                            heads = specified_claim(rows, parameters, locked=locked, later=False)
                            compared += 1
                            took_later += len(claimed) > len(heads)
                            locks_mattered += specified != specified_claim(rows, parameters)
    finally:
        await engine.dispose()
    assert compared == 12 * len(RUNS) * len(kinds_asked)
    assert took_later > compared // 10
    assert locks_mattered > compared // 4


async def test_a_claim_skips_the_entries_another_relay_is_claiming_and_takes_the_next_ones(
    database_url: str,
) -> None:
    engine = create_async_engine(database_url, connect_args=NEVER_WAITS)
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
                specified = set(await _specified(second, parameters, sorted(held)))
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
    queue = await _entries(session, "send_message", conversation, backlog)
    elsewhere = await _entries(session, "send_message", await _conversation(session))
    await session.execute(text("ANALYZE outbox"))
    parameters = claim_parameters(lease=10, limit=20, run=20)  # the longest run a batch allows

    assert await _claimed(session, parameters) == sorted([*queue[:19], *elsewhere])
    async with session.begin_nested() as savepoint:
        # What claim() runs here: the window's statement (it leases the head), then the heads' (the
        # other conversation's), then the one taking the queue behind the head.
        read = await _read_by(session, CLAIM, parameters)
        read += await _read_by(session, CLAIM_HEADS, {**parameters, "limit": 19})
        behind = {**parameters, "limit": 18, "heads": [queue[0], *elsewhere]}
        read += await _read_by(session, CLAIM_LATER, behind)
        await savepoint.rollback()
    async with session.begin_nested() as savepoint:
        walked = await _read_by(session, WALKING_CLAIM, parameters)
        await savepoint.rollback()
    assert walked >= backlog  # the count sees a walk through the backlog
    # The window (4 batches) with a probe each, a few index descents, and the batch's worth of the
    # queue behind the head: not the backlog.
    assert read < 400, (read, walked)


async def _settled(session: AsyncSession, entry: int, attempts: int) -> list[int]:
    """What :data:`SETTLE` settles of a relay's "done" for ``entry`` under the claim that counted
    ``attempts``."""
    parameters = {
        "ids": [entry],
        "attempts": [attempts],
        "outcomes": ["done"],
        "reasons": [None],
        "delays": [0.0],
    }
    return list((await session.execute(SETTLE, parameters)).scalars())


async def test_a_relay_whose_claim_was_overtaken_settles_nothing_even_while_the_entry_is_pending(
    session: AsyncSession,
) -> None:
    """A settle touches only what its relay still holds: a relay whose lease ran out, and whose entry
    another relay has claimed since (one attempt more), settles nothing of it and audits nothing,
    while the other relay is still delivering it; the other relay's settle then finishes it once."""
    [entry] = await _entries(session, "send_message", await _conversation(session))
    parameters = claim_parameters(lease=10, limit=20)
    assert [(r.id, r.attempts) for r in await claim(session, parameters)] == [(entry, 1)]
    await session.execute(  # the first relay's lease runs out (it is still posting, say)
        text("UPDATE outbox SET lease_until = now() - interval '1 second' WHERE id = :id"), {"id": entry}
    )
    assert [(r.id, r.attempts) for r in await claim(session, parameters)] == [(entry, 2)]

    async def state() -> tuple[Any, ...]:
        row = (
            await session.execute(
                text(
                    "SELECT status, attempts, lease_until > now(),"
                    " (SELECT count(*) FROM audit_events"
                    "  WHERE event = 'delivery' AND details ->> 'outbox_id' = :key)"
                    " FROM outbox WHERE id = :id"
                ),
                {"id": entry, "key": str(entry)},
            )
        ).one()
        return tuple(row)

    # Triggers on again (the fixture turns them off to make conversations of no patient): an audit
    # record takes its id from one.
    await session.execute(text("SET LOCAL session_replication_role = origin"))
    assert await _settled(session, entry, attempts=1) == []
    assert await state() == ("pending", 2, True, 0), "the second relay's claim stands"
    assert await _settled(session, entry, attempts=2) == [entry]
    assert await state() == ("done", 2, None, 1)
