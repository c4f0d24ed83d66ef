"""The one SQL spelling of "member X has not read message M" (integrations/db/reads.py
``unread_sql``, used by unread counts and the escalation of urgent messages) answers the negation
of ``engine.model.has_read``, on real PostgreSQL, for marks before, at and after the message, no
mark, a mark in another conversation only, and the sender."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from engine.model import ReadMark, RiskLevel, has_read
from engine.ports.patients import NewPatient
from integrations.db.reads import unread_sql
from integrations.db.uow import SqlUnitOfWork
from tests.support.worlds import clinic

AT = datetime(2031, 6, 1, 8, tzinfo=UTC)


async def test_the_sql_and_the_python_rule_agree_on_who_has_read_each_message(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with SqlUnitOfWork(sessions) as u:
        org, people = await clinic(u, 5)
        ids = [p.id for p in people]
        patient = await u.patients.add(NewPatient(org.id, "Ann", "Lee", None, RiskLevel.LOW, ids[0]))
        conversations = [
            await u.conversations.add(
                patient_id=patient.id,
                title="Chat",
                organization_id=org.id,
                created_by=ids[0],
                member_ids=ids,
                external=[],
            )
            for _ in range(2)
        ]
        first, second = conversations
        # Six messages in the first conversation, then two in the second (higher ids), from
        # several senders.
        messages = []
        for n, (conversation, sender) in enumerate(
            [(first, 0), (first, 1), (first, 0), (first, 4), (first, 0), (first, 1), (second, 0), (second, 1)]
        ):
            posted = await u.messages.add_posted(conversation.id, ids[sender], "Hello", 100 + n, 1_000 + n)
            assert posted is not None
            messages.append(posted)
        # Marks in the first conversation before (the first message's sender, at it), at and after
        # the fourth message; the fourth person has none, the fifth (who sent the fourth) a mark in
        # the second conversation only, past every message of the first.
        for who, up_to in [(0, 0), (1, 3), (2, 5)]:
            await u.reads.mark(first.id, ids[who], messages[up_to].id, AT, "api")
        await u.reads.mark(second.id, ids[4], messages[7].id, AT, "api")
        marks: dict[tuple[int, int], ReadMark] = {
            (c.id, user): mark
            for c in conversations
            for user, mark in (await u.reads.of_conversation(c.id)).items()
        }
        counts = {user: await u.reads.unread_counts(user, [first.id, second.id]) for user in ids}
        await u.commit()

    query = text(
        "SELECT m.id, p.user_id,"
        f" {unread_sql('m.id', 'm.sender_id', 'm.conversation_id', 'p.user_id')} AS unread"
        " FROM messages m CROSS JOIN unnest(CAST(:users AS integer[])) AS p(user_id)"
        " WHERE m.id = ANY(CAST(:messages AS integer[]))"
    )
    async with sessions() as session:
        rows = await session.execute(query, {"users": ids, "messages": [m.id for m in messages]})
        from_sql = {(r.id, r.user_id): r.unread for r in rows}
    from_python = {
        (m.id, user): not has_read(m, user, marks.get((m.conversation_id, user)))
        for m in messages
        for user in ids
    }

    assert from_sql == from_python
    fourth = messages[3]
    assert [from_python[(fourth.id, user)] for user in ids] == [True, False, False, True, False]
    assert not from_python[(messages[2].id, ids[0])]  # its sender, whose mark is before it
    assert from_python[(messages[0].id, ids[4])]  # a mark in another conversation counts for nothing
    # The unread counts (the same spelling, counted per conversation) are the Python rule's too.
    for user in ids:
        expected = {
            c.id: sum(1 for m in messages if m.conversation_id == c.id and from_python[(m.id, user)])
            for c in conversations
        }
        assert counts[user] == {c: n for c, n in expected.items() if n}
